"""FederationClient: one instance's membership of one federation, as a facade.

Why it looks like this (DESIGN.md section 2): nothing leaves the machine but slots, confidences,
phrase tokens with ciphertexts, statement ciphertexts (balanced/open only) and secure-aggregation
messages. The federation key lives only in ``membership.json`` (0600). Contributions wait in the
local outbox, encrypted for the round current when they are sent. The privacy ledger is checked
before anything is queued and charged just before the masked input of a round is posted (the only
moment the instance's data enters a release). The pieces: ``CoordinatorAPI`` (signed HTTP),
``submission`` (what is sent), ``RoundParticipant`` + ``run_round`` (secure aggregation),
``MembershipFile``, ``Outbox``, ``PatternCache``, ``FederatedQuery``, ``AutoSync``.

State in ``<data_dir>/federation/``: ``identity.key``, ``membership.json``, ``ledger.db``,
``outbox.db``, ``cache.db`` (all 0600).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import Invite
from continuum_mcp.crypto.identity import Identity, b64encode
from continuum_mcp.errors import (BadInvite, Conflict, ContinuumError, CryptoError, InvalidInput,
                                  PrivacyBudgetExceeded, VerificationRefused)
from continuum_mcp.federation.api import TRANSIENT_ERRORS, CoordinatorAPI
from continuum_mcp.federation.client._autosync import AutoSync
from continuum_mcp.federation.client._cache import PatternCache
from continuum_mcp.federation.client._membership import MembershipFile, cipher_of
from continuum_mcp.federation.client._models import (
    AutoSyncSettings, ContributionResult, DeletionResult, DownloadResult, FederatedPattern, FederationStatus,
    JoinResult, LeaveResult, Membership, SyncResult, VerifyResult, VoteResult)
from continuum_mcp.federation.client._query import FederatedQuery
from continuum_mcp.federation.client._rounds import run_round
from continuum_mcp.federation.client._outbox import Outbox
from continuum_mcp.federation.participant import RoundExpectations, RoundParticipant
from continuum_mcp.federation.protocol import CreditBalance, DeletionReceipt, JoinRequest, LevelName, ModeName
from continuum_mcp.federation.submission import ContributionPlan, pattern_text, plan_contribution, secagg_input
from continuum_mcp.memory.store import MemoryStore
from continuum_mcp.privacy.codebook import Codebook
from continuum_mcp.privacy.generalize import Generalizer, is_private
from continuum_mcp.privacy.ledger import PrivacyLedger
from continuum_mcp.privacy.modes import PrivacyMode, PrivacyPolicy, default_policy
from continuum_mcp.privacy.scrub import Scrubber
from continuum_mcp.secagg import SecAggClient, SecAggParams

logger = logging.getLogger(__name__)

FEDERATION_DIR = "federation"
MODE_ORDER: dict[str, int] = {"high": 0, "balanced": 1, "open": 2}
#: a released pattern counts as supported by this instance's memory (``verify``) when a
#: non-private memory has cosine similarity of at least this to the pattern's text.
VERIFY_THRESHOLD = 0.7


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class FederationClient:
    """One instance's membership of one federation."""

    def __init__(self, store: MemoryStore, settings: Settings, *, http: httpx.Client | None = None,
                 clock: Callable[[], datetime] = _utc_now, policy: PrivacyPolicy | None = None,
                 codebook: Codebook | None = None, timeout_seconds: float = 10.0, max_retries: int = 4,
                 backoff_seconds: float = 0.25, poll_seconds: float = 0.2) -> None:
        self.store, self.settings = store, settings
        self.dir = Path(settings.data_dir) / FEDERATION_DIR
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        self.identity = Identity.load_or_create(self.dir / "identity.key")
        self.policy = policy or default_policy()
        self._codebook, self._clock, self._poll = codebook, clock, poll_seconds
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=httpx.Timeout(timeout_seconds, connect=min(5.0, timeout_seconds)))
        self._api_opts: dict[str, Any] = dict(max_retries=max_retries, backoff_seconds=backoff_seconds)
        self._membership = MembershipFile(self.dir)
        self._outbox = Outbox(self.dir / "outbox.db")
        self._cache = PatternCache(self.dir / "cache.db")
        self._generalizer: Generalizer | None = None
        self._secagg: dict[str, SecAggClient] = {}  # session id -> this attempt's secagg state
        self._sync_lock = threading.Lock()  # one contribute/sync at a time
        self._closing = threading.Event()  # set by close(): a waiting sync stops promptly
        self._auto = AutoSync(self.auto_sync_once, self._auto_interval)

    # ----- plumbing ------------------------------------------------------------------------
    @property
    def instance_id(self) -> str:
        return self.identity.instance_id

    @property
    def codebook(self) -> Codebook:
        if self._codebook is None:
            self._codebook = Codebook.load("v0")
        return self._codebook

    @property
    def generalizer(self) -> Generalizer:
        with self._membership.lock:
            if self._generalizer is None:
                self._generalizer = Generalizer(self.store.embedder, Scrubber(),
                                                max_phrases=self.policy.max_phrases_per_pattern)
            return self._generalizer

    def close(self) -> None:
        self._closing.set()
        self.disable_auto_sync(persist=False)
        self._outbox.close()
        self._cache.close()
        if self._own_http:
            self._http.close()

    def __enter__(self) -> FederationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def membership(self) -> Membership | None:
        return self._membership.load()

    def api(self, m: Membership | None = None, *, url: str | None = None) -> CoordinatorAPI:
        """The signed API client of the member's coordinator (or of ``url``), over this client's httpx."""
        return CoordinatorAPI(url or (m or self._membership.require()).coordinator_url, self.identity,
                              http=self._http, **self._api_opts)

    def _mode(self, m: Membership) -> PrivacyMode:
        return self.policy.mode(m.federation.privacy_mode)

    def ledger(self, m: Membership | None = None) -> PrivacyLedger:
        """A new handle on the privacy ledger (close it; ``with`` works), with the budget of the
        federation's mode, the mode every round spends under. A handle per use because SQLite
        connections belong to one thread and the client runs in MCP workers and auto-sync."""
        m = m or self._membership.require()
        mode = self._mode(m)
        return PrivacyLedger(self.dir / "ledger.db", identity=self.instance_id, budget_epsilon=mode.budget_epsilon,
                             delta=mode.delta, window=timedelta(days=mode.window_days), clock=self._clock)

    def _query(self, m: Membership) -> FederatedQuery:
        return FederatedQuery(self.api(m), self._cache, cipher_of(m), self.store.embedder, self.codebook,
                              m.federation.min_contributors)

    # ----- join ------------------------------------------------------------------------------
    def join(self, invite: str, contribution_level: LevelName = "standard", privacy_mode: ModeName = "high") -> JoinResult:
        """Join with an invite; only its public part goes to the coordinator, the key stays here."""
        self.policy.level(contribution_level)
        self.policy.mode(privacy_mode)
        inv = Invite.parse(invite)
        existing = self.membership()
        if existing is not None and existing.federation_id != inv.federation_id:
            raise Conflict(f"already a member of federation {existing.federation_id}; leave it first")
        api, cb = self.api(url=inv.coordinator_url), self.codebook
        info = api.federation()
        if info.federation_id != inv.federation_id:
            raise BadInvite(f"the coordinator serves federation {info.federation_id}, the invite is for "
                            f"{inv.federation_id}")
        if MODE_ORDER[info.privacy_mode] > MODE_ORDER[privacy_mode]:
            raise InvalidInput(f"this federation releases in {info.privacy_mode} mode; your mode {privacy_mode} forbids it")
        if (info.slots, info.dim, info.codebook_version) != (cb.slots, cb.dim, cb.version):
            raise InvalidInput(f"the federation uses codebook {info.codebook_version} ({info.slots} x {info.dim}); "
                               f"this client has {cb.version} ({cb.slots} x {cb.dim})")
        resp = api.join(JoinRequest(admission_token=inv.admission_token, contribution_level=contribution_level,
                                    privacy_mode=privacy_mode))
        if resp.instance_id != self.instance_id:
            raise CryptoError("the coordinator admitted another instance id than this identity's")
        m = Membership(instance_id=resp.instance_id, coordinator_url=inv.coordinator_url,
                       federation_id=inv.federation_id, federation_key_b64=b64encode(inv.federation_key),
                       contribution_level=contribution_level, privacy_mode=privacy_mode, federation=resp.federation,
                       joined_at=resp.joined_at, auto_sync=existing.auto_sync if existing else AutoSyncSettings())
        self._membership.save(m)
        fed_mode = resp.federation.privacy_mode
        note = ("open mode: patterns are released when at least min_contributors distinct members share them "
                "(k-anonymity, not differential privacy for the selection); counts and centroids stay DP"
                if fed_mode == "open" else "")
        return JoinResult(instance_id=m.instance_id, federation_id=m.federation_id, coordinator_url=m.coordinator_url,
                          contribution_level=contribution_level, privacy_mode=privacy_mode, federation_mode=fed_mode,
                          min_contributors=resp.federation.min_contributors, joined_at=resp.joined_at, note=note)

    # ----- contribute ------------------------------------------------------------------------
    def plan(self, min_confidence: float = 0.7, domain: str | None = None, m: Membership | None = None
             ) -> ContributionPlan:
        """Exactly what a contribution would carry now (``submission.plan_contribution``)."""
        m = m or self._membership.require()
        return plan_contribution(self.store.all_memories(), self.generalizer, self.codebook, self.policy,
                                 m.contribution_level, m.federation.privacy_mode, min_confidence=min_confidence,
                                 domain=domain)

    def _drain(self, m: Membership) -> Any:
        return self._outbox.drain(self.api(m), cipher_of(m), m.federation.privacy_mode,
                                  self.policy.level(m.contribution_level).max_slots)

    def contribute(self, min_confidence: float = 0.7, domain: str | None = None, dry_run: bool = False) -> ContributionResult:
        """Share this instance's patterns (or, with ``dry_run``, show exactly what would be shared)."""
        m = self._membership.require()
        with self.ledger(m) as ledger:
            budget = ledger.check(self._mode(m).round_spend())
        plan = self.plan(min_confidence, domain, m)
        result = ContributionResult(status="dry_run", patterns=len(plan.planned), privacy=budget,
                                    **plan.model_dump(exclude={"planned"}))
        if dry_run:
            result.message = f"{len(plan.planned)} pattern(s) would be shared; nothing was sent. " + budget.message
            return result
        if not budget.allowed:
            raise PrivacyBudgetExceeded(budget.message)
        if not plan.planned:
            result.status, result.preview = "nothing", []
            result.message = "no pattern passes the filters; nothing was queued or sent"
            return result
        with self._sync_lock:
            self._outbox.queue(plan.planned)
            self._membership.update(last_contributed_ids=sorted(p.pattern_id for p in plan.planned))
            try:
                receipt = self._drain(m)
            except TRANSIENT_ERRORS as exc:
                result.status, result.message = "queued", exc.message
                return result
        if receipt is None:
            result.status = "queued"
            result.message = ("the current round is aggregating; the contribution waits in the outbox and is sent "
                              "(encrypted for the next round) on the next sync")
        else:
            result.status, result.round_id = "sent", receipt.round_id
            result.patterns, result.pending_credits = receipt.accepted_patterns, receipt.pending_credits
            result.message = (f"{receipt.accepted_patterns} pattern(s) submitted to round {receipt.round_id}; "
                              "credits are pending until the round is released")
        return result

    def outbox_size(self) -> int:
        return self._outbox.size()

    # ----- rounds ----------------------------------------------------------------------------
    def _participant(self, m: Membership) -> RoundParticipant:
        fed = m.federation
        expect = RoundExpectations.for_mode(m.federation_id, fed.slots, fed.dim, self._mode(m))
        return RoundParticipant(self.identity, expect, lambda p: secagg_input(
            self._outbox.submitted(p.round_id, up_to=True), fed.slots, fed.dim, p.clip_norm), sessions=self._secagg)

    def sync(self, timeout_seconds: float | None = None, fetch_new: bool | None = None) -> SyncResult:
        """Drain the outbox, take part in the current round's secure aggregation until it is
        released (or ``timeout_seconds``), and refresh the cache of released patterns."""
        m = self._membership.require()
        result = SyncResult()

        def before_post(kind: str, params: SecAggParams) -> None:
            if kind == "masked_input":  # raises past budget: then nothing is posted
                with self.ledger(m) as ledger:
                    ledger.spend(self._mode(m).round_spend(), round_id=f"{m.federation_id}/r{params.round_id}")
                result.privacy_spent_round = True

        with self._sync_lock:
            try:
                receipt = self._drain(m)
                result.outbox_sent = receipt.accepted_patterns if receipt is not None else 0
            finally:
                result.outbox_waiting = self.outbox_size()
            out = run_round(self.api(m), self._participant(m), poll_seconds=self._poll, sleep=self._closing.wait,
                            timeout_seconds=4 * m.federation.phase_timeout_seconds + 10 if timeout_seconds is None
                            else timeout_seconds, before_post=before_post)
            result.round_id, result.phase, result.message = out.round_id, out.phase, out.message
            result.steps_posted, result.released = list(out.steps_posted), out.released
            if "unmask" in out.steps_posted:
                self._membership.update(last_round=out.took_part)
            if out.released and out.took_part is not None:
                self._outbox.mark_aggregated(out.took_part)
            if result.outbox_waiting:
                try:
                    receipt = self._drain(m)
                    result.outbox_sent += receipt.accepted_patterns if receipt is not None else 0
                except TRANSIENT_ERRORS:
                    pass
                result.outbox_waiting = self.outbox_size()
        if fetch_new is None:
            fetch_new = m.auto_sync.enabled and m.auto_sync.query_on_sync
        result.withdrawn_from_cache = self._query(m).refresh(fetch_new)
        result.cache_patterns = self.cache_size()
        if not result.message:
            result.message = (f"round {result.round_id} {result.phase}"
                              + (f"; posted {', '.join(result.steps_posted)}" if result.steps_posted else "")
                              + ("; released" if result.released else ""))
        return result

    # ----- query and the cache ---------------------------------------------------------------
    def query(self, query: str, min_confidence: float = 0.8, max_results: int = 10) -> list[FederatedPattern]:
        """Ask the federation: rank released slots locally, fetch them padded with decoys,
        decrypt, re-rank by local embeddings, filter by confidence."""
        m = self._membership.require()
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query must be a non-empty string")
        if not 0.0 <= min_confidence <= 1.0:
            raise InvalidInput("min_confidence must be in [0, 1]")
        if isinstance(max_results, bool) or not 1 <= int(max_results) <= 100:
            raise InvalidInput("max_results must be from 1 to 100")
        return self._query(m).query(query, min_confidence, int(max_results))

    def search_cache(self, query: str, k: int = 5) -> list[FederatedPattern]:
        """Search the local cache of released patterns (no network, no credits); patterns with
        cosine at or below RELEVANCE_FLOOR to the query are left out."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query must be a non-empty string")
        m = self.membership()
        return [] if m is None else self._query(m).search_cache(query, max(1, int(k)))

    def cache_size(self) -> int:
        return self._cache.size()

    # ----- credits, verification, votes, downloads -------------------------------------------
    def get_credits(self) -> CreditBalance:
        return self.api().credits()

    def verify(self, pattern_id: str) -> VerifyResult:
        """Confirm a released pattern, only if a non-private local memory supports it (cosine >=
        VERIFY_THRESHOLD to the pattern's text); otherwise refuse without contacting anyone."""
        m = self._membership.require()
        row = self._cache.get(pattern_id)
        hits = self.store.recall(pattern_text(row.summary, row.phrases), k=10, mode="semantic").hits
        best = next((h for h in hits if not is_private(h.memory)), None)
        if best is None or best.similarity < VERIFY_THRESHOLD:
            sim = 0.0 if best is None else best.similarity
            raise VerificationRefused(
                f"your memory does not support pattern {pattern_id} (best non-private similarity {sim:.2f}, "
                f"needs {VERIFY_THRESHOLD}); only patterns your own memory confirms can be verified")
        receipt = self.api(m).verify(pattern_id)
        return VerifyResult(pattern_id=pattern_id, verified=True, similarity=round(best.similarity, 4),
                            memory_id=best.memory.id, credits=receipt.credits)

    def vote(self, pattern_id: str, up: bool) -> VoteResult:
        m = self._membership.require()
        if not isinstance(pattern_id, str) or not pattern_id:
            raise InvalidInput("pattern_id must be a non-empty string")
        receipt = self.api(m).vote(pattern_id, bool(up))
        return VoteResult(pattern_id=pattern_id, up=bool(up), detail=receipt.detail, credits=receipt.credits)

    def download_patterns(self) -> DownloadResult:
        """Fetch every released pattern into the local cache (costs the download price)."""
        q = self._query(self._membership.require())
        resp = q.api.download()
        return DownloadResult(patterns=len(q.fetch(resp.patterns)), charged=resp.charged, credits=resp.credits)

    # ----- deletion and leaving --------------------------------------------------------------
    def delete_contributions(self) -> DeletionResult:
        """Withdraw everything this instance contributed (the coordinator recounts and withdraws)."""
        m = self._membership.require()
        with self._sync_lock:
            cleared = self._outbox.clear()
            receipt = self.api(m).delete_contributions()
        return DeletionResult(local_outbox_cleared=cleared, **receipt.model_dump())

    def leave(self, force: bool = False) -> LeaveResult:
        """Delete all contributions, then forget the federation key, membership and cache.

        The identity key and the privacy ledger stay: privacy spent is spent. With ``force`` the
        local state is forgotten even when the coordinator cannot be reached."""
        m = self._membership.require()
        self.disable_auto_sync(persist=False)
        with self._sync_lock:
            cleared = self._outbox.clear()
            try:
                receipt = self.api(m).leave()
            except TRANSIENT_ERRORS:
                if not force:
                    raise
                receipt = DeletionReceipt(deleted_submissions=0, withdrawn_patterns=0)
            self._cache.clear()
            with self._membership.lock:
                self._membership.forget()
                self._secagg.clear()
        return LeaveResult(federation_id=m.federation_id, local_outbox_cleared=cleared, **receipt.model_dump())

    # ----- status and auto-sync --------------------------------------------------------------
    def status(self) -> FederationStatus:
        m = self.membership()
        if m is None:
            return FederationStatus(joined=False, instance_id=self.instance_id, auto_sync_running=self.auto_sync_running,
                                    message="not a member of any federation")
        with self.ledger(m) as ledger:
            lst = ledger.status()
        st = FederationStatus(
            joined=True, instance_id=m.instance_id, federation_id=m.federation_id, coordinator_url=m.coordinator_url,
            contribution_level=m.contribution_level, privacy_mode=m.privacy_mode,
            federation_mode=m.federation.privacy_mode, privacy_budget_epsilon=lst.budget_epsilon,
            privacy_spent_epsilon=round(lst.spent_epsilon, 4), privacy_budget_left=round(lst.remaining_epsilon, 4),
            auto_sync=m.auto_sync, auto_sync_running=self.auto_sync_running, last_round=m.last_round,
            outbox_waiting=self.outbox_size(), cached_patterns=self.cache_size(), message=lst.message)
        try:
            ms = self.api(m).status()
            st.coordinator_reachable = True
            st.credits, st.current_round, st.last_released_round = ms.credits, ms.current_round, ms.last_released_round
        except TRANSIENT_ERRORS as exc:
            st.coordinator_reachable = False
            st.message += f"; {exc.message}"
        except ContinuumError as exc:  # reachable, but refuses us (e.g. no longer admitted)
            st.coordinator_reachable = True
            st.message += f"; the coordinator refused the status request: {exc.code}: {exc.message}"
        return st

    @property
    def auto_sync_running(self) -> bool:
        return self._auto.running

    def enable_auto_sync(self, interval_minutes: float = 15, contribute_on_sync: bool = True,
                         query_on_sync: bool = True) -> AutoSyncSettings:
        """Persist the setting and start the background thread (restarted when the server starts)."""
        if not (isinstance(interval_minutes, (int, float)) and 0 < interval_minutes <= 24 * 60):
            raise InvalidInput("interval_minutes must be in (0, 1440]")
        s = AutoSyncSettings(enabled=True, interval_minutes=float(interval_minutes),
                             contribute_on_sync=contribute_on_sync, query_on_sync=query_on_sync)
        self._membership.update(auto_sync=s)
        self.start_auto_sync()
        return s

    def disable_auto_sync(self, persist: bool = True) -> AutoSyncSettings:
        self._auto.stop()
        if persist and self.membership() is not None:
            return self._membership.update(auto_sync=AutoSyncSettings(enabled=False)).auto_sync
        return AutoSyncSettings(enabled=False)

    def start_auto_sync(self) -> bool:
        """Start the background thread if the persisted setting says so; True if running."""
        m = self.membership()
        if m is None or not m.auto_sync.enabled:
            return False
        self._auto.start()
        return True

    def _auto_interval(self) -> float | None:
        m = self.membership()
        return m.auto_sync.interval_minutes * 60 if m is not None and m.auto_sync.enabled else None

    def has_new_patterns(self, min_confidence: float = 0.7) -> bool:
        """True when the patterns a contribution would send differ from the last contributed ones."""
        m = self._membership.require()
        planned = self.plan(min_confidence, None, m).planned
        return bool(planned) and sorted(p.pattern_id for p in planned) != sorted(m.last_contributed_ids)

    def auto_sync_once(self) -> SyncResult | None:
        """One auto-sync pass: contribute when there are new patterns, then sync."""
        m = self.membership()
        if m is None:
            return None
        if m.auto_sync.contribute_on_sync and self.has_new_patterns():
            try:
                self.contribute()
            except PrivacyBudgetExceeded as exc:
                logger.info("auto-sync: not contributing: %s", exc.message)
        return self.sync(fetch_new=m.auto_sync.query_on_sync)
