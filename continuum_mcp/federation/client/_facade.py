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

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import Invite
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.errors import InvalidInput, PrivacyBudgetExceeded
from continuum_mcp.federation.api import TRANSIENT_ERRORS, CoordinatorAPI
from continuum_mcp.federation.client._autosync import AutoSync
from continuum_mcp.federation.client._cache import PatternCache
from continuum_mcp.federation.client._membership import MembershipFile, cipher_of, join_federation, member_status
from continuum_mcp.federation.client._models import (
    AutoSyncSettings, ContributionResult, DeletionResult, DownloadResult, FederatedPattern, FederationStatus,
    JoinResult, LeaveResult, Membership, SyncResult, VerifyResult, VoteResult)
from continuum_mcp.federation.client._query import FederatedQuery, check_query, decoy_secret, supporting_memory
from continuum_mcp.federation.client._rounds import LedgerCharge, run_round
from continuum_mcp.federation.client._outbox import Outbox
from continuum_mcp.federation.participant import RoundExpectations, RoundParticipant
from continuum_mcp.federation.protocol import ContributionReceipt, CreditBalance, DeletionReceipt, LevelName, ModeName
from continuum_mcp.federation.submission import ContributionPlan, plan_contribution, secagg_input
from continuum_mcp.memory.store import MemoryStore
from continuum_mcp.federation.governance import GovernanceRules
from continuum_mcp.federation.client._governance import follow_adopted, join_adopted, load_adopted
from continuum_mcp.federation.client._seats import SessionSeats
from continuum_mcp.federation.client._session_sync import auto_sync_pass, standing_opt_ins
from continuum_mcp.federation.client._session_sync import note_sessions as _note_sessions
from continuum_mcp.privacy.codebook import Codebook
from continuum_mcp.privacy.generalize import Generalizer
from continuum_mcp.privacy.ledger import PrivacyLedger
from continuum_mcp.privacy.modes import PrivacyMode, PrivacyPolicy, default_policy
from continuum_mcp.privacy.scrub import Scrubber
from continuum_mcp.secagg import SecAggClient

FEDERATION_DIR = "federation"
#: a released pattern counts as supported by this instance's memory (``verify``) when a
#: non-private memory has cosine similarity of at least this to the pattern's text.
VERIFY_THRESHOLD = 0.7


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class FederationClient(AbstractContextManager["FederationClient"]):
    """One instance's membership of one federation (``governance_rules``: None counts with the card's)."""

    governance_rules: GovernanceRules | None = None

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
        self._auto = AutoSync(self._membership, self.auto_sync_once, watch=lambda: standing_opt_ins(self.dir))
        self.session_seats = SessionSeats(self.dir)  # one turn per learning session at a time (auto-sync, take-part)

    # ----- plumbing ------------------------------------------------------------------------
    @property
    def instance_id(self) -> str:
        return self.identity.instance_id

    @property
    def codebook(self) -> Codebook:
        if self._codebook is None:
            self._codebook = load_adopted(self.dir) or Codebook.load("v0")
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
                             delta=mode.delta, window=timedelta(days=mode.window_days), clock=self._clock,
                             lifetime=mode.lifetime_budget())

    def _query(self, m: Membership) -> FederatedQuery:
        return FederatedQuery(self.api(m), self._cache, cipher_of(m), self.store.embedder, self.codebook,
                              m.federation.min_contributors, decoy_secret(self.identity))

    # ----- join ------------------------------------------------------------------------------
    def join(self, invite: str, contribution_level: LevelName = "standard", privacy_mode: ModeName = "high") -> JoinResult:
        """Join with an invite; only its public part goes to the coordinator, the key stays here."""
        self.policy.level(contribution_level)
        self.policy.mode(privacy_mode)
        m, result = join_federation(self.api(url=(inv := Invite.parse(invite)).coordinator_url), inv, self.identity,
                                    self.codebook, contribution_level, privacy_mode, self.membership())
        self._membership.save(m)
        return join_adopted(self, result)

    # ----- contribute ------------------------------------------------------------------------
    def plan(self, min_confidence: float = 0.7, domain: str | None = None, m: Membership | None = None
             ) -> ContributionPlan:
        """Exactly what a contribution would carry now (``submission.plan_contribution``)."""
        m = m or self._membership.require()
        return plan_contribution(self.store.all_memories(), self.generalizer, self.codebook, self.policy,
                                 m.contribution_level, m.federation.privacy_mode, min_confidence=min_confidence,
                                 domain=domain)

    def _drain(self, m: Membership) -> ContributionReceipt | None:
        return self._outbox.drain(self.api(m), cipher_of(m), m.federation.privacy_mode,
                                  self.policy.level(m.contribution_level).max_slots)

    def contribute(self, min_confidence: float = 0.7, domain: str | None = None, dry_run: bool = False) -> ContributionResult:
        """Share this instance's patterns (or, with ``dry_run``, show exactly what would be shared)."""
        m = self._membership.require()
        with self.ledger(m) as ledger:
            budget = ledger.check(self._mode(m).round_spend())
        plan = self.plan(min_confidence, domain, m)
        result = ContributionResult.from_plan(plan, budget)
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
            result.sent(receipt)
        return result

    def outbox_size(self) -> int:
        return self._outbox.size()

    # ----- rounds ----------------------------------------------------------------------------
    def _participant(self, m: Membership) -> RoundParticipant:
        fed = m.federation
        expect = RoundExpectations.for_mode(m.federation_id, fed.slots, fed.dim, self._mode(m))
        return RoundParticipant(self.identity, expect, lambda p: secagg_input(
            self._outbox.submitted(p.round_id, up_to=True), fed.slots, fed.dim, p.clip_norm), sessions=self._secagg)

    def sync(self, timeout_seconds: float | None = None, fetch_new: bool | None = None,
             note_sessions: bool = True) -> SyncResult:
        """Drain the outbox, take part in the current round's secure aggregation until it is
        released (or ``timeout_seconds``), and refresh the cache of released patterns. Learning
        sessions are not waited for: ``note_sessions`` says which of the member's run (auto-sync
        takes part in them, ``_session_sync``)."""
        m = self._membership.require()
        result = SyncResult()
        charge = LedgerCharge(lambda: self.ledger(m), self._mode(m).round_spend(), m.federation_id)

        with self._sync_lock:
            # a codebook adopted by vote (as this client counts) is followed before anything is sent
            self._codebook = follow_adopted(self, self.codebook, self._outbox)
            try:
                result.outbox_sent = r.accepted_patterns if (r := self._drain(m)) else 0
            finally:
                result.outbox_waiting = self.outbox_size()
            out = run_round(self.api(m), self._participant(m), poll_seconds=self._poll, sleep=self._closing.wait,
                            timeout_seconds=4 * m.federation.phase_timeout_seconds + 10 if timeout_seconds is None
                            else timeout_seconds, before_post=charge)
            result.round_id, result.phase, result.message = out.round_id, out.phase, out.message
            result.privacy_spent_round = charge.spent
            result.steps_posted, result.released = list(out.steps_posted), out.released
            if "unmask" in out.steps_posted:
                self._membership.update(last_round=out.took_part)
            if out.released and out.took_part is not None:
                self._outbox.mark_aggregated(out.took_part)
            if result.outbox_waiting:
                try:
                    result.outbox_sent += r.accepted_patterns if (r := self._drain(m)) else 0
                except TRANSIENT_ERRORS:
                    pass
                result.outbox_waiting = self.outbox_size()
        if fetch_new is None:
            fetch_new = m.auto_sync.enabled and m.auto_sync.query_on_sync
        result.withdrawn_from_cache = self._query(m).refresh(fetch_new)
        result.cache_patterns = self.cache_size()
        result.message = result.message or result.summary()
        return _note_sessions(self, result) if note_sessions else result

    # ----- query and the cache ---------------------------------------------------------------
    def query(self, query: str, min_confidence: float = 0.8, max_results: int = 10) -> list[FederatedPattern]:
        """Ask the federation: rank released slots locally, fetch them padded with decoys,
        decrypt, re-rank by local embeddings, filter by confidence."""
        return self._query(self._membership.require()).query(query, min_confidence, max_results)

    def search_cache(self, query: str, k: int = 5) -> list[FederatedPattern]:
        """Search the local cache of released patterns (no network, no credits); patterns with
        cosine at or below RELEVANCE_FLOOR to the query are left out."""
        check_query(query)
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
        best = supporting_memory(self.store, self._cache.get(pattern_id), VERIFY_THRESHOLD)
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
        return member_status(m, lst, self.api(m), auto_sync_running=self.auto_sync_running,
                             outbox_waiting=self.outbox_size(), cached_patterns=self.cache_size())

    @property
    def auto_sync_running(self) -> bool:
        return self._auto.running

    def enable_auto_sync(self, interval_minutes: float = 15, contribute_on_sync: bool = True,
                         query_on_sync: bool = True) -> AutoSyncSettings:
        """Persist the setting and start the background thread (restarted when the server starts)."""
        return self._auto.enable(interval_minutes, contribute_on_sync, query_on_sync)

    def disable_auto_sync(self, persist: bool = True) -> AutoSyncSettings:
        return self._auto.disable(persist)

    def start_auto_sync(self) -> bool:
        """Start the background thread if the persisted setting says so; True if running."""
        return self._auto.start()

    def has_new_patterns(self, min_confidence: float = 0.7) -> bool:
        """True when the patterns a contribution would send differ from the last contributed ones."""
        m = self._membership.require()
        planned = self.plan(min_confidence, None, m).planned
        return bool(planned) and sorted(p.pattern_id for p in planned) != sorted(m.last_contributed_ids)

    def auto_sync_once(self, stop: threading.Event | None = None) -> SyncResult | None:
        """One auto-sync pass: contribute, the release sync, and a turn in each running session the
        member opted in to (``_session_sync.auto_sync_pass``); ``stop`` set ends it early."""
        return auto_sync_pass(self, stop)
