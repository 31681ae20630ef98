"""The coordinator's side of learning-session rounds: secure aggregation over the opted-in members.

Why a module of its own beside the round engine: a session round is a release round's secure
aggregation (the same :class:`Attempt` over a ``SecAggServer``, the same four steps, the same
calibration of clip and distributed discrete Gaussian noise) but with another roster (the members
opted in by the tally, minus those who opted out since), another vector layout (the session
kind's), no phrases and no credits, and a post-processing step of the kind.

Durable as release rounds are, with the same pieces: the attempt is its append-only log in the
store (:mod:`._attempt_sql`, keyed by the session round's secagg session id
``<federation>/<proposal>/r<round>/a<attempt>``), which round and attempt of a proposal runs is
the proposal row's ``in_round`` (the attempt + 1), and a process keeps only an :class:`AttemptCache` per proposal, caught up from the
log at the start of every request. So several coordinator processes on one database serve one
session round message by message, and a restarted one continues it. Every accepted message, the
phase close it completes and (after the last phase) the round's record commit in one transaction.

A round whose attempt fails before any masked input was sent (too few of its roster advertised
keys or shared them by the phase deadline: members opted in but not syncing) spent nothing, so it
is tried again at once, as attempt ``a1``, ``a2``, with exactly the members who did post, while
they are at least the session's minimum (:data:`MAX_SESSION_ATTEMPTS` attempts in all). Otherwise
an aborted round counts as one of the R rounds, and what its masked inputs could have revealed is
charged. A round without a log (opened by an older coordinator that kept it in memory) cannot
continue and is recorded as aborted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from continuum_mcp.crypto.identity import Verifier
from continuum_mcp.errors import Forbidden, InvalidInput, NotFound, PrivacyBudgetExceeded, WrongPhase
from continuum_mcp.federation.coordinator import _attempt_sql as asql
from continuum_mcp.federation.coordinator import _governance_sql as gsql
from continuum_mcp.federation.coordinator._attempt import Attempt, Closed
from continuum_mcp.federation.coordinator._attempt_cache import AttemptCache
from continuum_mcp.federation.coordinator._round_privacy import RoundPrivacy
from continuum_mcp.federation.coordinator.store import CoordinatorStore
from continuum_mcp.federation.governance import GovernanceRules, SignedStatement, open_statement
from continuum_mcp.federation.governance.guarantee import proposal_params, session_label
from continuum_mcp.federation.learning import SessionParams, session_round_params
from continuum_mcp.federation.protocol import RoundState
from continuum_mcp.privacy.dp import gdp_epsilon
from continuum_mcp.privacy.ledger import PrivacyLedger
from continuum_mcp.secagg import SignedMessage

logger = logging.getLogger(__name__)

#: attempts of one session round (each after the last failed before masked inputs were sent)
MAX_SESSION_ATTEMPTS = 3


@dataclass
class RoundDone:
    """What a finished session round hands back to the governance service to record."""

    round: int
    outcome: str
    result: Any  # the kind's SessionResult of a released round, else None
    noisy_participants: float | None
    charged: list[str]
    epsilon: float


@dataclass(frozen=True)
class SessionRound:
    """The round of a proposal the store says is running (``gov_proposals.in_round``)."""

    proposal_id: str
    round: int
    label: str  #: the session's secagg label; the attempt's session id is ``<label>/r<round>/a<attempt>``
    params: SessionParams
    attempt: int = 0  #: ``gov_proposals.in_round`` - 1

    @property
    def key(self) -> tuple[str, int, int]:
        return self.proposal_id, self.round, self.attempt

    @property
    def session_id(self) -> str:
        return f"{self.label}/r{self.round}/a{self.attempt}"


class SessionRounds:
    """Secure aggregation of session rounds: one durable attempt per running session."""

    def __init__(self, store: CoordinatorStore, verifier: Verifier, privacy: RoundPrivacy, phase_timeout: float,
                 now: Callable[[], float], federation_id: str, rules: GovernanceRules | None = None) -> None:
        self.store, self._verifier, self._privacy = store, verifier, privacy
        self._rules = rules or GovernanceRules()
        self._timeout, self.now, self._fed = phase_timeout, now, federation_id
        self.lock = threading.RLock()  #: serialises this process's threads around its caches
        self._caches: dict[str, AttemptCache] = {}
        self._params: dict[str, SessionParams] = {}  # a proposal's signed parameters never change

    # ------------------------------------------------------------------------------ ledger
    def ledger(self, member: str) -> PrivacyLedger:
        """The member's coordinator-side ledger (the one the round engine charges releases to),
        spending under the ``learning`` purpose with its own window budget (the federation's
        per-session cap times the sessions allowed per window); the lifetime bound is shared."""
        ledger = self._privacy.ledger(member)
        return ledger.for_purpose("learning", self._rules.learning_budget(ledger.window, ledger.delta))

    def affordable(self, members: list[str], params: SessionParams) -> list[str]:
        """Opted-in members whose learning budget (and lifetime bound) affords a round."""
        out = []
        for m in members:
            with self.ledger(m) as ledger:
                if ledger.check(params.round_spend()).allowed:
                    out.append(m)
        return out

    def _charge(self, params: SessionParams, session_id: str, members: set[str] | list[str]) -> list[str]:
        """Idempotent per (member, session id): a transaction retried elsewhere charges once."""
        charged = []
        for m in sorted(members):
            try:
                with self.ledger(m) as ledger:
                    ledger.spend(params.round_spend(), round_id=session_id)
                charged.append(m)
            except PrivacyBudgetExceeded:
                logger.warning("member %s is past its privacy budget; session spend not recorded", m)
        return charged

    # ------------------------------------------------------------------------------ the store's running round
    def _cache(self, pid: str) -> AttemptCache:
        if pid not in self._caches:
            self._caches[pid] = AttemptCache(self.store.transaction, self.lock)
        return self._caches[pid]

    def writing(self, pid: str) -> Any:
        """A store write transaction for proposal ``pid``'s round (its cache dropped if it fails)."""
        return self._cache(pid).writing()

    @contextmanager
    def reading(self) -> Iterator[Any]:
        with self.lock, self.store.reading() as conn:
            yield conn

    def current(self, row: gsql.ProposalRow) -> SessionRound | None:
        """The round ``row`` says is running, or None between rounds."""
        if not row.in_round:
            return None
        params = self._params.get(row.proposal_id)
        if params is None:
            prop = open_statement(SignedStatement.model_validate_json(row.signed_json), self._fed)
            params = self._params[row.proposal_id] = proposal_params(prop)  # type: ignore[arg-type]
        return SessionRound(row.proposal_id, row.finished_rounds + 1, session_label(self._fed, row.proposal_id),
                            params, row.in_round - 1)

    def attempt(self, conn: Any, pid: str, run: SessionRound | None) -> Attempt | None:
        """The running round's attempt, this process's copy caught up with the log (under the lock);
        None between rounds, or when the round has no log to continue from."""
        if run is None:
            return self._cache(pid).sync(conn, None, str)
        return self._cache(pid).sync(conn, run.key, lambda: run.session_id)

    def _running(self, conn: Any, pid: str, round_no: int) -> Attempt:
        rows = gsql.proposals(conn, pid)
        run = self.current(rows[0]) if rows else None
        a = self.attempt(conn, pid, run)
        if run is None or a is None or run.round != round_no:
            raise WrongPhase(f"session round {round_no} of {pid} is not aggregating")
        return a

    # ------------------------------------------------------------------------------ transitions
    def open(self, conn: Any, run: SessionRound, roster: list[str], dim: int) -> None:
        """Fix ``run``'s roster and parameters (``dim``: the kind's layout) and open its
        ``advertise`` step: the attempt's opening record, in the caller's transaction."""
        sp = session_round_params(run.label, run.round, run.attempt, roster, dim, run.params)
        now = self.now()
        a = Attempt(run.round, run.attempt, sp, self.store.member_keys(sp.roster, conn), now + self._timeout, opened_at=now)
        asql.append(conn, a.session_id, a.opening())
        self._cache(run.proposal_id).opened(run.key, a)

    def receive(self, conn: Any, pid: str, round_no: int, kind: str, caller: str, message: SignedMessage
                ) -> tuple[Attempt, Closed] | None:
        """Accept one member's message (in the caller's transaction); the attempt and how it ended
        when this message completed its last phase."""
        a = self._running(conn, pid, round_no)
        now = self.now()
        asql.append(conn, a.session_id, a.accept(kind, caller, message, self._verifier, now))
        return self.advance(conn, a) if a.complete else None

    def advance(self, conn: Any, a: Attempt) -> tuple[Attempt, Closed] | None:
        """Close the current phase (all posted, or its deadline passed); the end, if it was the last."""
        closed, record = a.close(self.now() + self._timeout, self.now())
        asql.append(conn, a.session_id, record)
        return None if closed.next_phase is not None else (a, closed)

    def retry(self, conn: Any, run: SessionRound, a: Attempt | None, closed: Closed | None,
              participants: Callable[[], set[str]], dim: Callable[[], int]) -> bool:
        """Open ``run``'s next attempt (in the caller's transaction) with the members that posted in
        the phase where this one failed, still opted in (``participants()``) and within budget,
        when no masked input was sent (nothing spent), they are fewer than the roster (the same
        shortfall cannot repeat) and at least the session's minimum, and attempts remain. False:
        the round ends here."""
        if a is None or closed is None or closed.error is None or a.masked_senders():
            return False
        synced = sorted(a.posted)
        if run.attempt + 1 >= MAX_SESSION_ATTEMPTS or not (run.params.min_participants <= len(synced)
                                                           < len(a.params.roster)):
            return False
        still = participants()
        roster = self.affordable([m for m in synced if m in still], run.params)
        if len(roster) < run.params.min_participants:
            return False
        gsql.set_proposal(conn, run.proposal_id, in_round=run.attempt + 2)
        nxt = SessionRound(run.proposal_id, run.round, run.label, run.params, run.attempt + 1)
        # the failed attempt's log stays: it holds no masked input (a retry needs none sent), only
        # the keys advertised, and it is the record of why the round was tried again
        self.open(conn, nxt, roster, dim())
        logger.info("session %s round %d attempt %d failed in %s with %d of %d synced: attempt %d with them",
                    run.proposal_id, run.round, run.attempt, closed.phase, len(synced), len(a.params.roster),
                    nxt.attempt)
        return True

    def finish(self, run: SessionRound, a: Attempt | None, closed: Closed | None, kind: Any, context: Any,
               conn: Any) -> RoundDone:
        """The ended round's record: the kind's post-processing of the DP sum (costs no privacy) and
        every member whose masked input was received charged. ``a`` None: the round had no log.
        The attempt's log goes in the same transaction (``_attempt_sql.prune``: what it decided is
        recorded by then, and only a running attempt is ever replayed)."""
        self._cache(run.proposal_id).clear()
        done = self._finish(run, a, closed, kind, context, conn)
        asql.prune(conn, run.session_id)
        return done

    def _finish(self, run: SessionRound, a: Attempt | None, closed: Closed | None, kind: Any, context: Any,
                conn: Any) -> RoundDone:
        if a is None or closed is None:
            senders = asql.senders(conn, run.session_id, "masked_input")
            return self._end(run, "aborted", None, senders)
        if closed.error is not None or closed.result is None:
            logger.warning("session %s round %d aborted in %s: %s", run.proposal_id, run.round, closed.phase,
                           closed.error)
            return self._end(run, "aborted", None, a.masked_senders())
        step = closed.result
        try:
            result = kind.postprocess(np.asarray(step.float_sum, dtype=np.float64), step.noise_sigma, context,
                                      run.params)
        except (InvalidInput, ValueError) as exc:
            logger.warning("session %s round %d: post-processing failed: %s", run.proposal_id, run.round, exc)
            return self._end(run, "aborted", None, set(step.contributors))
        out = self._end(run, "released", result, set(step.contributors))
        out.noisy_participants = float(result.noisy_participants)
        return out

    def _end(self, run: SessionRound, outcome: str, result: Any, senders: set[str]) -> RoundDone:
        charged = self._charge(run.params, run.session_id, senders)
        eps = gdp_epsilon(run.params.mu_per_round, run.params.delta) if senders else 0.0
        return RoundDone(run.round, outcome, result, None, charged, eps)

    # ------------------------------------------------------------------------------ views
    def view(self, a: Attempt | None, caller: str, round_no: int | None, finished: dict[int, str],
             pid: str) -> RoundState:
        """A session round as ``caller`` may see it: the running one (params only to its roster),
        a finished one (``released``/``aborted``), or, between rounds, the next one as
        ``collecting`` (nothing to do yet)."""
        if a is not None and round_no in (None, a.round_id):
            mine = caller in a.params.roster
            return RoundState(round_id=a.round_id, attempt=a.attempt, phase=a.phase,  # type: ignore[arg-type]
                              phase_deadline=datetime.fromtimestamp(a.deadline, tz=timezone.utc),
                              you_submitted=mine, you_in_roster=mine,
                              you_pending=a.pending_for(caller),  # type: ignore[arg-type]
                              params=a.params.model_dump(mode="json") if mine else None)
        if round_no is None:
            return RoundState(round_id=max(finished, default=0) + 1, attempt=0, phase="collecting", phase_deadline=None,
                              you_submitted=False, you_in_roster=False, you_pending=None, params=None)
        if round_no not in finished:
            raise NotFound(f"session {pid} has no finished round {round_no}")
        return RoundState(round_id=round_no, attempt=0, phase=finished[round_no],  # type: ignore[arg-type]
                          phase_deadline=None, you_submitted=False, you_in_roster=False, you_pending=None, params=None)

    def key_roster(self, pid: str, r: int, caller: str) -> Any:
        with self.reading() as conn:
            return self._running(conn, pid, r).roster_for(caller)

    def inbox(self, pid: str, r: int, caller: str) -> Any:
        with self.reading() as conn:
            return self._running(conn, pid, r).inbox_for(caller)

    def survivors(self, pid: str, r: int, caller: str) -> Any:
        with self.reading() as conn:
            return self._running(conn, pid, r).survivors_for(caller)


def forbid_other(caller: str, signer: str) -> None:
    if caller != signer:
        raise Forbidden("the statement is signed by another identity than the request")


__all__ = ["MAX_SESSION_ATTEMPTS", "RoundDone", "SessionRound", "SessionRounds", "forbid_other"]
