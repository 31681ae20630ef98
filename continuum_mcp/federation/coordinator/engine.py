"""The coordinator's round engine: rosters, secure aggregation, DP release, credits, deletion.

Why one engine object with one lock: a round is a small state machine (collecting -> advertise ->
share_keys -> masked_input -> unmask -> released | aborted) whose transitions are triggered both by
requests (the last expected message of a phase) and by time (a phase deadline, the round
schedule). Serialising transitions under one lock keeps them simple and correct; the durable part
of every transition is one SQLite transaction, so a crash at any point leaves a state from which
:meth:`RoundEngine.recover` continues (a fresh secure-aggregation attempt of the same round from the
stored submissions; the ``SecAggServer`` holds no secrets worth keeping).

Release, per round: the secure sum gives per-slot noisy embedding sums -> unit DP centroids; the
coordinator's own distinct-contributor counts over the rolling window (slots and (slot, phrase
token)) get Gaussian noise with the count sigma of the mode and the largest contribution level in
the window, and are selected by DP thresholding plus the hard floor ``min_contributors`` (``open``:
hard floor only, which is k-anonymity, not DP). Released counts are always the noisy ones.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from continuum_mcp.federation.coordinator.store import LEDGER_DB_NAME, CoordinatorStore, day_start
from continuum_mcp.privacy.dp import add_gaussian_noise, gdp_epsilon
from continuum_mcp.errors import (
    AggregationAborted,
    Conflict,
    CryptoError,
    Forbidden,
    InsufficientCredits,
    InvalidInput,
    NotFound,
    PrivacyBudgetExceeded,
    WrongPhase,
)
from continuum_mcp.crypto.identity import Verifier
from continuum_mcp.privacy.ledger import PrivacyLedger
from continuum_mcp.privacy.modes import PrivacyPolicy, ReleaseRequirement
from continuum_mcp.federation.protocol import (
    ActionReceipt,
    ContributionReceipt,
    ContributionRequest,
    CreditBalance,
    CreditRules,
    DeletionReceipt,
    DownloadResponse,
    MemberStatus,
    ModeName,
    QueryRequest,
    QueryResponse,
    ReleasedPattern,
    RoundState,
    slot_vector_layout,
)
from continuum_mcp.secagg._core import (
    AggregateResult,
    KeyRoster,
    SecAggParams,
    SecAggServer,
    ShareInbox,
    SignedMessage,
    SurvivorList,
)

logger = logging.getLogger(__name__)

SECAGG_PHASES = ("advertise", "share_keys", "masked_input", "unmask")
_PATTERN_ID = re.compile(r"^p-(\d{1,9})$")
_MODE_STRICTNESS = {"open": 0, "balanced": 1, "high": 2}


class RoundConfig(BaseModel):
    """Everything the engine needs to know about the federation (immutable, passed in)."""

    model_config = ConfigDict(frozen=True)

    federation_id: str
    privacy_mode: ModeName = "high"
    min_contributors: int = Field(default=3, ge=1)
    require_contribution: bool = True
    slots: int = Field(default=256, ge=1)
    dim: int = Field(default=384, ge=1)
    phase_timeout_seconds: float = Field(default=60.0, gt=0)
    round_interval_seconds: float = Field(default=86400.0, gt=0)
    window_days: float = Field(default=30.0, gt=0)
    quality_vote_threshold: int = Field(default=3, ge=1)
    credit_rules: CreditRules = CreditRules()


def mode_allows(federation_mode: str, member_mode: str) -> bool:
    """A member joins only a federation whose mode is at least as private as its own."""
    return _MODE_STRICTNESS[federation_mode] >= _MODE_STRICTNESS[member_mode]


def parse_pattern_id(pattern_id: str, slots: int) -> int:
    m = _PATTERN_ID.match(pattern_id)
    if m is None or int(m.group(1)) >= slots:
        raise NotFound(f"no released pattern {pattern_id!r}")
    return int(m.group(1))


@dataclass
class _Attempt:
    """In-memory state of the running secure-aggregation attempt (rebuilt fresh after a restart)."""

    round_id: int
    attempt: int
    params: SecAggParams
    server: SecAggServer
    phase: str
    expected: set[str]
    deadline: float
    posted: set[str] = field(default_factory=set)
    key_roster: KeyRoster | None = None
    inboxes: dict[str, ShareInbox] | None = None
    survivors: SurvivorList | None = None


class RoundEngine:
    """Rounds, release, credits and deletion on top of a :class:`CoordinatorStore`."""

    def __init__(
        self,
        store: CoordinatorStore,
        config: RoundConfig,
        verifier: Verifier,
        policy: PrivacyPolicy,
    ) -> None:
        self.store = store
        self.config = config
        self.policy = policy
        self.mode = policy.mode(config.privacy_mode)
        self._verifier = verifier
        self._lock = threading.RLock()
        self._attempt: _Attempt | None = None
        self._requirements: dict[tuple[str, str], ReleaseRequirement] = {}
        self._ledger_path = store.dir / LEDGER_DB_NAME

    # ------------------------------------------------------------------------------ helpers

    def _ledger(self, instance_id: str) -> PrivacyLedger:
        return PrivacyLedger(
            self._ledger_path,
            identity=instance_id,
            budget_epsilon=self.mode.budget_epsilon,
            delta=self.mode.delta,
            window=timedelta(days=self.config.window_days),
        )

    def ledger_spent(self, instance_id: str) -> float:
        with self._ledger(instance_id) as ledger:
            return ledger.spent()

    def _round_label(self, round_id: int) -> str:
        return f"{self.config.federation_id}/r{round_id}"

    def round_epsilon(self) -> float:
        """Epsilon of one round at the mode's delta, computed from the spend the ledgers record."""
        spend = self.mode.round_spend()
        assert spend.mu is not None
        return gdp_epsilon(spend.mu, self.mode.delta - spend.extra_delta)

    def _requirement(self, level: str, component: str) -> ReleaseRequirement:
        key = (level, component)
        if key not in self._requirements:
            self._requirements[key] = self.policy.release_requirement(self.mode.name, level, component)  # type: ignore[arg-type]
        return self._requirements[key]

    def make_params(self, round_id: int, attempt: int, roster: list[str]) -> SecAggParams:
        """SecAggParams with the documented calibration: noise_sigma = mode.sigma * quantised
        sensitivity, clip norm sqrt(centroid share of the round's unit norm)."""
        total, _ = slot_vector_layout(self.config.slots, self.config.dim)
        clip = math.sqrt(self.mode.allocation.centroids)
        session = f"{self.config.federation_id}/r{round_id}/a{attempt}"
        probe = SecAggParams.create(session, round_id, roster, total, clip, self.mode.sigma * clip)
        sensitivity = probe.quantised_sensitivity
        params = SecAggParams.create(
            session, round_id, roster, total, clip, self.mode.sigma * sensitivity, frac_bits=probe.frac_bits
        )
        if params.noise_sigma + 1e-12 < self.mode.sigma * params.quantised_sensitivity:
            raise InvalidInput("secure aggregation noise is below the mode's calibration")
        return params

    # ------------------------------------------------------------------------------ life cycle

    def recover(self) -> None:
        """Open round 0 on a fresh store; after a restart mid-secagg, start a new attempt."""
        with self._lock, self.store.transaction() as conn:
            now = time.time()
            cur = self.store.current_round(conn)
            if cur is None:
                self.store.open_round(conn, 0, now, self.config.round_interval_seconds)
                return
            if cur.phase in SECAGG_PHASES:
                logger.info("round %d was in %s at shutdown: starting attempt %d", cur.round_id, cur.phase, cur.attempt + 1)
                if not self._fix_roster(conn, cur.round_id, cur.attempt + 1, now):
                    self.store.set_round(
                        conn, cur.round_id, phase="collecting", attempt=cur.attempt + 1, phase_deadline=None,
                        params_json=None, next_close_at=now + self.config.round_interval_seconds,
                    )

    def _eligible(self, members: list[str]) -> list[str]:
        """Members whose coordinator-side ledger affords this round (others wait, nothing lost)."""
        out = []
        spend = self.mode.round_spend()
        for m in members:
            with self._ledger(m) as ledger:
                if ledger.check(spend).allowed:
                    out.append(m)
                else:
                    logger.info("member %s is past its privacy budget; its submission waits", m)
        return out

    def _fix_roster(self, conn: Any, round_id: int, attempt: int, now: float) -> bool:
        submitters = self.store.pending_submitters(conn, round_id)
        roster = self._eligible(sorted(submitters))
        if len(roster) < max(3, self.config.min_contributors):
            return False
        params = self.make_params(round_id, attempt, roster)
        keys = {}
        for m in roster:
            member = self.store.get_member(m, conn)
            if member is not None:
                keys[m] = member.public_key
        server = SecAggServer(params, self._verifier, keys)
        deadline = now + self.config.phase_timeout_seconds
        self.store.set_round(
            conn, round_id, attempt=attempt, phase="advertise", phase_deadline=deadline,
            params_json=CoordinatorStore.params_dump(params),
        )
        self._attempt = _Attempt(round_id, attempt, params, server, "advertise", set(roster), deadline)
        return True

    def close_round(self) -> RoundState:
        """Fix the roster of the collecting round (or carry it over when too few submitted)."""
        with self._lock:
            with self.store.transaction() as conn:
                now = time.time()
                cur = self.store.current_round(conn)
                assert cur is not None
                if cur.phase != "collecting":
                    raise WrongPhase(f"round {cur.round_id} is already in phase {cur.phase}")
                if not self._fix_roster(conn, cur.round_id, cur.attempt, now):
                    self.store.set_round(conn, cur.round_id, next_close_at=now + self.config.round_interval_seconds)
                    logger.info("round %d: too few submitters, carried over", cur.round_id)
            return self.state(None)

    def tick(self, now: float | None = None) -> None:
        """Advance on deadlines and the schedule (called by the background thread)."""
        now = time.time() if now is None else now
        with self._lock:
            cur = self.store.current_round()
            if cur is None:
                return
            if cur.phase == "collecting" and now >= cur.next_close_at:
                try:
                    self.close_round()
                except WrongPhase:
                    pass
            elif cur.phase in SECAGG_PHASES:
                a = self._attempt
                if a is None:
                    self.recover()
                elif now >= a.deadline:
                    logger.info("round %d %s deadline: %d of %d posted", a.round_id, a.phase, len(a.posted), len(a.expected))
                    self._advance(now)

    # ------------------------------------------------------------------------------ secagg

    def _current_attempt(self, round_id: int) -> _Attempt:
        a = self._attempt
        if a is None or a.round_id != round_id:
            cur = self.store.current_round()
            if cur is None or round_id > cur.round_id or round_id < 0:
                raise NotFound(f"round {round_id} does not exist")
            raise WrongPhase(f"round {round_id} is not aggregating (current round {cur.round_id}, phase {cur.phase})")
        return a

    def receive(self, round_id: int, kind: str, caller: str, message: SignedMessage) -> None:
        """Accept one member's secagg message for the current phase; advance when all posted."""
        with self._lock:
            a = self._current_attempt(round_id)
            if a.phase != kind:
                raise WrongPhase(f"round {round_id} attempt {a.attempt} is in phase {a.phase}, not {kind}")
            if message.envelope.instance_id != caller:
                raise Forbidden("the secure-aggregation message is signed by another identity than the request")
            if caller not in a.params.roster:
                raise Forbidden("you are not in this round's roster")
            if caller in a.posted:
                raise Conflict(f"your {kind} message was already accepted")
            if caller not in a.expected:
                raise Forbidden(f"you were dropped from this attempt before the {kind} phase")
            handler = {
                "advertise": a.server.receive_advertisement,
                "share_keys": a.server.receive_shares,
                "masked_input": a.server.receive_masked_input,
                "unmask": a.server.receive_unmasking,
            }[kind]
            handler(message)
            with self.store.transaction() as conn:
                self.store.record_secagg(conn, round_id, a.attempt, kind, caller, message.model_dump_json())
            a.posted.add(caller)
            if a.posted >= a.expected:
                self._advance(time.time())

    def _set_phase(self, a: _Attempt, phase: str, expected: set[str], now: float) -> None:
        a.phase, a.expected, a.posted = phase, expected, set()
        a.deadline = now + self.config.phase_timeout_seconds
        with self.store.transaction() as conn:
            self.store.set_round(conn, a.round_id, phase=phase, phase_deadline=a.deadline)

    def _advance(self, now: float) -> None:
        a = self._attempt
        assert a is not None
        try:
            if a.phase == "advertise":
                a.key_roster = a.server.close_advertisements()
                self._set_phase(a, "share_keys", {m.envelope.instance_id for m in a.key_roster.adverts}, now)
            elif a.phase == "share_keys":
                a.inboxes = a.server.close_shares()
                self._set_phase(a, "masked_input", set(a.inboxes), now)
            elif a.phase == "masked_input":
                a.survivors = a.server.close_masked_inputs()
                self._set_phase(a, "unmask", set(a.survivors.survivors), now)
            elif a.phase == "unmask":
                result = a.server.finalize()
                self._release(a, result)
        except (AggregationAborted, CryptoError, InvalidInput) as exc:
            logger.warning("round %d attempt %d aborted in %s: %s", a.round_id, a.attempt, a.phase, exc)
            self._abort(a)

    def _abort(self, a: _Attempt) -> None:
        now = time.time()
        with self.store.transaction() as conn:
            self.store.set_round(conn, a.round_id, phase="aborted", phase_deadline=None, finished_at=now)
            self.store.open_round(conn, a.round_id + 1, now, self.config.round_interval_seconds)
            moved = self.store.carry_over(conn, a.round_id, a.round_id + 1)
        logger.info("round %d aborted; %d submissions carried over to round %d", a.round_id, moved, a.round_id + 1)
        self._attempt = None

    def key_roster(self, round_id: int, caller: str) -> KeyRoster:
        with self._lock:
            a = self._current_attempt(round_id)
            if caller not in a.params.roster:
                raise Forbidden("you are not in this round's roster")
            if a.key_roster is None:
                raise WrongPhase("the key roster is not ready yet (phase advertise)")
            return a.key_roster

    def inbox(self, round_id: int, caller: str) -> ShareInbox:
        with self._lock:
            a = self._current_attempt(round_id)
            if a.inboxes is None:
                raise WrongPhase(f"share inboxes are not ready yet (phase {a.phase})")
            if caller not in a.inboxes:
                raise Forbidden("you are not among the members that shared keys in this attempt")
            return a.inboxes[caller]

    def survivors(self, round_id: int, caller: str) -> SurvivorList:
        with self._lock:
            a = self._current_attempt(round_id)
            if a.survivors is None:
                raise WrongPhase(f"the survivor list is not ready yet (phase {a.phase})")
            if caller not in a.survivors.survivors:
                raise Forbidden("your masked input is not part of this attempt's sum")
            return a.survivors

    # ------------------------------------------------------------------------------ release

    def _release(self, a: _Attempt, result: AggregateResult) -> None:
        now = time.time()
        r = a.round_id
        survivors = list(result.contributors)
        spend = self.mode.round_spend()
        for m in survivors:  # idempotent per round label: a retried release never spends twice
            try:
                with self._ledger(m) as ledger:
                    ledger.spend(spend, round_id=self._round_label(r))
            except PrivacyBudgetExceeded:
                logger.warning("member %s is past its privacy budget; spend not recorded", m)
        dim = self.config.dim
        centroids: dict[int, np.ndarray] = {}
        for s in range(self.config.slots):
            block = result.float_sum[s * dim : (s + 1) * dim]
            norm = float(np.linalg.norm(block))
            if norm > 0 and math.isfinite(norm):
                centroids[s] = (block / norm).astype("<f4")
        rules = self.config.credit_rules
        with self.store.transaction() as conn:
            dropped = [m for m in a.params.roster if m not in set(survivors)]
            self.store.open_round(conn, r + 1, now, self.config.round_interval_seconds)
            self.store.carry_over(conn, r, r + 1, dropped)
            counts = self.store.pending_submitters(conn, r)
            self.store.mark_released(conn, r, survivors, now)
            for m in survivors:
                earned_today = self.store.sum_kind_since(conn, m, "pattern", day_start(now))
                amount = min(counts.get(m, 0) * rules.earn_per_pattern, max(0.0, rules.earn_daily_limit - earned_today))
                if amount > 0:
                    self.store.journal(conn, m, amount, "pattern", f"r{r}", now)
            # only slots some survivor contributed to this round get a new centroid
            contributed = {
                int(row[0])
                for row in conn.execute(
                    "SELECT DISTINCT slot FROM submissions WHERE released_round=?", (r,)
                ).fetchall()
            }
            self._recompute(conn, r, now, {s: v for s, v in centroids.items() if s in contributed})
            # a member still in the carried-over round 'collecting' keeps its other pending rows too
            self.store.carry_over(conn, r, r + 1)
            self.store.set_round(conn, r, phase="released", phase_deadline=None, finished_at=now, epsilon=self.round_epsilon())
        logger.info("round %d released with %d contributors (%d dropped)", r, len(survivors), len(dropped))
        self._attempt = None

    def _noisy(self, count: int, sigma: float) -> float:
        return float(add_gaussian_noise(np.array([float(count)]), sigma)[0])

    def _recompute(
        self, conn: Any, round_id: int, now: float, centroids: dict[int, np.ndarray] | None, *, withdraw_only: bool = False
    ) -> set[int]:
        """Recount the window, select what is released, and return the pattern slots withdrawn.

        Items whose true count did not change keep their noisy count (no fresh draw, so repeated
        recomputation gives no averaging attack). ``withdraw_only`` (deletion) never releases
        anything new: it re-evaluates only items that are released now.
        """
        store = self.store
        floor = self.config.min_contributors
        window_start = now - self.config.window_days * 86400.0
        before = store.pattern_slots(conn)
        levels = store.window_levels(conn, window_start)
        level = max(levels, key=lambda n: self.policy.level(n).max_slots) if levels else "standard"
        dp_select = self.mode.name != "open"
        slot_req = self._requirement(level, "slots")
        phrase_req = self._requirement(level, "phrases")

        slot_counts = store.window_slot_counts(conn, window_start)
        old_slots = store.released_slot_rows(conn)
        selected_slots: set[int] = set()
        for slot in set(slot_counts) | set(old_slots):
            c = slot_counts.get(slot, 0)
            old = old_slots.get(slot)
            if withdraw_only and old is None:
                continue
            noisy = old[1] if old is not None and old[0] == c else self._noisy(c, slot_req.count_sigma)
            keep = c >= floor and (not dp_select or noisy > slot_req.threshold)
            if not keep:
                conn.execute("DELETE FROM released_slots WHERE slot=?", (slot,))
                continue
            selected_slots.add(slot)
            vec = centroids.get(slot) if centroids else None
            blob = vec.tobytes() if vec is not None else (old[2] if old is not None else None)
            rel_round = old[3] if old is not None else round_id
            conn.execute(
                "INSERT OR REPLACE INTO released_slots (slot, true_count, noisy_count, vector, released_at_round)"
                " VALUES (?,?,?,?,?)",
                (slot, c, noisy, blob, rel_round),
            )

        phrase_counts = store.window_phrase_counts(conn, window_start, self.policy.max_phrases_per_pattern)
        old_phrases = store.released_phrase_rows(conn)
        for key in set(phrase_counts) | set(old_phrases):
            slot, token = key
            c = phrase_counts.get(key, 0)
            old_p = old_phrases.get(key)
            if withdraw_only and old_p is None:
                continue
            noisy = old_p[1] if old_p is not None and old_p[0] == c else self._noisy(c, phrase_req.count_sigma)
            keep = c >= floor and (not dp_select or noisy > phrase_req.threshold)
            ct = store.latest_phrase_ciphertext(conn, window_start, slot, token) if keep else None
            if ct is None:
                conn.execute("DELETE FROM released_phrases WHERE slot=? AND token=?", (slot, token))
                continue
            conn.execute(
                "INSERT OR REPLACE INTO released_phrases (slot, token, ciphertext, ct_round, true_count, noisy_count,"
                " released_at_round) VALUES (?,?,?,?,?,?,?)",
                (slot, token, ct[0], ct[1], c, noisy, old_p[2] if old_p is not None else round_id),
            )

        # Statements: only in open mode, the contributors' (encrypted, scrubbed) statements of
        # slots that pass the hard floor. Balanced would need statement tokens to select a
        # statement "as a whole"; the v1 protocol has none, so balanced releases no statements.
        old_statements = {
            int(r[0]): int(r[1]) for r in conn.execute("SELECT submission_id, released_at_round FROM released_statements")
        }
        conn.execute("DELETE FROM released_statements")
        if self.mode.name == "open":
            for slot in selected_slots:
                for sid, ct, ct_round in store.window_statements(conn, window_start, slot):
                    if withdraw_only and sid not in old_statements:
                        continue
                    conn.execute(
                        "INSERT INTO released_statements (submission_id, slot, ciphertext, ct_round, released_at_round)"
                        " VALUES (?,?,?,?,?)",
                        (sid, slot, ct, ct_round, old_statements.get(sid, round_id)),
                    )
        after = store.pattern_slots(conn)
        for slot in after - before:
            conn.execute(
                "INSERT INTO patterns (slot, released_at_round) VALUES (?, ?) "
                "ON CONFLICT(slot) DO UPDATE SET released_at_round=excluded.released_at_round",
                (slot, round_id),
            )
        return before - after

    # ------------------------------------------------------------------------------ contributions

    def submit(self, caller: str, request: ContributionRequest) -> ContributionReceipt:
        member = self.store.get_member(caller)
        if member is None:
            raise NotFound("not a member")
        slots = [p.slot for p in request.patterns]
        if max(slots) >= self.config.slots:
            raise InvalidInput(f"patterns.slot must be below {self.config.slots} (the codebook has {self.config.slots} slots)")
        if len(set(slots)) != len(slots):
            raise InvalidInput("patterns.slot: at most one pattern per slot per round")
        cap = self.policy.level(member.level).max_slots
        if len(slots) > cap:
            raise InvalidInput(f"patterns: level {member.level} allows at most {cap} patterns per round")
        for p in request.patterns:
            tokens = [ph.token for ph in p.phrases]
            if len(set(tokens)) != len(tokens):
                raise InvalidInput("patterns.phrases.token: duplicate phrase token in one pattern")
        with self._lock:
            with self.store.transaction() as conn:
                cur = self.store.current_round(conn)
                assert cur is not None
                if request.round_id != cur.round_id or cur.phase != "collecting":
                    raise WrongPhase(
                        f"contributions go to round {cur.round_id} while it is collecting (it is {cur.phase}); "
                        "re-encrypt for the current round and retry"
                    )
                self.store.replace_submission(conn, caller, cur.round_id, request.patterns)
                balance = self.credit_balance(conn, caller, time.time())
        return ContributionReceipt(
            round_id=request.round_id, accepted_patterns=len(slots), pending_credits=balance.pending
        )

    def delete_contributions(self, caller: str) -> DeletionReceipt:
        with self._lock, self.store.transaction() as conn:
            cur = self.store.current_round(conn)
            n, _slots = self.store.delete_member_submissions(conn, caller)
            withdrawn = self._recompute(conn, cur.round_id if cur else 0, time.time(), None, withdraw_only=True)
        return DeletionReceipt(deleted_submissions=n, withdrawn_patterns=len(withdrawn))

    def leave(self, caller: str) -> DeletionReceipt:
        with self._lock, self.store.transaction() as conn:
            cur = self.store.current_round(conn)
            n, _slots = self.store.delete_member_submissions(conn, caller)
            withdrawn = self._recompute(conn, cur.round_id if cur else 0, time.time(), None, withdraw_only=True)
            conn.execute("DELETE FROM votes WHERE instance_id=?", (caller,))
            conn.execute("DELETE FROM verifications WHERE instance_id=?", (caller,))
            conn.execute("DELETE FROM members WHERE instance_id=?", (caller,))
        return DeletionReceipt(deleted_submissions=n, withdrawn_patterns=len(withdrawn))

    # ------------------------------------------------------------------------------ state views

    def state(self, caller: str | None, round_id: int | None = None) -> RoundState:
        with self._lock:
            row = self.store.current_round() if round_id is None else self.store.get_round(round_id)
            if row is None:
                raise NotFound(f"round {round_id} does not exist")
            with self.store.reading() as conn:
                if row.phase == "released":
                    subs = conn.execute(
                        "SELECT COUNT(DISTINCT instance_id) FROM submissions WHERE released_round=?", (row.round_id,)
                    ).fetchone()[0]
                    mine = caller is not None and conn.execute(
                        "SELECT 1 FROM submissions WHERE released_round=? AND instance_id=? LIMIT 1", (row.round_id, caller)
                    ).fetchone() is not None
                else:
                    submitters = self.store.pending_submitters(conn, row.round_id)
                    subs, mine = len(submitters), caller in submitters
            a = self._attempt if self._attempt is not None and self._attempt.round_id == row.round_id else None
            in_roster = bool(a is not None and caller in a.params.roster)
            pending = a.phase if a is not None and caller in a.expected and caller not in a.posted else None
            deadline = None if row.phase_deadline is None else datetime.fromtimestamp(row.phase_deadline, tz=timezone.utc)
            return RoundState(
                round_id=row.round_id,
                attempt=row.attempt,
                phase=row.phase,  # type: ignore[arg-type]
                phase_deadline=deadline,
                submissions=int(subs),
                you_submitted=bool(mine),
                you_in_roster=in_roster,
                you_pending=pending,  # type: ignore[arg-type]
                params=None if row.params_json is None else json.loads(row.params_json),
                epsilon_spent=row.epsilon,
            )

    # ------------------------------------------------------------------------------ credits

    def credit_balance(self, conn: Any, caller: str, now: float) -> CreditBalance:
        rules = self.config.credit_rules
        earned, spent = self.store.month_totals(conn, caller, now)
        pending_rows = conn.execute(
            "SELECT COUNT(*) FROM submissions WHERE instance_id=? AND status='pending'", (caller,)
        ).fetchone()[0]
        earned_today = self.store.sum_kind_since(conn, caller, "pattern", day_start(now))
        pending = min(pending_rows * rules.earn_per_pattern, max(0.0, rules.earn_daily_limit - earned_today))
        used = self.store.count_kind_since(conn, caller, "free_query", day_start(now))
        free_left = max(0, rules.free_queries_per_day - used) if self.config.require_contribution else rules.free_queries_per_day
        return CreditBalance(
            available=self.store.balance(conn, caller),
            earned_this_month=earned,
            spent_this_month=spent,
            pending=pending,
            free_queries_left_today=free_left,
        )

    def credits(self, caller: str) -> CreditBalance:
        with self.store.reading() as conn:
            return self.credit_balance(conn, caller, time.time())

    def _charge(self, conn: Any, caller: str, cost: float, kind: str, ref: str) -> None:
        """Check and debit in the caller's IMMEDIATE transaction: never negative, never twice."""
        if cost <= 0:
            return
        balance = self.store.balance(conn, caller)
        if balance + 1e-9 < cost:
            raise InsufficientCredits(
                f"this needs {cost:g} credits and you have {balance:g}; contribute patterns or verify "
                "released ones to earn credits"
            )
        self.store.journal(conn, caller, -cost, kind, ref)

    def query(self, caller: str, request: QueryRequest) -> QueryResponse:
        member = self.store.get_member(caller)
        if member is None:
            raise NotFound("not a member")
        rules = self.config.credit_rules
        ref = secrets.token_hex(12)
        with self.store.transaction() as conn:
            now = time.time()
            charged, free = 0.0, False
            if self.config.require_contribution:
                used = self.store.count_kind_since(conn, caller, "free_query", day_start(now))
                free = used < rules.free_queries_per_day
                charged = 0.0 if free else rules.cost_query
                if request.priority and member.level != "extensive":
                    charged += rules.cost_priority
                self._charge(conn, caller, charged, "query", ref)
                if free:
                    self.store.journal(conn, caller, 0.0, "free_query", ref, now)
            patterns = self.store.released_patterns(conn, [s for s in request.slots if 0 <= s < self.config.slots])
            balance = self.credit_balance(conn, caller, now)
        return QueryResponse(
            patterns=[ReleasedPattern.model_validate(p) for p in patterns], charged=charged, free_tier=free, credits=balance
        )

    def download(self, caller: str) -> DownloadResponse:
        rules = self.config.credit_rules
        with self.store.transaction() as conn:
            charged = rules.cost_download if self.config.require_contribution else 0.0
            self._charge(conn, caller, charged, "download", secrets.token_hex(12))
            patterns = self.store.released_patterns(conn, None)
            balance = self.credit_balance(conn, caller, time.time())
        return DownloadResponse(patterns=[ReleasedPattern.model_validate(p) for p in patterns], charged=charged, credits=balance)

    def verify(self, caller: str, pattern_id: str) -> ActionReceipt:
        slot = parse_pattern_id(pattern_id, self.config.slots)
        with self.store.transaction() as conn:
            if slot not in self.store.pattern_slots(conn):
                raise NotFound(f"no released pattern {pattern_id!r}")
            if caller in self.store.slot_contributors(conn, slot):
                raise Forbidden("you contributed to this pattern; only other members can verify it")
            if conn.execute("SELECT 1 FROM verifications WHERE slot=? AND instance_id=?", (slot, caller)).fetchone():
                raise Conflict("you already verified this pattern")
            now = time.time()
            conn.execute("INSERT INTO verifications VALUES (?,?,?)", (slot, caller, now))
            self.store.journal(conn, caller, self.config.credit_rules.earn_per_verification, "verify", pattern_id, now)
            balance = self.credit_balance(conn, caller, now)
        return ActionReceipt(credits=balance, detail=f"verified {pattern_id}")

    def vote(self, caller: str, pattern_id: str, up: bool) -> ActionReceipt:
        slot = parse_pattern_id(pattern_id, self.config.slots)
        with self.store.transaction() as conn:
            if slot not in self.store.pattern_slots(conn):
                raise NotFound(f"no released pattern {pattern_id!r}")
            if caller in self.store.slot_contributors(conn, slot):
                raise Forbidden("you contributed to this pattern; you cannot vote on it")
            now = time.time()
            conn.execute("INSERT OR REPLACE INTO votes VALUES (?,?,?,?)", (slot, caller, int(up), now))
            ups = conn.execute("SELECT COUNT(*) FROM votes WHERE slot=? AND up=1", (slot,)).fetchone()[0]
            downs = conn.execute("SELECT COUNT(*) FROM votes WHERE slot=? AND up=0", (slot,)).fetchone()[0]
            detail = f"votes {ups} up, {downs} down"
            flag = conn.execute("SELECT quality_credited FROM patterns WHERE slot=?", (slot,)).fetchone()
            if ups - downs >= self.config.quality_vote_threshold and flag is not None and not flag[0]:
                conn.execute("UPDATE patterns SET quality_credited=1 WHERE slot=?", (slot,))
                window_start = now - self.config.window_days * 86400.0
                for m in self.store.slot_contributors(conn, slot, window_start):
                    self.store.journal(conn, m, self.config.credit_rules.earn_per_quality_release, "quality", pattern_id, now)
                detail += "; quality threshold reached, contributors credited"
            balance = self.credit_balance(conn, caller, now)
        return ActionReceipt(credits=balance, detail=detail)

    def member_status(self, caller: str) -> MemberStatus:
        member = self.store.get_member(caller)
        if member is None:
            raise NotFound("not a member")
        cur = self.store.current_round()
        with self.store.reading() as conn:
            balance = self.credit_balance(conn, caller, time.time())
            last = conn.execute("SELECT MAX(round_id) FROM rounds WHERE phase='released'").fetchone()[0]
        return MemberStatus(
            instance_id=caller,
            contribution_level=member.level,  # type: ignore[arg-type]
            privacy_mode=member.mode,  # type: ignore[arg-type]
            joined_at=datetime.fromtimestamp(member.joined_at, tz=timezone.utc),
            credits=balance,
            epsilon_spent_window=self.ledger_spent(caller),
            current_round=cur.round_id if cur else 0,
            last_released_round=None if last is None else int(last),
        )

