"""The federation client: join, contribute, secure-aggregation rounds, query, credits, leave.

Why it looks like this (DESIGN.md section 2):
- Nothing leaves the machine but slots, confidences, phrase tokens with ciphertexts, statement
  ciphertexts (balanced/open only) and secure-aggregation messages. Pattern text is encrypted
  end-to-end with the federation key, which lives only in ``membership.json`` (mode 0600) and is
  never sent to the coordinator (only the invite's public part is).
- Contributions go through a local outbox (SQLite) holding the *plaintext* patterns on this
  machine. They are encrypted for the round that is current when they are actually sent, so a
  coordinator that is down, or a round that is busy aggregating, never loses a contribution.
- The privacy ledger is checked before anything is queued and charged when the masked input of a
  round is posted (the only moment the instance's data enters a release).
- Every request is signed over the exact body bytes; transport errors, 5xx and 429 are retried
  with exponential backoff; error bodies come back as typed exceptions with the server's message.

State in ``<data_dir>/federation/``: ``identity.key`` (0600), ``membership.json`` (0600),
``ledger.db`` (PrivacyLedger), ``outbox.db`` (queued and submitted patterns), ``cache.db``
(decrypted released patterns with local embeddings).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from continuum_mcp import _sqlite as durable
from continuum_mcp.privacy.codebook import Codebook
from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import FederationCipher, Invite
from continuum_mcp.errors import (
    AggregationAborted,
    BadInvite,
    Conflict,
    ContinuumError,
    CoordinatorUnavailable,
    CryptoError,
    FederationError,
    Forbidden,
    InsufficientCredits,
    InvalidInput,
    NotAdmitted,
    NotFound,
    NotJoined,
    PrivacyBudgetExceeded,
    RateLimited,
    ReplayError,
    TooLarge,
    Unauthenticated,
    VerificationRefused,
    WrongPhase,
)
from continuum_mcp.privacy.generalize import Generalizer, Pattern, is_private
from continuum_mcp.crypto.identity import Identity, b64decode, b64encode
from continuum_mcp.privacy.ledger import LedgerStatus, PrivacyLedger
from continuum_mcp.privacy.preview import preview_patterns
from continuum_mcp.privacy.modes import PrivacyMode, PrivacyPolicy, default_policy
from continuum_mcp.federation.protocol import (
    ActionReceipt,
    ContributionReceipt,
    ContributionRequest,
    CreditBalance,
    DeletionReceipt,
    DownloadResponse,
    ErrorBody,
    FederationInfo,
    JoinRequest,
    JoinResponse,
    LevelName,
    MemberStatus,
    ModeName,
    PatternSubmission,
    PhraseSubmission,
    QueryRequest,
    QueryResponse,
    ReleasedPattern,
    RoundState,
    SecAggPost,
    SlotsResponse,
    VoteRequest,
    slot_vector_layout,
)
from continuum_mcp.privacy.scrub import Scrubber
from continuum_mcp.secagg._core import KeyRoster, SecAggClient, SecAggParams, ShareInbox, SurvivorList
from continuum_mcp.memory.store import MemoryStore

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

FEDERATION_DIR = "federation"
MODE_ORDER: dict[str, int] = {"high": 0, "balanced": 1, "open": 2}
SECAGG_PHASES = ("advertise", "share_keys", "masked_input", "unmask")
#: Slots asked for per query: the QUERY_TOP_SLOTS best released slots, padded with random decoys
#: to QUERY_PADDED_SLOTS so the coordinator does not learn which ones were wanted.
QUERY_TOP_SLOTS = 4
QUERY_PADDED_SLOTS = 16
#: A released pattern counts as supported by this instance's memory (``verify``) when a
#: non-private memory has cosine similarity of at least this to the pattern's text.
VERIFY_THRESHOLD = 0.7
#: Confidence of a federated pattern (documented in :func:`federated_confidence`).
RELEVANCE_FLOOR, RELEVANCE_SPAN = 0.2, 0.4


# ----- result models -------------------------------------------------------------------------
class JoinResult(BaseModel):
    instance_id: str
    federation_id: str
    coordinator_url: str
    contribution_level: LevelName
    privacy_mode: ModeName = Field(description="This instance's own mode.")
    federation_mode: ModeName = Field(description="The mode every round of the federation is released under.")
    min_contributors: int
    joined_at: datetime
    note: str = ""


class OutgoingPattern(BaseModel):
    """One pattern as it would leave (or left) the machine, in plain text."""

    slot: int
    confidence: float
    phrases: list[str] = Field(description="Sent as opaque tokens plus ciphertexts (end-to-end encrypted).")
    statement: str | None = Field(description="Sent encrypted only in balanced/open federations; None = not sent.")
    pattern_id: str
    source_memory_ids: list[int] = Field(description="Local only: which memories it came from (never sent).")


class ContributionResult(BaseModel):
    status: Literal["sent", "queued", "dry_run", "nothing"]
    round_id: int | None = None
    patterns: int = Field(description="Patterns sent, queued, or that would be sent.")
    pending_credits: float = Field(default=0.0, description="Credits earned when the round is released.")
    preview: list[OutgoingPattern] = Field(default_factory=list)
    what_leaves: str = ""
    held_back_private: int = 0
    below_confidence: int = 0
    dropped_same_slot: int = Field(default=0, description="Weaker patterns that fell into an already used slot.")
    dropped_over_level: int = Field(default=0, description="Patterns beyond the contribution level's slot cap.")
    privacy: LedgerStatus | None = None
    message: str = ""


class SyncResult(BaseModel):
    outbox_sent: int = 0
    outbox_waiting: int = 0
    round_id: int | None = None
    phase: str | None = None
    steps_posted: list[str] = Field(default_factory=list)
    released: bool = False
    privacy_spent_round: bool = False
    cache_patterns: int = 0
    withdrawn_from_cache: int = 0
    message: str = ""


class FederatedPattern(BaseModel):
    """A released pattern of the federation, decrypted and ranked on this machine."""

    source: Literal["federated"] = "federated"
    pattern_id: str
    slot: int
    summary: str
    phrases: list[str]
    statements: list[str] = Field(default_factory=list)
    confidence: float
    similarity: float = Field(description="Cosine of the query to the pattern text (local embeddings).")
    contributor_count: float = Field(description="Noisy (DP) count of distinct contributors, shown no lower than "
                                                 "the federation's release floor, which the true count always meets.")
    verification_count: int
    votes_up: int = 0
    votes_down: int = 0
    released_at_round: int


class VerifyResult(BaseModel):
    pattern_id: str
    verified: bool
    similarity: float
    memory_id: int
    credits: CreditBalance | None = None


class VoteResult(BaseModel):
    pattern_id: str
    up: bool
    detail: str
    credits: CreditBalance | None = None


class DownloadResult(BaseModel):
    patterns: int
    charged: float
    credits: CreditBalance


class DeletionResult(BaseModel):
    deleted_submissions: int
    withdrawn_patterns: int
    local_outbox_cleared: int


class LeaveResult(DeletionResult):
    federation_id: str
    forgot_federation_key: bool = True


class AutoSyncSettings(BaseModel):
    enabled: bool = False
    interval_minutes: float = 15.0
    contribute_on_sync: bool = True
    query_on_sync: bool = True


class FederationStatus(BaseModel):
    joined: bool
    instance_id: str
    federation_id: str | None = None
    coordinator_url: str | None = None
    coordinator_reachable: bool | None = None
    contribution_level: str | None = None
    privacy_mode: str | None = None
    federation_mode: str | None = None
    privacy_budget_epsilon: float | None = None
    privacy_spent_epsilon: float | None = None
    privacy_budget_left: float | None = None
    credits: CreditBalance | None = None
    auto_sync: AutoSyncSettings = Field(default_factory=AutoSyncSettings)
    auto_sync_running: bool = False
    current_round: int | None = None
    last_round: int | None = Field(default=None, description="Last round this instance took part in.")
    last_released_round: int | None = None
    outbox_waiting: int = 0
    cached_patterns: int = 0
    message: str = ""


class Membership(BaseModel):
    """membership.json: who we are in which federation (holds the federation key: 0600)."""

    instance_id: str
    coordinator_url: str
    federation_id: str
    federation_key_b64: str
    contribution_level: LevelName
    privacy_mode: ModeName
    federation: FederationInfo
    joined_at: datetime
    auto_sync: AutoSyncSettings = Field(default_factory=AutoSyncSettings)
    last_round: int | None = None
    last_contributed_ids: list[str] = Field(default_factory=list)


class _Planned(BaseModel):
    """A pattern ready to send: plaintext (local only) plus its embedding."""

    slot: int
    confidence: float
    phrases: list[str]
    statement: str
    pattern_id: str
    source_memory_ids: list[int]
    embedding: list[float]


# ----- helpers -------------------------------------------------------------------------------
def federated_confidence(similarity: float, noisy_contributors: float, min_contributors: int) -> float:
    """Confidence of a federated pattern for a query, in [0, 1]::

        relevance = clip((cosine - 0.2) / 0.4, 0, 1)     # cosine 0.6 or more -> 1, 0.2 or less -> 0
        n         = max(noisy contributors, floor)       # floor = min_contributors
        support   = 1 - 2 ** (-3 * n / floor)
        confidence = relevance * support

    ``n`` is never below the floor because the coordinator releases nothing whose true count of
    distinct contributors is below it (the noisy count alone can be far off in a small
    federation). At the floor support is 0.875, at twice the floor 0.98: a pattern that only
    just passed the floor reaches the default ``min_confidence`` 0.8 only if its text closely
    matches the query (cosine >= 0.57).
    """
    relevance = min(1.0, max(0.0, (similarity - RELEVANCE_FLOOR) / RELEVANCE_SPAN))
    floor = max(1, min_contributors)
    support = 1.0 - 2.0 ** (-3.0 * max(noisy_contributors, float(floor)) / floor)
    return round(relevance * support, 4)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


_ERROR_TYPES: dict[str, type[ContinuumError]] = {
    "invalid_input": InvalidInput,
    "unauthenticated": Unauthenticated,
    "replay": ReplayError,
    "not_admitted": NotAdmitted,
    "forbidden": Forbidden,
    "bad_invite": BadInvite,
    "not_found": NotFound,
    "wrong_phase": WrongPhase,
    "conflict": Conflict,
    "too_large": TooLarge,
    "insufficient_credits": InsufficientCredits,
    "privacy_budget_exceeded": PrivacyBudgetExceeded,
    "rate_limited": RateLimited,
}


class _SQLite:
    """One SQLite file with a lock (the client is used from MCP worker threads and auto-sync)."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self._conn = durable.connect(path)
        self._lock = threading.RLock()
        with self.tx() as c:
            for stmt in schema.split(";"):
                if stmt.strip():
                    c.execute(stmt)
        os.chmod(path, 0o600)

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return durable.immediate(self._conn, self._lock)

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._conn.execute(sql, args).fetchall())

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at REAL NOT NULL,
    patterns TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS submitted (round_id INTEGER NOT NULL, slot INTEGER NOT NULL,
    pattern TEXT NOT NULL, submitted_at REAL NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
    PRIMARY KEY (round_id, slot))
"""
_CACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS patterns (pattern_id TEXT PRIMARY KEY, slot INTEGER NOT NULL, summary TEXT NOT NULL,
    phrases TEXT NOT NULL, statements TEXT NOT NULL, contributors REAL NOT NULL, verifications INTEGER NOT NULL,
    votes_up INTEGER NOT NULL, votes_down INTEGER NOT NULL, released_at_round INTEGER NOT NULL,
    embedding BLOB NOT NULL, fetched_at REAL NOT NULL)
"""


# ----- the client ----------------------------------------------------------------------------
class FederationClient:
    """One instance's membership of one federation."""

    def __init__(
        self,
        store: MemoryStore,
        settings: Settings,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] = _utc_now,
        policy: PrivacyPolicy | None = None,
        codebook: Codebook | None = None,
        timeout_seconds: float = 10.0,
        max_retries: int = 4,
        backoff_seconds: float = 0.25,
        poll_seconds: float = 0.2,
    ) -> None:
        self.store = store
        self.settings = settings
        self.dir = Path(settings.data_dir) / FEDERATION_DIR
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        self.identity = Identity.load_or_create(self.dir / "identity.key")
        self.policy = policy or default_policy()
        self._codebook = codebook
        self._clock = clock
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=httpx.Timeout(timeout_seconds, connect=min(5.0, timeout_seconds)))
        self._max_retries = max_retries
        self._backoff = backoff_seconds
        self._poll = poll_seconds
        self._outbox = _SQLite(self.dir / "outbox.db", _OUTBOX_SCHEMA)
        self._cache = _SQLite(self.dir / "cache.db", _CACHE_SCHEMA)
        self._generalizer: Generalizer | None = None
        self._secagg: dict[str, SecAggClient] = {}  # session id -> this attempt's client state
        self._lock = threading.RLock()        # membership file and lazily built members
        self._sync_lock = threading.Lock()    # one contribute/sync at a time
        self._auto_stop = threading.Event()
        self._auto_thread: threading.Thread | None = None
        self._closing = threading.Event()  # set by close(): a waiting sync stops promptly

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
        with self._lock:
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

    @property
    def _membership_path(self) -> Path:
        return self.dir / "membership.json"

    def membership(self) -> Membership | None:
        path = self._membership_path
        if not path.exists():
            return None
        try:
            return Membership.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            raise FederationStateError(f"{path} is unreadable: {exc.errors()[0]['msg']}") from exc

    def _require(self) -> Membership:
        m = self.membership()
        if m is None:
            raise NotJoined("this instance has not joined a federation; use federation_join with an invite")
        return m

    def _save(self, m: Membership) -> None:
        with self._lock:
            durable.atomic_write(self._membership_path, m.model_dump_json(indent=2).encode("utf-8"), mode=0o600)

    def _update(self, **changes: Any) -> Membership:
        with self._lock:
            m = self._require().model_copy(update=changes)
            self._save(m)
            return m

    def _mode(self, m: Membership) -> PrivacyMode:
        return self.policy.mode(m.federation.privacy_mode)

    def ledger(self, m: Membership | None = None) -> PrivacyLedger:
        """A new handle on the privacy ledger (close it; ``with`` works), with the budget of the
        federation's mode, the mode every round spends under. A handle per use because SQLite
        connections belong to one thread and the client runs in MCP workers and auto-sync."""
        m = m or self._require()
        mode = self._mode(m)
        return PrivacyLedger(self.dir / "ledger.db", identity=self.instance_id, budget_epsilon=mode.budget_epsilon,
                             delta=mode.delta, window=timedelta(days=mode.window_days), clock=self._clock)

    def _cipher(self, m: Membership) -> FederationCipher:
        return FederationCipher(b64decode(m.federation_key_b64, what="federation key", length=32), m.federation_id)

    def _round_label(self, m: Membership, round_id: int) -> str:
        return f"{m.federation_id}/r{round_id}"

    # ----- HTTP ------------------------------------------------------------------------------
    def _request(self, base_url: str, method: str, path: str, response_model: type[M],
                 body: BaseModel | None = None) -> M:
        """Signed request with retries; 4xx ErrorBody -> typed exception; exhausted -> unavailable."""
        data = body.model_dump_json(exclude_none=False).encode("utf-8") if body is not None else b""
        url = base_url.rstrip("/") + path
        last = ""
        for attempt in range(self._max_retries + 1):
            if attempt:
                time.sleep(self._backoff * (2 ** (attempt - 1)) * (1 + 0.25 * secrets.randbelow(100) / 100))
            headers = self.identity.sign_request(method, path, data)  # fresh nonce per attempt
            if data:
                headers["Content-Type"] = "application/json"
            try:
                resp = self._http.request(method, url, content=data, headers=headers)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code >= 500 or resp.status_code == 429:
                last = f"HTTP {resp.status_code}"
                if resp.status_code == 429:
                    try:
                        time.sleep(min(5.0, float(resp.headers.get("Retry-After", "0"))))
                    except ValueError:
                        pass
                continue
            if resp.status_code >= 400:
                raise _error_from(resp)
            try:
                return response_model.model_validate_json(resp.content)
            except ValidationError as exc:
                raise CoordinatorUnavailable(f"the coordinator sent an unexpected answer to {method} {path}: "
                                             f"{exc.errors()[0]['msg']}") from exc
        raise CoordinatorUnavailable(
            f"the coordinator at {base_url} is unreachable ({last}) after {self._max_retries + 1} attempts; "
            "contributions wait in the local outbox and nothing is lost")

    def _call(self, m: Membership, method: str, path: str, response_model: type[M], body: BaseModel | None = None) -> M:
        return self._request(m.coordinator_url, method, path, response_model, body)

    # ----- join ------------------------------------------------------------------------------
    def join(self, invite: str, contribution_level: LevelName = "standard", privacy_mode: ModeName = "high") -> JoinResult:
        """Join with an invite; only its public part goes to the coordinator, the key stays here."""
        self.policy.level(contribution_level)
        self.policy.mode(privacy_mode)
        inv = Invite.parse(invite)
        existing = self.membership()
        if existing is not None and existing.federation_id != inv.federation_id:
            raise Conflict(f"already a member of federation {existing.federation_id}; leave it first")
        info = self._request(inv.coordinator_url, "GET", "/v1/federation", FederationInfo)
        if info.federation_id != inv.federation_id:
            raise BadInvite(f"the coordinator serves federation {info.federation_id}, the invite is for "
                            f"{inv.federation_id}")
        if MODE_ORDER[info.privacy_mode] > MODE_ORDER[privacy_mode]:
            raise InvalidInput(f"this federation releases in {info.privacy_mode} mode; your mode {privacy_mode} forbids it")
        if info.slots != self.codebook.slots or info.dim != self.codebook.dim or info.codebook_version != self.codebook.version:
            raise InvalidInput(f"the federation uses codebook {info.codebook_version} ({info.slots} x {info.dim}); "
                               f"this client has {self.codebook.version} ({self.codebook.slots} x {self.codebook.dim})")
        req = JoinRequest(admission_token=inv.admission_token, contribution_level=contribution_level,
                          privacy_mode=privacy_mode)
        resp = self._request(inv.coordinator_url, "POST", "/v1/join", JoinResponse, req)
        if resp.instance_id != self.instance_id:
            raise CryptoError("the coordinator admitted another instance id than this identity's")
        m = Membership(
            instance_id=resp.instance_id, coordinator_url=inv.coordinator_url, federation_id=inv.federation_id,
            federation_key_b64=b64encode(inv.federation_key), contribution_level=contribution_level,
            privacy_mode=privacy_mode, federation=resp.federation, joined_at=resp.joined_at,
            auto_sync=existing.auto_sync if existing else AutoSyncSettings(),
        )
        self._save(m)
        note = ""
        if resp.federation.privacy_mode == "open":
            note = ("open mode: patterns are released when at least min_contributors distinct members share them "
                    "(k-anonymity, not differential privacy for the selection); counts and centroids stay DP")
        return JoinResult(instance_id=m.instance_id, federation_id=m.federation_id, coordinator_url=m.coordinator_url,
                          contribution_level=contribution_level, privacy_mode=privacy_mode,
                          federation_mode=resp.federation.privacy_mode,
                          min_contributors=resp.federation.min_contributors, joined_at=resp.joined_at, note=note)

    # ----- contribute ------------------------------------------------------------------------
    def _plan(self, m: Membership, min_confidence: float, domain: str | None) -> tuple[list[_Planned], ContributionResult]:
        """Generalise, filter, slot and cap: exactly what a contribution would carry."""
        if not 0.0 <= min_confidence <= 1.0:
            raise InvalidInput("min_confidence must be in [0, 1]")
        memories = list(self.store.all_memories())
        if domain is not None:
            d = domain.strip().lower()
            if not d:
                raise InvalidInput("domain must be a non-empty tag")
            memories = [mem for mem in memories if d in {t.strip().lower() for t in mem.tags}]
        preview = preview_patterns(memories, self.generalizer, min_confidence=min_confidence)
        cap = self.policy.level(m.contribution_level).max_slots
        patterns: list[Pattern] = [p for p in preview.patterns if p.embedding and p.phrases]
        planned: list[_Planned] = []
        used: set[int] = set()
        same_slot = over = 0
        if patterns:
            slots = self.codebook.nearest(np.asarray([p.embedding for p in patterns], dtype=np.float32))
            for p, slot in zip(patterns, slots):  # strongest first: the best pattern keeps a slot
                s = int(slot)
                if s in used:
                    same_slot += 1
                    continue
                if len(planned) >= cap:
                    over += 1
                    continue
                used.add(s)
                planned.append(_Planned(slot=s, confidence=p.confidence,
                                        phrases=p.phrases[: self.policy.max_phrases_per_pattern],
                                        statement=p.statement, pattern_id=p.pattern_id,
                                        source_memory_ids=p.source_memory_ids, embedding=p.embedding))
        send_statements = m.federation.privacy_mode in ("balanced", "open")
        result = ContributionResult(
            status="dry_run", patterns=len(planned),
            preview=[OutgoingPattern(slot=p.slot, confidence=p.confidence, phrases=p.phrases,
                                     statement=p.statement if send_statements else None, pattern_id=p.pattern_id,
                                     source_memory_ids=p.source_memory_ids) for p in planned],
            held_back_private=len(preview.private_memory_ids), below_confidence=preview.below_confidence,
            dropped_same_slot=same_slot, dropped_over_level=over,
            what_leaves=(
                "Per pattern: its slot number, its confidence, each phrase as an opaque token plus a ciphertext "
                "readable only by members holding the federation key"
                + (", and the statement as a ciphertext" if send_statements else " (statements are not sent in "
                   f"{m.federation.privacy_mode} mode)")
                + ". The pattern embeddings leave only inside the round's secure aggregation, summed with all "
                "other members' and noised; no single embedding, raw text or memory id leaves this machine."),
        )
        return planned, result

    def contribute(self, min_confidence: float = 0.7, domain: str | None = None, dry_run: bool = False) -> ContributionResult:
        """Share this instance's patterns (or, with ``dry_run``, show exactly what would be shared)."""
        m = self._require()
        with self.ledger(m) as ledger:
            budget = ledger.check(self._mode(m).round_spend())
        planned, result = self._plan(m, min_confidence, domain)
        result.privacy = budget
        if dry_run:
            result.message = (f"{len(planned)} pattern(s) would be shared; nothing was sent. " + budget.message)
            return result
        if not budget.allowed:
            raise PrivacyBudgetExceeded(budget.message)
        if not planned:
            result.status = "nothing"
            result.preview = []
            result.message = "no pattern passes the filters; nothing was queued or sent"
            return result
        with self._sync_lock:
            with self._outbox.tx() as c:
                c.execute("INSERT INTO outbox (created_at, patterns) VALUES (?, ?)",
                          (time.time(), json.dumps([p.model_dump() for p in planned])))
            self._update(last_contributed_ids=sorted(p.pattern_id for p in planned))
            try:
                receipt = self._drain(m)
            except CoordinatorUnavailable as exc:
                result.status, result.message = "queued", f"{exc.message}"
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

    def _drain(self, m: Membership) -> ContributionReceipt | None:
        """Send the outbox (merged with what this round already holds) for the current round.

        Returns None when there is nothing to send or the round is not collecting; raises
        CoordinatorUnavailable (the outbox stays) when the coordinator cannot be reached."""
        rows = self._outbox.read("SELECT id, patterns FROM outbox ORDER BY id")
        if not rows:
            return None
        state = self._call(m, "GET", "/v1/rounds/current", RoundState)
        if state.phase != "collecting":
            return None
        r = state.round_id
        merged: dict[int, _Planned] = {}
        for (pat,) in self._outbox.read("SELECT pattern FROM submitted WHERE round_id = ? AND status = 'pending'", (r,)):
            p = _Planned.model_validate_json(pat)
            merged[p.slot] = p
        for _, pats in rows:  # later queued contributions win per slot
            for d in json.loads(pats):
                p = _Planned.model_validate(d)
                merged[p.slot] = p
        cap = self.policy.level(m.contribution_level).max_slots
        chosen = sorted(merged.values(), key=lambda p: (-p.confidence, p.slot))[:cap]
        cipher = self._cipher(m)
        send_statements = m.federation.privacy_mode in ("balanced", "open")
        subs = [PatternSubmission(
            slot=p.slot, confidence=max(0.0, min(1.0, p.confidence)),
            phrases=[PhraseSubmission(token=cipher.phrase_token(p.slot, ph),
                                      ciphertext=b64encode(cipher.encrypt(p.slot, r, ph))) for ph in p.phrases],
            statement_ciphertext=b64encode(cipher.encrypt(p.slot, r, p.statement)) if send_statements else None,
        ) for p in chosen]
        try:
            receipt = self._call(m, "POST", "/v1/contributions", ContributionReceipt,
                                 ContributionRequest(round_id=r, patterns=subs))
        except WrongPhase:
            return None  # the round closed meanwhile: stays queued, re-encrypted next time
        now = time.time()
        max_id = rows[-1][0]
        with self._outbox.tx() as c:
            c.execute("DELETE FROM submitted WHERE round_id = ? AND status = 'pending'", (r,))
            c.executemany("INSERT OR REPLACE INTO submitted (round_id, slot, pattern, submitted_at, status) "
                          "VALUES (?, ?, ?, ?, 'pending')", [(r, p.slot, p.model_dump_json(), now) for p in chosen])
            c.execute("DELETE FROM outbox WHERE id <= ?", (max_id,))
        logger.info("submitted %d pattern(s) to round %d", len(chosen), r)
        return receipt

    def outbox_size(self) -> int:
        return int(self._outbox.read("SELECT COUNT(*) FROM outbox")[0][0])

    # ----- rounds ----------------------------------------------------------------------------
    def _check_params(self, m: Membership, state: RoundState) -> SecAggParams:
        """Refuse parameters that would give less privacy than the federation's mode promises."""
        try:
            params = SecAggParams.model_validate(state.params)
        except ValidationError as exc:
            raise CryptoError(f"the round's secure-aggregation parameters are malformed: {exc.errors()[0]['msg']}") from exc
        mode = self._mode(m)
        total, _ = slot_vector_layout(m.federation.slots, m.federation.dim)
        expected_session = f"{m.federation_id}/r{state.round_id}/a{state.attempt}"
        if params.session_id != expected_session or params.round_id != state.round_id:
            raise CryptoError(f"secure-aggregation session {params.session_id!r} is not {expected_session!r}")
        if params.dim != total:
            raise CryptoError(f"secure-aggregation dimension {params.dim} is not {total}")
        if self.instance_id not in params.roster:
            raise CryptoError("this instance is not in the round's roster")
        if params.clip_norm > math.sqrt(mode.allocation.centroids) + 1e-9:
            raise CryptoError("the round's clip norm is larger than the mode allows")
        if params.noise_sigma + 1e-9 < mode.sigma * params.quantised_sensitivity:
            raise CryptoError("the round's noise is below the privacy mode's calibration; not taking part")
        return params

    def _input_vector(self, m: Membership, round_id: int, params: SecAggParams) -> np.ndarray:
        """The K*dim secagg input: each submitted slot holds its pattern embedding; whole vector
        scaled to the clip norm (the centroid share of the round's unit L2 contribution)."""
        k, dim = m.federation.slots, m.federation.dim
        vec = np.zeros(k * dim, dtype=np.float64)
        latest: dict[int, _Planned] = {}
        for (pat,) in self._outbox.read(
                "SELECT pattern FROM submitted WHERE status = 'pending' AND round_id <= ? ORDER BY round_id",
                (round_id,)):
            p = _Planned.model_validate_json(pat)
            latest[p.slot] = p
        for s, p in latest.items():
            e = np.asarray(p.embedding, dtype=np.float64)
            vec[s * dim:(s + 1) * dim] = e / max(np.linalg.norm(e), 1e-12)
        norm = float(np.linalg.norm(vec))
        if norm > 0:
            vec *= params.clip_norm / norm
        return vec

    def _step(self, m: Membership, state: RoundState, result: SyncResult) -> None:
        """Post the one secagg message the coordinator waits for from this instance."""
        kind = state.you_pending
        r = state.round_id
        params = self._check_params(m, state)
        sid = params.session_id
        base = f"/v1/rounds/{r}/secagg"
        client = self._secagg.get(sid)
        if kind == "advertise":
            client = SecAggClient(self.identity, params)
            self._secagg = {sid: client}  # older attempts are over
            msg = client.advertise_keys()
        elif client is None:
            raise AggregationAborted(f"round {r}: this client lost its secure-aggregation state (restart mid-round); "
                                     "it is dropped from this attempt and its submission carries over")
        elif kind == "share_keys":
            roster = self._call(m, "GET", f"{base}/roster", _Raw)
            msg = client.share_keys(KeyRoster.model_validate(roster.model_dump()))
        elif kind == "masked_input":
            inbox = ShareInbox.model_validate(self._call(m, "GET", f"{base}/inbox", _Raw).model_dump())
            spend = self._mode(m).round_spend()
            with self.ledger(m) as ledger:  # raises past budget: then we do not post
                ledger.spend(spend, round_id=self._round_label(m, r))
            result.privacy_spent_round = True
            msg = client.masked_input(inbox, self._input_vector(m, r, params))
        elif kind == "unmask":
            surv = SurvivorList.model_validate(self._call(m, "GET", f"{base}/survivors", _Raw).model_dump())
            msg = client.unmask(surv)
        else:  # pragma: no cover - protocol gives only the four kinds
            raise InvalidInput(f"unknown secure-aggregation step {kind!r}")
        try:
            self._call(m, "POST", f"{base}/{kind}", ActionReceipt, SecAggPost(message=msg.model_dump(mode="json")))
        except Conflict:
            pass  # a retried post that had already been accepted
        result.steps_posted.append(kind)  # type: ignore[arg-type]
        if kind == "unmask":
            self._update(last_round=r)

    def sync(self, timeout_seconds: float | None = None, fetch_new: bool | None = None) -> SyncResult:
        """Drain the outbox, take part in the current round's secure aggregation until it is
        released (or ``timeout_seconds``), and refresh the cache of released patterns."""
        m = self._require()
        result = SyncResult()
        if timeout_seconds is None:
            timeout_seconds = 4 * m.federation.phase_timeout_seconds + 10
        deadline = time.monotonic() + timeout_seconds
        with self._sync_lock:
            try:
                receipt = self._drain(m)
                if receipt is not None:
                    result.outbox_sent = receipt.accepted_patterns
            except CoordinatorUnavailable:
                result.outbox_waiting = self.outbox_size()
                raise
            result.outbox_waiting = self.outbox_size()
            took_part: int | None = None
            while True:
                state = self._call(m, "GET", "/v1/rounds/current", RoundState)
                result.round_id, result.phase = state.round_id, state.phase
                if took_part is not None and state.round_id != took_part:
                    done = self._call(m, "GET", f"/v1/rounds/{took_part}", RoundState)
                    result.round_id, result.phase = done.round_id, done.phase
                    if done.phase == "released" and "unmask" in result.steps_posted:
                        result.released = True
                        with self._outbox.tx() as c:
                            c.execute("UPDATE submitted SET status = 'aggregated' WHERE round_id <= ? "
                                      "AND status = 'pending'", (took_part,))
                    break
                if state.phase not in SECAGG_PHASES or not state.you_in_roster:
                    break
                if time.monotonic() > deadline:
                    result.message = f"round {state.round_id} still in {state.phase}; sync again later"
                    break
                if state.you_pending is not None and state.params is not None:
                    took_part = state.round_id
                    try:
                        self._step(m, state, result)
                        continue
                    except WrongPhase:
                        pass  # the phase moved on meanwhile; look again after a pause
                    except AggregationAborted as exc:
                        result.message = exc.message
                        break
                elif took_part is None:
                    took_part = state.round_id  # in the roster with nothing pending: wait for the outcome
                if self._closing.wait(self._poll):
                    result.message = "the client is closing; sync again later"
                    break
            if result.outbox_waiting:
                try:
                    receipt = self._drain(m)
                    if receipt is not None:
                        result.outbox_sent += receipt.accepted_patterns
                except CoordinatorUnavailable:
                    pass
                result.outbox_waiting = self.outbox_size()
        if fetch_new is None:
            fetch_new = m.auto_sync.enabled and m.auto_sync.query_on_sync
        result.withdrawn_from_cache = self._refresh_cache(m, fetch_new)
        result.cache_patterns = self.cache_size()
        if not result.message:
            result.message = (f"round {result.round_id} {result.phase}"
                              + (f"; posted {', '.join(result.steps_posted)}" if result.steps_posted else "")
                              + ("; released" if result.released else ""))
        return result

    # ----- query -----------------------------------------------------------------------------
    def _released_slots(self, m: Membership) -> dict[int, np.ndarray]:
        resp = self._call(m, "GET", "/v1/slots", SlotsResponse)
        out: dict[int, np.ndarray] = {}
        for s in resp.slots:
            if s.released_at_round < 0 or not 0 <= s.slot < self.codebook.slots:
                continue
            v = np.asarray(s.vector, dtype=np.float32) if s.vector else self.codebook.vectors[s.slot]
            if v.shape != (self.codebook.dim,) or not np.all(np.isfinite(v)) or np.linalg.norm(v) == 0:
                v = self.codebook.vectors[s.slot]
            out[s.slot] = v / np.linalg.norm(v)
        return out

    def _decrypt(self, m: Membership, patterns: Sequence[ReleasedPattern]) -> list[dict[str, Any]]:
        """Decrypt, summarise and embed released patterns; write them to the cache."""
        cipher = self._cipher(m)
        items: list[dict[str, Any]] = []
        for rp in patterns:
            phrases: list[str] = []
            for ph in sorted(rp.phrases, key=lambda p: -p.noisy_contributors):
                try:
                    phrases.append(cipher.decrypt(rp.slot, ph.round_id, b64decode(ph.ciphertext, what="phrase")))
                except (CryptoError, InvalidInput):
                    logger.debug("undecryptable phrase in %s skipped", rp.pattern_id)
            statements: list[str] = []
            for st in rp.statements:
                try:
                    statements.append(cipher.decrypt(rp.slot, st.round_id, b64decode(st.ciphertext, what="statement")))
                except (CryptoError, InvalidInput):
                    logger.debug("undecryptable statement in %s skipped", rp.pattern_id)
            if not phrases and not statements:
                continue
            items.append({"rp": rp, "phrases": list(dict.fromkeys(phrases)), "statements": statements})
        if not items:
            return []
        # summary: the medoid statement (the one most like the others), else the phrases
        texts_to_embed: list[str] = []
        for it in items:
            sts = list(dict.fromkeys(it["statements"]))
            it["unique_statements"] = sts
            texts_to_embed.extend(sts)
        st_vecs = self.store.embedder.encode(texts_to_embed) if texts_to_embed else np.zeros((0, 1))
        pos = 0
        for it in items:
            sts = it["unique_statements"]
            if sts:
                v = st_vecs[pos:pos + len(sts)]
                pos += len(sts)
                it["summary"] = sts[int(np.argmax((v @ v.T).sum(axis=1)))]
            else:
                it["summary"] = "; ".join(it["phrases"])
        embs = self.store.embedder.encode([_pattern_text(it["summary"], it["phrases"]) for it in items])
        now = time.time()
        with self._cache.tx() as c:
            for it, e in zip(items, embs):
                rp = it["rp"]
                it["embedding"] = np.asarray(e, dtype=np.float32)
                c.execute(
                    "INSERT OR REPLACE INTO patterns VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (rp.pattern_id, rp.slot, it["summary"], json.dumps(it["phrases"]), json.dumps(it["statements"]),
                     rp.noisy_contributors, rp.verifications, rp.votes_up, rp.votes_down, rp.released_at_round,
                     it["embedding"].astype("<f4").tobytes(), now))
        return items

    def _to_federated(self, m: Membership, qvec: np.ndarray, row: dict[str, Any]) -> FederatedPattern:
        sim = float(np.dot(qvec, row["embedding"]))
        return FederatedPattern(
            pattern_id=row["pattern_id"], slot=row["slot"], summary=row["summary"], phrases=row["phrases"],
            statements=row["statements"], similarity=round(sim, 4),
            confidence=federated_confidence(sim, row["contributors"], m.federation.min_contributors),
            contributor_count=round(max(row["contributors"], float(m.federation.min_contributors)), 2),
            verification_count=row["verifications"],
            votes_up=row["votes_up"], votes_down=row["votes_down"], released_at_round=row["released_at_round"])

    def query(self, query: str, min_confidence: float = 0.8, max_results: int = 10) -> list[FederatedPattern]:
        """Ask the federation: rank released slots locally, fetch them padded with decoys,
        decrypt, re-rank by local embeddings, filter by confidence."""
        m = self._require()
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query must be a non-empty string")
        if not 0.0 <= min_confidence <= 1.0:
            raise InvalidInput("min_confidence must be in [0, 1]")
        if isinstance(max_results, bool) or not 1 <= int(max_results) <= 100:
            raise InvalidInput("max_results must be from 1 to 100")
        qvec = np.asarray(self.store.embedder.encode([query])[0], dtype=np.float32)
        released = self._released_slots(m)
        if not released:
            return []
        ids = sorted(released)
        # a DP centroid of few contributors is mostly noise; the public codebook vector of the
        # slot is the better guide then, so a slot scores the better of the two
        cb = self.codebook.vectors
        sims = np.asarray([max(float(np.dot(qvec, released[s])), float(np.dot(qvec, cb[s]))) for s in ids])
        wanted = [ids[i] for i in np.argsort(-sims)[:QUERY_TOP_SLOTS]]
        padded = _pad_with_decoys(wanted, ids, m.federation.slots)
        resp = self._call(m, "POST", "/v1/query", QueryResponse, QueryRequest(slots=padded))
        items = self._decrypt(m, resp.patterns)
        out = [self._to_federated(m, qvec, _item_row(it)) for it in items]
        out = [p for p in out if p.confidence >= min_confidence]
        out.sort(key=lambda p: (-p.confidence, -p.similarity))
        return out[: int(max_results)]

    def search_cache(self, query: str, k: int = 5) -> list[FederatedPattern]:
        """Search the local cache of released patterns (no network, no credits); patterns with
        cosine at or below RELEVANCE_FLOOR to the query are left out."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query must be a non-empty string")
        m = self.membership()
        rows = self._cache_rows()
        if not rows or m is None:
            return []
        qvec = np.asarray(self.store.embedder.encode([query])[0], dtype=np.float32)
        out = [p for p in (self._to_federated(m, qvec, r) for r in rows) if p.similarity > RELEVANCE_FLOOR]
        out.sort(key=lambda p: (-p.similarity, -p.confidence))
        return out[: max(1, int(k))]

    def _cache_rows(self) -> list[dict[str, Any]]:
        rows = self._cache.read("SELECT pattern_id, slot, summary, phrases, statements, contributors, verifications, "
                                "votes_up, votes_down, released_at_round, embedding FROM patterns")
        return [{"pattern_id": r[0], "slot": r[1], "summary": r[2], "phrases": json.loads(r[3]),
                 "statements": json.loads(r[4]), "contributors": r[5], "verifications": r[6], "votes_up": r[7],
                 "votes_down": r[8], "released_at_round": r[9],
                 "embedding": np.frombuffer(r[10], dtype="<f4").astype(np.float32)} for r in rows]

    def cache_size(self) -> int:
        return int(self._cache.read("SELECT COUNT(*) FROM patterns")[0][0])

    def _refresh_cache(self, m: Membership, fetch_new: bool) -> int:
        """Drop cached patterns whose slot is no longer released; optionally fetch new ones."""
        try:
            released = self._released_slots(m)
        except CoordinatorUnavailable:
            return 0
        cached = {int(r[0]) for r in self._cache.read("SELECT slot FROM patterns")}
        gone = cached - set(released)
        if gone:
            with self._cache.tx() as c:
                c.executemany("DELETE FROM patterns WHERE slot = ?", [(s,) for s in gone])
        new = sorted(set(released) - cached)
        if fetch_new and new:
            try:
                resp = self._call(m, "POST", "/v1/query", QueryResponse, QueryRequest(slots=new[:64]))
                self._decrypt(m, resp.patterns)
            except InsufficientCredits:
                logger.info("not enough credits to fetch newly released patterns into the cache")
        return len(gone)

    # ----- credits, verification, votes, downloads -------------------------------------------
    def get_credits(self) -> CreditBalance:
        m = self._require()
        return self._call(m, "GET", "/v1/credits", CreditBalance)

    def _cached(self, pattern_id: str) -> dict[str, Any]:
        for r in self._cache_rows():
            if r["pattern_id"] == pattern_id:
                return r
        raise NotFound(f"pattern {pattern_id!r} is not in the local cache; query or download it first")

    def verify(self, pattern_id: str) -> VerifyResult:
        """Confirm a released pattern, only if a non-private local memory supports it (cosine >=
        VERIFY_THRESHOLD to the pattern's text); otherwise refuse without contacting anyone."""
        m = self._require()
        row = self._cached(pattern_id)
        text = _pattern_text(row["summary"], row["phrases"])
        hits = self.store.recall(text, k=10, mode="semantic").hits
        best = next((h for h in hits if not is_private(h.memory)), None)
        if best is None or best.similarity < VERIFY_THRESHOLD:
            sim = 0.0 if best is None else best.similarity
            raise VerificationRefused(
                f"your memory does not support pattern {pattern_id} (best non-private similarity {sim:.2f}, "
                f"needs {VERIFY_THRESHOLD}); only patterns your own memory confirms can be verified")
        receipt = self._call(m, "POST", f"/v1/patterns/{pattern_id}/verify", ActionReceipt)
        return VerifyResult(pattern_id=pattern_id, verified=True, similarity=round(best.similarity, 4),
                            memory_id=best.memory.id, credits=receipt.credits)

    def vote(self, pattern_id: str, up: bool) -> VoteResult:
        m = self._require()
        if not isinstance(pattern_id, str) or not pattern_id:
            raise InvalidInput("pattern_id must be a non-empty string")
        receipt = self._call(m, "POST", f"/v1/patterns/{pattern_id}/vote", ActionReceipt, VoteRequest(up=bool(up)))
        return VoteResult(pattern_id=pattern_id, up=bool(up), detail=receipt.detail, credits=receipt.credits)

    def download_patterns(self) -> DownloadResult:
        """Fetch every released pattern into the local cache (costs the download price)."""
        m = self._require()
        resp = self._call(m, "GET", "/v1/patterns/download", DownloadResponse)
        items = self._decrypt(m, resp.patterns)
        return DownloadResult(patterns=len(items), charged=resp.charged, credits=resp.credits)

    # ----- deletion and leaving --------------------------------------------------------------
    def _clear_local_contributions(self) -> int:
        with self._outbox.tx() as c:
            n = int(c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            c.execute("DELETE FROM outbox")
            c.execute("DELETE FROM submitted")
        return n

    def delete_contributions(self) -> DeletionResult:
        """Withdraw everything this instance contributed (the coordinator recounts and withdraws)."""
        m = self._require()
        with self._sync_lock:
            cleared = self._clear_local_contributions()
            receipt = self._call(m, "DELETE", "/v1/contributions", DeletionReceipt)
        return DeletionResult(deleted_submissions=receipt.deleted_submissions,
                              withdrawn_patterns=receipt.withdrawn_patterns, local_outbox_cleared=cleared)

    def leave(self, force: bool = False) -> LeaveResult:
        """Delete all contributions, then forget the federation key, membership and cache.

        The identity key and the privacy ledger stay: privacy spent is spent. With ``force`` the
        local state is forgotten even when the coordinator cannot be reached."""
        m = self._require()
        self.disable_auto_sync(persist=False)
        with self._sync_lock:
            cleared = self._clear_local_contributions()
            try:
                receipt = self._call(m, "POST", "/v1/leave", DeletionReceipt)
            except CoordinatorUnavailable:
                if not force:
                    raise
                receipt = DeletionReceipt(deleted_submissions=0, withdrawn_patterns=0)
            with self._cache.tx() as c:
                c.execute("DELETE FROM patterns")
            with self._lock:
                self._membership_path.unlink(missing_ok=True)
                self._secagg.clear()
        return LeaveResult(federation_id=m.federation_id, deleted_submissions=receipt.deleted_submissions,
                           withdrawn_patterns=receipt.withdrawn_patterns, local_outbox_cleared=cleared)

    # ----- status and auto-sync --------------------------------------------------------------
    def status(self) -> FederationStatus:
        m = self.membership()
        if m is None:
            return FederationStatus(joined=False, instance_id=self.instance_id,
                                    auto_sync_running=self.auto_sync_running,
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
            ms = self._call(m, "GET", "/v1/status", MemberStatus)
            st.coordinator_reachable = True
            st.credits, st.current_round, st.last_released_round = ms.credits, ms.current_round, ms.last_released_round
        except CoordinatorUnavailable as exc:
            st.coordinator_reachable = False
            st.message += f"; {exc.message}"
        except ContinuumError as exc:  # reachable, but refuses us (e.g. no longer admitted)
            st.coordinator_reachable = True
            st.message += f"; the coordinator refused the status request: {exc.code}: {exc.message}"
        return st

    @property
    def auto_sync_running(self) -> bool:
        return self._auto_thread is not None and self._auto_thread.is_alive()

    def enable_auto_sync(self, interval_minutes: float = 15, contribute_on_sync: bool = True,
                         query_on_sync: bool = True) -> AutoSyncSettings:
        """Persist the setting and start the background thread (restarted when the server starts)."""
        if not (isinstance(interval_minutes, (int, float)) and 0 < interval_minutes <= 24 * 60):
            raise InvalidInput("interval_minutes must be in (0, 1440]")
        s = AutoSyncSettings(enabled=True, interval_minutes=float(interval_minutes),
                             contribute_on_sync=contribute_on_sync, query_on_sync=query_on_sync)
        self._update(auto_sync=s)
        self.start_auto_sync()
        return s

    def disable_auto_sync(self, persist: bool = True) -> AutoSyncSettings:
        self._auto_stop.set()
        t = self._auto_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=30)
        self._auto_thread = None
        if persist and self.membership() is not None:
            return self._update(auto_sync=AutoSyncSettings(enabled=False)).auto_sync
        return AutoSyncSettings(enabled=False)

    def start_auto_sync(self) -> bool:
        """Start the background thread if the persisted setting says so; True if running."""
        m = self.membership()
        if m is None or not m.auto_sync.enabled:
            return False
        if self.auto_sync_running:
            return True
        self._auto_stop = threading.Event()
        self._auto_thread = threading.Thread(target=self._auto_loop, args=(self._auto_stop,),
                                             name="federation-auto-sync", daemon=True)
        self._auto_thread.start()
        return True

    def has_new_patterns(self, min_confidence: float = 0.7) -> bool:
        """True when the patterns a contribution would send differ from the last contributed ones."""
        m = self._require()
        planned, _ = self._plan(m, min_confidence, None)
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

    def _auto_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.auto_sync_once()
            except ContinuumError as exc:
                logger.info("auto-sync pass failed (%s); retrying at the next interval", exc.code)
            except Exception:  # the thread must survive anything; report and continue
                logger.exception("auto-sync pass failed")
            m = self.membership()
            if m is None or not m.auto_sync.enabled:
                return
            stop.wait(m.auto_sync.interval_minutes * 60)


class FederationStateError(FederationError):
    """membership.json exists but cannot be read."""

    code = "federation_state_corrupt"


class _Raw(BaseModel):
    """Pass-through for secagg server messages (validated by their own models afterwards)."""

    model_config = ConfigDict(extra="allow")


def _pad_with_decoys(wanted: Sequence[int], released: Sequence[int], slots: int) -> list[int]:
    """Wanted slots plus random decoys, QUERY_PADDED_SLOTS in all, shuffled. Decoys come first
    from the other *released* slots (so the request does not single out the released ones the
    query wants; with few releases, all of them are asked for), then from the rest."""
    rng = secrets.SystemRandom()
    need = max(0, QUERY_PADDED_SLOTS - len(wanted))
    taken = set(wanted)
    rel_others = [s for s in released if s not in taken]
    decoys = rng.sample(rel_others, min(need, len(rel_others)))
    taken.update(decoys)
    rest = [s for s in range(slots) if s not in taken]
    decoys += rng.sample(rest, min(need - len(decoys), len(rest)))
    out = list(wanted) + decoys
    rng.shuffle(out)
    return out


def _pattern_text(summary: str, phrases: Sequence[str]) -> str:
    extra = [p for p in phrases if p.lower() not in summary.lower()]
    return summary if not extra else f"{summary} ({', '.join(extra)})"


def _item_row(it: dict[str, Any]) -> dict[str, Any]:
    rp: ReleasedPattern = it["rp"]
    return {"pattern_id": rp.pattern_id, "slot": rp.slot, "summary": it["summary"], "phrases": it["phrases"],
            "statements": it["statements"], "contributors": rp.noisy_contributors, "verifications": rp.verifications,
            "votes_up": rp.votes_up, "votes_down": rp.votes_down, "released_at_round": rp.released_at_round,
            "embedding": it["embedding"]}


def _error_from(resp: httpx.Response) -> ContinuumError:
    """Map an ErrorBody to the typed exception of its code, keeping the server's message."""
    try:
        body = ErrorBody.model_validate_json(resp.content)
    except ValidationError:
        return CoordinatorUnavailable(f"the coordinator answered HTTP {resp.status_code} without an error body")
    cls = _ERROR_TYPES.get(body.code)
    if cls is None:
        return CoordinatorUnavailable(f"coordinator error {body.code}: {body.message}")
    return cls(body.message)
