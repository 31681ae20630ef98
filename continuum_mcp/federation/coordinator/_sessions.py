"""The coordinator's side of learning-session rounds: secure aggregation over the opted-in members.

Why a module of its own beside the round engine: a session round is a release round's secure
aggregation (the same :class:`Attempt` over a ``SecAggServer``, the same four steps, the same
calibration of clip and distributed discrete Gaussian noise) but with another roster (the members
opted in by the tally, minus those who opted out since), another vector layout (the session
kind's), no phrases and no credits, and a post-processing step of the kind. Composing
``Attempt`` keeps the round engine untouched.

Rounds are not retried: an aborted round (too few survivors) counts as one of the R rounds, and
what its masked inputs could have revealed is charged. A restart mid-round loses the in-memory
attempt; the round is recorded as aborted and the next one starts (``SecAggServer`` holds no
secrets worth keeping). Every transition holds one lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from continuum_mcp.crypto.identity import Verifier
from continuum_mcp.errors import (
    Forbidden, InvalidInput, NotFound, PrivacyBudgetExceeded, WrongPhase,
)
from continuum_mcp.federation.coordinator._attempt import Attempt
from continuum_mcp.federation.coordinator._round_privacy import RoundPrivacy
from continuum_mcp.federation.coordinator.store import CoordinatorStore
from continuum_mcp.federation.learning import SessionParams, session_round_params
from continuum_mcp.federation.protocol import RoundState
from continuum_mcp.privacy.dp import gdp_epsilon
from continuum_mcp.privacy.ledger import PrivacyLedger
from continuum_mcp.secagg import SignedMessage

logger = logging.getLogger(__name__)


@dataclass
class RoundDone:
    """What a finished session round hands back to the governance service to record."""

    round: int
    outcome: str
    result: Any  # the kind's SessionResult of a released round, else None
    noisy_participants: float | None
    charged: list[str]
    epsilon: float


@dataclass
class _Running:
    proposal_id: str
    params: SessionParams
    attempt: Attempt
    kind: Any  # learning.SessionKind
    context: Any  # learning.SessionContext


class SessionRounds:
    """Secure aggregation of session rounds, one attempt per running session."""

    def __init__(self, store: CoordinatorStore, verifier: Verifier, privacy: RoundPrivacy, phase_timeout: float,
                 now: Callable[[], float]) -> None:
        self.store, self._verifier, self._privacy = store, verifier, privacy
        self._timeout, self.now = phase_timeout, now
        self._running: dict[str, _Running] = {}
        self.lock = threading.RLock()

    # ------------------------------------------------------------------------------ ledger
    def _ledger(self, instance_id: str) -> PrivacyLedger:
        """The same per-identity ledger the round engine charges (one budget for everything released)."""
        return self._privacy.ledger(instance_id)

    def affordable(self, members: list[str], params: SessionParams) -> list[str]:
        out = []
        for m in members:
            with self._ledger(m) as ledger:
                if ledger.check(params.round_spend()).allowed:
                    out.append(m)
        return out

    def _charge(self, params: SessionParams, session_id: str, members: set[str] | list[str]) -> list[str]:
        charged = []
        for m in sorted(members):
            try:
                with self._ledger(m) as ledger:
                    ledger.spend(params.round_spend(), round_id=session_id)
                charged.append(m)
            except PrivacyBudgetExceeded:
                logger.warning("member %s is past its privacy budget; session spend not recorded", m)
        return charged

    # ------------------------------------------------------------------------------ life cycle
    def running(self, proposal_id: str) -> bool:
        return proposal_id in self._running

    def start(self, proposal_id: str, label: str, round_no: int, roster: list[str], params: SessionParams,
              kind: Any, context: Any) -> None:
        """Fix round ``round_no``'s roster and parameters (the kind's layout in ``context``) and
        open its ``advertise`` step."""
        with self.lock:
            sp = session_round_params(label, round_no, 0, roster, kind.layout(context).dim, params)
            now = self.now()
            a = Attempt(round_no, 0, sp, self.store.member_keys(sp.roster), now + self._timeout, opened_at=now)
            self._running[proposal_id] = _Running(proposal_id, params, a, kind, context)

    def forget(self, proposal_id: str) -> None:
        self._running.pop(proposal_id, None)

    def tick(self) -> list[tuple[str, RoundDone]]:
        """Advance every attempt whose step deadline passed; returns the rounds that finished."""
        done = []
        with self.lock:
            for pid, run in list(self._running.items()):
                if self.now() >= run.attempt.deadline:
                    out = self._advance(run)
                    if out is not None:
                        done.append((pid, out))
        return done

    def receive(self, proposal_id: str, round_no: int, kind: str, caller: str, message: SignedMessage
                ) -> RoundDone | None:
        with self.lock:
            run = self._attempt_of(proposal_id, round_no)
            run.attempt.accept(kind, caller, message, self._verifier, self.now())
            if run.attempt.complete:
                return self._advance(run)
            return None

    def _advance(self, run: _Running) -> RoundDone | None:
        a = run.attempt
        closed, _record = a.close(self.now() + self._timeout, self.now())
        if closed.error is not None:
            logger.warning("session %s round %d aborted in %s: %s", run.proposal_id, a.round_id, closed.phase,
                           closed.error)
            return self._end(run, "aborted", None, a.masked_senders())
        step = closed.result
        if step is not None:
            try:  # post-processing of the DP sum: costs no privacy
                result = run.kind.postprocess(np.asarray(step.float_sum, dtype=np.float64), step.noise_sigma,
                                              run.context, run.params)
            except (InvalidInput, ValueError) as exc:
                logger.warning("session %s round %d: post-processing failed: %s", run.proposal_id, a.round_id, exc)
                return self._end(run, "aborted", None, set(step.contributors))
            out = self._end(run, "released", result, set(step.contributors))
            out.noisy_participants = float(result.noisy_participants)
            return out
        return None

    def _end(self, run: _Running, outcome: str, result: Any, senders: set[str]) -> RoundDone:
        charged = self._charge(run.params, run.attempt.params.session_id, senders)
        self._running.pop(run.proposal_id, None)
        eps = gdp_epsilon(run.params.mu_per_round, run.params.delta) if senders else 0.0
        return RoundDone(run.attempt.round_id, outcome, result, None, charged, eps)

    # ------------------------------------------------------------------------------ views
    def _attempt_of(self, proposal_id: str, round_no: int) -> _Running:
        run = self._running.get(proposal_id)
        if run is None or run.attempt.round_id != round_no:
            raise WrongPhase(f"session round {round_no} of {proposal_id} is not aggregating")
        return run

    def view(self, proposal_id: str, caller: str, round_no: int | None, finished: dict[int, str]) -> RoundState:
        """A session round as ``caller`` may see it: the running one (params only to its roster),
        a finished one (``released``/``aborted``), or, between rounds, the next one as
        ``collecting`` (nothing to do yet)."""
        with self.lock:
            run = self._running.get(proposal_id)
            if run is not None and round_no in (None, run.attempt.round_id):
                a = run.attempt
                mine = caller in a.params.roster
                pending = a.pending_for(caller)
                return RoundState(round_id=a.round_id, attempt=0, phase=a.phase,  # type: ignore[arg-type]
                                  phase_deadline=datetime.fromtimestamp(a.deadline, tz=timezone.utc),
                                  you_submitted=mine, you_in_roster=mine, you_pending=pending,  # type: ignore[arg-type]
                                  params=a.params.model_dump(mode="json") if mine else None)
        if round_no is None:
            return RoundState(round_id=max(finished, default=0) + 1, attempt=0, phase="collecting", phase_deadline=None,
                              you_submitted=False, you_in_roster=False, you_pending=None, params=None)
        if round_no not in finished:
            raise NotFound(f"session {proposal_id} has no finished round {round_no}")
        phase = finished[round_no]
        return RoundState(round_id=round_no, attempt=0, phase=phase, phase_deadline=None,  # type: ignore[arg-type]
                          you_submitted=False, you_in_roster=False, you_pending=None, params=None)

    def key_roster(self, pid: str, r: int, caller: str) -> Any:
        with self.lock:
            return self._attempt_of(pid, r).attempt.roster_for(caller)

    def inbox(self, pid: str, r: int, caller: str) -> Any:
        with self.lock:
            return self._attempt_of(pid, r).attempt.inbox_for(caller)

    def survivors(self, pid: str, r: int, caller: str) -> Any:
        with self.lock:
            return self._attempt_of(pid, r).attempt.survivors_for(caller)


def forbid_other(caller: str, signer: str) -> None:
    if caller != signer:
        raise Forbidden("the statement is signed by another identity than the request")


__all__ = ["RoundDone", "SessionRounds", "forbid_other"]
