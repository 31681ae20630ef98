"""The coordinator's round engine: the round state machine and the secure-aggregation host.

Why transitions in store transactions, and no state only in memory: a round is a small state
machine (collecting -> advertise -> share_keys -> masked_input -> unmask -> released | aborted) whose
transitions are triggered both by requests (the last expected message of a phase) and by time (a
phase deadline, the round schedule), and several coordinator processes on one database may serve
it, any of which may die mid-round. Every transition is one store write transaction (the store
serialises writers across processes), and the secure-aggregation attempt is an append-only log in
the store (:mod:`._attempt`, :mod:`._attempt_sql`): each accepted message and each phase close is
written in the transaction that accepts it. A process keeps only a *cache* of the running attempt,
caught up from the log (replaying the records it has not seen) at the start of every request under
that transaction, so any process can take the next message or the next deadline, and a crash at
any point leaves a state that :meth:`RoundEngine.recover` (or any other process) continues. The
engine lock only serialises this process's threads around its cache. Time comes from the injected
``now`` clock, so tests drive the schedule directly.

Release v2, per round: a round is one release window (its scheduled close is the window's end).
The secure sum gives per-slot noisy embedding sums -> unit DP centroids; the window's
distinct-contributor counts of new phrase tokens get one integer discrete-Gaussian draw each and
are decided by the pure :mod:`release` module (DP threshold tau plus the hard floor
``min_contributors``); released phrases are sticky; deletions are recorded at once and take effect
at the next release. Every contributor's ledger is charged the window's spend, computed from the
noise the round actually used (:meth:`PrivacyMode.window_spend`). The engine holds no SQL.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime, timezone
from typing import Any

import numpy as np

from continuum_mcp.errors import NotFound, WrongPhase
from continuum_mcp.crypto.identity import Verifier
from continuum_mcp.federation.coordinator import _attempt_sql as asql
from continuum_mcp.federation.coordinator import _integrity_sql as isql
from continuum_mcp.federation.coordinator import _release_sql as rsql
from continuum_mcp.federation.coordinator import release
from continuum_mcp.federation.coordinator._attempt import Attempt
from continuum_mcp.federation.coordinator._attempt_cache import AttemptCache
from continuum_mcp.federation.coordinator._round_privacy import RoundPrivacy
from continuum_mcp.federation.coordinator.config import CoordinatorConfig
from continuum_mcp.federation.coordinator.credits import Credits
from continuum_mcp.federation.coordinator.store import LEDGER_DB_NAME, CoordinatorStore, RoundRow
from continuum_mcp.federation.coordinator._bounds import refuse_poisoned_blocks
from continuum_mcp.federation.participant import round_params
from continuum_mcp.federation.protocol import SECAGG_PHASES, ContributionRequest, RoundState
from continuum_mcp.privacy.codebook import SLOT_INDEX_BITS, slot_id, split_slot_id, version_tag
from continuum_mcp.privacy.ledger import LEDGER_SCHEMA, LEDGER_SCHEMA_VERSION, PrivacySpend, migrate_ledger
from continuum_mcp.privacy.modes import PrivacyPolicy
from continuum_mcp.secagg import AggregateResult, KeyRoster, SecAggParams, ShareInbox, SignedMessage, SurvivorList

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class RoundEngine:
    """Rounds, secure aggregation and release on top of a :class:`CoordinatorStore`."""

    def __init__(self, store: CoordinatorStore, config: CoordinatorConfig, verifier: Verifier,
                 policy: PrivacyPolicy, *, now: Clock = time.time, noise: release.IntNoise | None = None) -> None:
        self.store = store
        self.config = config
        self.policy = policy
        self.mode = policy.mode(config.privacy_mode)
        self.credits = Credits(config.credit_rules, config.require_contribution)
        self.now = now
        self._noise = noise or release.discrete_noise()
        self._verifier = verifier
        self._lock = threading.RLock()
        self._cache = AttemptCache(store.transaction, self._lock)  # this process's copy of the running attempt
        #: the codebook version in use (the node points it at the one adopted by vote): a round
        #: aggregates only that version's slot ids
        self.codebook_version: Callable[[], str] = lambda: config.codebook_version
        # every member's ledger, beside the store (ledger.db, or the store's PostgreSQL database)
        self.privacy = RoundPrivacy(store.component(LEDGER_DB_NAME, LEDGER_SCHEMA, version=LEDGER_SCHEMA_VERSION,
                                                    what="privacy ledger", migrate=migrate_ledger), config, self.mode, now)

    @property
    def lock(self) -> threading.RLock:
        """Held by every transition; callers that read several views consistently may hold it."""
        return self._lock

    # ------------------------------------------------------------------------------ privacy

    def ledger_spent(self, instance_id: str) -> float:
        return self.privacy.spent(instance_id)

    def window_spend(self, params: SecAggParams) -> PrivacySpend:
        return self.privacy.window_spend(params)

    def round_epsilon(self, params: SecAggParams | None = None) -> float:
        return self.privacy.round_epsilon(params)

    def make_params(self, round_id: int, attempt: int, roster: list[str]) -> SecAggParams:
        """SecAggParams of the one calibration every client checks (``participant.round_params``)."""
        return round_params(self.config.federation_id, round_id, attempt, roster, self.config.slots, self.config.dim,
                            self.mode, self.config.sybil_fraction, self.config.sparse_design())

    # ------------------------------------------------------------------------------ the attempt cache

    def _sync(self, conn: Any) -> Attempt | None:
        """The store's running attempt, this process's copy caught up to it (under the lock)."""
        cur = self.store.current_round(conn)
        if cur is None or cur.phase not in SECAGG_PHASES or cur.params_json is None:
            return self._cache.sync(conn, None, str)
        params_json = cur.params_json
        return self._cache.sync(conn, (cur.round_id, cur.attempt),
                                lambda: SecAggParams.model_validate_json(params_json).session_id)

    def _running(self, conn: Any, round_id: int) -> Attempt:
        a = self._sync(conn)
        if a is None or a.round_id != round_id:
            cur = self.store.current_round(conn)
            if cur is None or round_id > cur.round_id or round_id < 0:
                raise NotFound(f"round {round_id} does not exist")
            raise WrongPhase(f"round {round_id} is not aggregating (current round {cur.round_id}, phase {cur.phase})")
        return a

    # ------------------------------------------------------------------------------ life cycle

    def recover(self) -> None:
        """Open round 0 on a fresh store. A round that was aggregating continues its attempt from the
        store's log (with several processes, another one may be running it); an attempt without a
        log (written by an older coordinator) cannot, and a new attempt of the round starts."""
        with self._cache.writing() as conn:
            now = self.now()
            cur = self.store.current_round(conn)
            if cur is None:
                self.store.open_round(conn, 0, now, self.config.round_interval_seconds)
            elif cur.phase in SECAGG_PHASES:
                a = self._sync(conn)
                if a is None:
                    self._restart(conn, cur, now)
                else:
                    logger.info("round %d attempt %d continues in phase %s", a.round_id, a.attempt, a.phase)

    def _restart(self, conn: Any, cur: RoundRow, now: float) -> None:
        logger.info("round %d attempt %d has no state to continue from: starting attempt %d", cur.round_id,
                    cur.attempt, cur.attempt + 1)
        if cur.params_json is not None:  # masked inputs the lost attempt had received are spent
            lost = SecAggParams.model_validate_json(cur.params_json)
            self.privacy.charge_attempt(lost, isql.secagg_senders(conn, cur.round_id, cur.attempt, "masked_input"))
            asql.prune(conn, lost.session_id)  # what is left of it is superseded
        if not self._fix_roster(conn, cur.round_id, cur.attempt + 1, now):
            self.store.set_round(conn, cur.round_id, phase="collecting", attempt=cur.attempt + 1, phase_deadline=None,
                                 params_json=None, next_close_at=now + self.config.round_interval_seconds)

    def _fix_roster(self, conn: Any, round_id: int, attempt: int, now: float) -> bool:
        first = slot_id(self.codebook_version(), 0)
        stale = self.store.drop_other_versions(conn, round_id, first, first + self.config.slots)
        if stale:
            logger.info("round %d: %d submission(s) under a superseded codebook dropped", round_id, stale)
        roster = self.privacy.eligible(sorted(self.store.pending_submitters(conn, round_id)))
        if len(roster) < max(3, self.config.min_contributors):
            return False
        params = self.make_params(round_id, attempt, roster)
        deadline = now + self.config.phase_timeout_seconds
        a = Attempt(round_id, attempt, params, self.store.member_keys(roster, conn), deadline, opened_at=now)
        asql.append(conn, a.session_id, a.opening())
        self.store.set_round(conn, round_id, attempt=attempt, phase="advertise", phase_deadline=deadline,
                             params_json=CoordinatorStore.params_dump(params))
        self._cache.opened((round_id, attempt), a)
        return True

    def _close_collecting(self, conn: Any, cur: RoundRow, now: float) -> None:
        if not self._fix_roster(conn, cur.round_id, cur.attempt, now):
            self.store.set_round(conn, cur.round_id, next_close_at=now + self.config.round_interval_seconds)
            logger.info("round %d: too few submitters, carried over", cur.round_id)

    def close_round(self) -> RoundState:
        """Fix the roster of the collecting round (or carry it over when too few submitted)."""
        with self._cache.writing() as conn:
            cur = self.store.current_round(conn)
            assert cur is not None
            if cur.phase != "collecting":
                raise WrongPhase(f"round {cur.round_id} is already in phase {cur.phase}")
            self._close_collecting(conn, cur, self.now())
        return self.state(None)

    def tick(self) -> None:
        """Advance on deadlines and the schedule (called by every process's background thread): the
        first process whose tick finds a transition due takes it; the others find it taken when they
        look again under the write transaction."""
        now = self.now()
        cur = self.store.current_round()
        if cur is None or not _due(cur, now):
            return
        with self._cache.writing() as conn:
            cur = self.store.current_round(conn)
            if cur is None or not _due(cur, now):
                return
            if cur.phase == "collecting":
                self._close_collecting(conn, cur, now)
                return
            a = self._sync(conn)
            if a is None:
                self._restart(conn, cur, now)
                return
            logger.info("round %d %s deadline: %d of %d posted", a.round_id, a.phase, len(a.posted), len(a.expected))
            self._advance(conn, a, now)

    # ------------------------------------------------------------------------------ secagg

    def current_params(self) -> SecAggParams | None:
        """Parameters of the running attempt (None while collecting)."""
        with self._lock, self.store.reading() as conn:
            a = self._sync(conn)
            return None if a is None else a.params

    def receive(self, round_id: int, kind: str, caller: str, message: SignedMessage) -> None:
        """Accept one member's secagg message for the current phase; advance when all posted. The
        message, and the phase close it completes, commit in one transaction."""
        with self._cache.writing() as conn:
            a = self._running(conn, round_id)
            now = self.now()
            asql.append(conn, a.session_id, a.accept(kind, caller, message, self._verifier, now))
            if a.complete:
                self._advance(conn, a, now)

    def _advance(self, conn: Any, a: Attempt, now: float) -> None:
        closed, record = a.close(now + self.config.phase_timeout_seconds, now)
        asql.append(conn, a.session_id, record)
        if closed.error is not None:
            if closed.sum_refused:
                # every secret was recovered, so only the sum's norm check refused it: some input was not
                # clipped. Nobody can tell whose (no range proofs), and one client must not be able to
                # abort everyone's round: release the phrases, refuse every centroid.
                logger.warning("round %d attempt %d: %s; releasing without centroids", a.round_id, a.attempt,
                               closed.error)
                self._release(conn, a, _without_centroids(sorted(a.survivor_lists or ()), a.params.dim))
                return
            logger.warning("round %d attempt %d aborted in %s: %s", a.round_id, a.attempt, closed.phase, closed.error)
            self._abort(conn, a, now)
        elif closed.result is not None:
            self._release(conn, a, closed.result)
        else:
            self.store.set_round(conn, a.round_id, phase=a.phase, phase_deadline=a.deadline)

    def _abort(self, conn: Any, a: Attempt, now: float) -> None:
        self.privacy.charge_attempt(a.params, a.masked_senders())
        self.store.set_round(conn, a.round_id, phase="aborted", phase_deadline=None, finished_at=now)
        self.store.open_round(conn, a.round_id + 1, now, self.config.round_interval_seconds)
        moved = self.store.carry_over(conn, a.round_id, a.round_id + 1)
        logger.info("round %d aborted; %d submissions carried over to round %d", a.round_id, moved, a.round_id + 1)
        self._cache.ended(conn, a)

    def key_roster(self, round_id: int, caller: str) -> KeyRoster:
        with self._lock, self.store.reading() as conn:
            return self._running(conn, round_id).roster_for(caller)

    def inbox(self, round_id: int, caller: str) -> ShareInbox:
        with self._lock, self.store.reading() as conn:
            return self._running(conn, round_id).inbox_for(caller)

    def survivors(self, round_id: int, caller: str) -> SurvivorList:
        with self._lock, self.store.reading() as conn:
            return self._running(conn, round_id).survivors_for(caller)

    # ------------------------------------------------------------------------------ release

    def release_aggregate(self, result: AggregateResult) -> RoundState:
        """Release the running attempt's round from its aggregate (what ``SecAggServer.finalize``
        returns; the benchmark hands in an exactly simulated one). Returns the released state."""
        with self._cache.writing() as conn:
            a = self._sync(conn)
            if a is None:
                raise WrongPhase("no round is aggregating")
            r = a.round_id
            self._release(conn, a, result)
        return self.state(None, r)

    def _release(self, conn: Any, a: Attempt, result: AggregateResult) -> None:
        now, r = self.now(), a.round_id
        survivors = list(result.contributors)
        self.privacy.charge_attempt(a.params, survivors)
        dropped = [m for m in a.params.roster if m not in set(survivors)]
        self.store.open_round(conn, r + 1, now, self.config.round_interval_seconds)
        self.store.carry_over(conn, r, r + 1, dropped)
        counts = self.store.pending_submitters(conn, r)
        # the secure sum is laid out by slot index; the round's slot ids are one version's
        submitters = isql.slot_submitters(conn, r)
        tag = _round_tag(submitters, self.codebook_version())
        float_sum, refused = refuse_poisoned_blocks(result, a.params, self.config.slots, self.config.dim,
                                                    _by_index(submitters, tag))
        if refused:  # a block above what its contributors' clipped inputs plus the noise can give
            logger.warning("round %d: centroids of %d slot(s) refused", r, len(refused))
        self.store.mark_released(conn, r, survivors, now)
        # only slots some survivor contributed to this round get a new centroid
        vectors = release.centroids(float_sum, self.config.slots, self.config.dim,
                                    set(_by_index(dict.fromkeys(rsql.slots_released_in(conn, r), 0), tag)))
        vectors = {tag << SLOT_INDEX_BITS | index: v for index, v in vectors.items()}
        self._release_window(conn, r, vectors, tag)  # then credit: no credit for a substituted phrase
        self.credits.earn_round(conn, r, isql.without_substitutions(conn, r, counts), survivors, now)
        # a member still in the carried-over round keeps its other pending rows too
        self.store.carry_over(conn, r, r + 1)
        self.store.set_round(conn, r, phase="released", phase_deadline=None, finished_at=now,
                             epsilon=self.round_epsilon(a.params))
        logger.info("round %d released with %d contributors (%d dropped)", r, len(survivors), len(dropped))
        self._cache.ended(conn, a)

    def _release_window(self, conn: Any, round_id: int, vectors: dict[int, Any] | None, tag: int) -> set[int]:
        """The window's one release: scheduled withdrawals, then one noisy selection of the new
        candidates (pure decisions, written by the store), among the slot ids of the round's
        codebook version (``tag``). Returns withdrawn pattern slots."""
        within = (tag << SLOT_INDEX_BITS, (tag + 1) << SLOT_INDEX_BITS)
        cal = self.mode.calibration
        every = rsql.released_phrases(conn)  # deletions take effect under every version
        withdrawn = release.withdrawals(rsql.remaining_counts(conn, sorted(every)), every, self.config.min_contributors)
        counts = release.window_counts(rsql.window_member_tokens(conn, round_id), self.mode.phrases_per_window)
        decisions = release.select_phrases(counts, rsql.released_phrases(conn, within), sigma=cal.sigma, tau=cal.tau,
                                           floor=self.config.min_contributors, noise=self._noise)
        out = rsql.write_window(conn, round_id=round_id, decisions=decisions, withdrawn=withdrawn,
                                centroids=vectors, statements=self.mode.name == "open", within=within)
        # open mode: a statement itself needs min_contributors contributors (not just its slot)
        return out | isql.enforce_statement_floor(conn, self.config.min_contributors)

    # ------------------------------------------------------------------------------ contributions

    def submit(self, caller: str, request: ContributionRequest) -> int:
        """Store the caller's submission for the collecting round; returns the round id. PostgreSQL: the
        member's lock only (the phase changes under the store's exclusive one), so members commit side
        by side; SQLite (one writer per file) queues on the engine lock as before (measured faster)."""
        with self._lock if self.store.dialect == "sqlite" else nullcontext(), \
                self.store.transaction(f"member:{caller}") as conn:
            cur = self.store.current_round(conn)
            assert cur is not None
            if request.round_id != cur.round_id or cur.phase != "collecting":
                raise WrongPhase(f"contributions go to round {cur.round_id} while it is collecting (it is {cur.phase}); "
                                 "re-encrypt for the current round and retry")
            self.store.replace_submission(conn, caller, cur.round_id, request.patterns, self.now())
            return cur.round_id

    def withdraw(self, caller: str, *, leave: bool = False) -> tuple[int, int]:
        """Delete the caller's submissions (and, with ``leave``, its membership; the member's lock);
        returns (deleted, 0): nothing released changes now, the next scheduled release recounts and
        withdraws what fell under the floor (at once would show what this member had contributed)."""
        with self.store.transaction(f"member:{caller}") as conn:
            n, _slots = self.store.delete_member_submissions(conn, caller)
            if leave:
                self.store.remove_member(conn, caller)
        return n, 0

    # ------------------------------------------------------------------------------ views

    def state(self, caller: str | None, round_id: int | None = None) -> RoundState:
        with self._lock, self.store.reading() as conn:
            row = self.store.current_round(conn) if round_id is None else self.store.get_round(round_id)
            if row is None:
                raise NotFound(f"round {round_id} does not exist")
            if row.phase == "released":
                who: set[str] | dict[str, int] = rsql.released_submitters(conn, row.round_id)
            else:
                who = self.store.pending_submitters(conn, row.round_id)
            a = self._sync(conn)
            return round_view(row, who, a if a is not None and a.round_id == row.round_id else None, caller)


def round_view(row: RoundRow, who: set[str] | dict[str, int], a: Attempt | None, caller: str | None) -> RoundState:
    """A round as ``caller`` may see it (None: the operator). Members see only their own
    participation: no submission count, and the params (which name the roster) only if they are
    in that round's roster, as they need the roster's keys anyway."""
    deadline = None if row.phase_deadline is None else datetime.fromtimestamp(row.phase_deadline, tz=timezone.utc)
    params = None if row.params_json is None else json.loads(row.params_json)
    operator = caller is None
    in_roster = params is not None and caller in params.get("roster", ())
    return RoundState(
        round_id=row.round_id, attempt=row.attempt, phase=row.phase,  # type: ignore[arg-type]
        phase_deadline=deadline, submissions=len(who) if operator else None, you_submitted=caller in who,
        you_in_roster=bool(a is not None and caller in a.params.roster),
        you_pending=a.pending_for(caller) if a is not None else None,  # type: ignore[arg-type]
        params=params if operator or in_roster else None, epsilon_spent=row.epsilon)


def _due(cur: RoundRow, now: float) -> bool:
    """A time-driven transition is due: the round's scheduled close, or its phase deadline."""
    if cur.phase == "collecting":
        return now >= cur.next_close_at
    return cur.phase in SECAGG_PHASES and (cur.phase_deadline is None or now >= cur.phase_deadline)


def _round_tag(slot_counts: dict[int, int], version: str) -> int:
    """The codebook version tag of a round's slot ids (all one version's since its roster was
    fixed; ``version``'s when it has none)."""
    tags = {split_slot_id(s)[0] for s in slot_counts}
    return tags.pop() if len(tags) == 1 else version_tag(version)


def _by_index(slot_counts: dict[int, int], tag: int) -> dict[int, int]:
    """Slot id -> count re-keyed by slot index, for the slot ids of version ``tag`` only."""
    return {index: n for t, index, n in ((*split_slot_id(s), n) for s, n in slot_counts.items()) if t == tag}


def _without_centroids(contributors: list[str], dim: int) -> AggregateResult:
    """An aggregate that releases no centroid (an all-zero sum gives none) for ``contributors``."""
    zeros = np.zeros(dim, dtype=np.float64)
    return AggregateResult(int_sum=zeros.astype(np.int64), float_sum=zeros, contributors=list(contributors),
                           recovered_dropouts=[], noise_sigma=0.0, norm=float("nan"), norm_bound=float("nan"))


__all__ = ["Clock", "RoundEngine", "round_view"]
