"""The coordinator's governance core: proposals, signed statements, reports and session rounds.

Why the coordinator only publishes: members do not trust it to count, so it stores every signed
statement exactly as received and hands all of them out in each report; its own tally (the same
pure :func:`governance.tally` the clients run) is shown as informative and is what *it* uses to
decide when a session may start -- it never starts one that its tally does not approve, and every
client checks again before it sends anything.

What it refuses (``InvalidInput``/``Forbidden``/``WrongPhase``, nothing stored): a statement signed
by another identity than the request, a stale or future signature, a statement for another
federation or proposal, a proposal over the per-session cap (with the numbers) or with a too-short
discussion, ballots and opt-ins after the deadline, halt votes outside a running session,
adoption votes before a result exists.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from continuum_mcp.crypto.signing import b64encode
from continuum_mcp.errors import Conflict, InvalidInput, NotFound, WrongPhase
from continuum_mcp.federation.coordinator import _governance_sql as gsql
from continuum_mcp.federation.coordinator._governance_adoption import AdoptionCount
from continuum_mcp.federation.coordinator._sessions import RoundDone, SessionRounds, forbid_other
from continuum_mcp.federation.coordinator.config import CoordinatorConfig
from continuum_mcp.federation.coordinator.store import CoordinatorStore
from continuum_mcp.federation.governance import (
    FINAL_PHASES,
    ProposalStatement,
    SessionState,
    SignedStatement,
    Tally,
    codebook_digest,
    decide,
    finish_round,
    open_statement,
    proposal_id,
    start_round,
    tally,
)
from continuum_mcp.federation.governance._wire import (
    GovernanceInfo,
    ProposalList,
    ProposalSummary,
    SessionReport,
    SessionRoundReport,
    StatementPost,
)
from continuum_mcp.federation.governance.guarantee import context_after, proposal_guarantee, proposal_params
from continuum_mcp.federation.protocol import ActionReceipt, RoundState
from continuum_mcp.privacy.accounting import compose_gdp, gdp_epsilon
from continuum_mcp.secagg import SignedMessage

logger = logging.getLogger(__name__)

_PROPOSAL_ID = re.compile(r"^prop-[0-9a-f]{20}$")
#: which statement types each phase accepts
_ACCEPTS: dict[str, frozenset[str]] = {
    "discussion": frozenset({"ballot", "opt_in", "opt_out"}),
    "approved": frozenset({"opt_out", "halt"}),
    "running": frozenset({"opt_out", "halt"}),
    "completed": frozenset({"adopt"}),
}


class GovernanceService:
    """Proposals and statements for authenticated callers; session rounds on :meth:`tick`."""

    def __init__(self, config: CoordinatorConfig, store: CoordinatorStore, rounds: SessionRounds,
                 kinds: Mapping[str, Any], initial_context: Callable[[str], Any], now: Callable[[], float]) -> None:
        """``kinds``: name -> ``learning.SessionKind``; ``initial_context(kind)``: the public
        context of a session's first round (e.g. the codebook in use)."""
        self.config, self.store, self.rounds, self.kinds, self.now = config, store, rounds, kinds, now
        self.rules = config.governance
        self._initial_context = initial_context
        self.adoption = AdoptionCount(store, lambda conn, row: self._tally(conn, row)[0])
        with store.transaction() as conn:
            gsql.ensure_schema(conn)

    # ------------------------------------------------------------------------------ helpers
    def _row(self, pid: str, conn: Any = None) -> gsql.ProposalRow:
        if not _PROPOSAL_ID.match(pid):
            raise NotFound(f"no proposal {pid!r}")
        if conn is None:
            with self.store.reading() as c:
                rows = gsql.proposals(c, pid)
        else:
            rows = gsql.proposals(conn, pid)
        if not rows:
            raise NotFound(f"no proposal {pid!r}")
        return rows[0]

    def _fresh(self, signed: SignedStatement) -> None:
        if abs(signed.envelope.timestamp - self.now()) > self.config.replay_window_seconds:
            raise InvalidInput("statement.envelope.timestamp: the statement was not signed now "
                               f"(more than {self.config.replay_window_seconds} s off); sign it again")

    def _statements(self, conn: Any, pid: str) -> list[SignedStatement]:
        return [SignedStatement.model_validate_json(s) for s in gsql.statements(conn, pid)]

    def _members(self, conn: Any, signed: list[SignedStatement]) -> dict[str, str]:
        keys = self.store.member_keys(sorted({s.signer for s in signed}), conn)
        return {m: b64encode(k) for m, k in keys.items()}

    def _tally(self, conn: Any, row: gsql.ProposalRow) -> tuple[Tally, list[SignedStatement], dict[str, str]]:
        prop = SignedStatement.model_validate_json(row.signed_json)
        sts = self._statements(conn, row.proposal_id)
        members = self._members(conn, [prop, *sts])
        g = proposal_guarantee(open_statement(prop, self.config.federation_id))
        t = tally(prop, sts, members, federation_id=self.config.federation_id, rules=self.rules, now=self.now(),
                  epsilon=None if g is None else g.epsilon)
        return t, sts, members

    def _summary(self, row: gsql.ProposalRow, t: Tally | None) -> ProposalSummary:
        return ProposalSummary(proposal_id=row.proposal_id, title=row.title, kind=row.kind, proposer=row.proposer,
                               discussion_deadline=row.deadline, phase=row.phase,  # type: ignore[arg-type]
                               round=row.finished_rounds, rounds=row.rounds, coordinator_tally=t)

    # ------------------------------------------------------------------------------ routes
    def info(self) -> GovernanceInfo:
        return GovernanceInfo(rules=self.rules, kinds=sorted(self.kinds))

    def propose(self, caller: str, post: StatementPost) -> ProposalSummary:
        signed = post.statement
        forbid_other(caller, signed.signer)
        prop = open_statement(signed, self.config.federation_id)
        if not isinstance(prop, ProposalStatement):
            raise InvalidInput(f"statement: a {signed.type} statement is not a proposal")
        self._fresh(signed)
        if prop.kind not in self.kinds:
            raise InvalidInput(f"statement.kind: this coordinator runs the session kinds {sorted(self.kinds)}")
        params = proposal_params(prop)
        g = proposal_guarantee(prop)
        assert g is not None
        over = g.exceeds(self.rules.max_session_epsilon)
        if over is not None:
            raise InvalidInput(f"proposal refused: {over}")
        period = prop.discussion_deadline - signed.envelope.timestamp
        if period < self.rules.min_discussion_seconds:
            raise InvalidInput(f"statement.discussion_deadline: a discussion of {period} s is shorter than the "
                               f"federation's minimum of {self.rules.min_discussion_seconds} s")
        pid = proposal_id(signed)
        row = gsql.ProposalRow(pid, prop.kind, prop.title, caller, prop.discussion_deadline, params.rounds,
                               "discussion", 0, 0, signed.model_dump_json(), None, "")
        with self.store.transaction() as conn:
            if not gsql.insert_proposal(conn, row, self.now()):
                raise Conflict(f"proposal {pid} exists already")
        logger.info("proposal %s (%s, %d rounds) by %s", pid, prop.kind, params.rounds, caller)
        return self._summary(row, None)

    def proposals(self) -> ProposalList:
        with self.store.reading() as conn:
            rows = gsql.proposals(conn)
            return ProposalList(proposals=[self._summary(r, self._tally(conn, r)[0]) for r in rows])

    def statement(self, caller: str, pid: str, expected_type: str, post: StatementPost) -> ActionReceipt:
        signed = post.statement
        forbid_other(caller, signed.signer)
        st = open_statement(signed, self.config.federation_id)
        if st.type != expected_type:
            raise InvalidInput(f"statement.type: this route takes a {expected_type} statement, not {st.type}")
        if getattr(st, "proposal_id", None) != pid:
            raise InvalidInput("statement.proposal_id: the statement is about another proposal than the path")
        self._fresh(signed)
        with self.store.transaction() as conn:
            row = self._row(pid, conn)
            phase = row.phase
            if phase == "discussion" and self.now() > row.deadline and st.type in ("ballot", "opt_in"):
                raise WrongPhase(f"the discussion of {pid} ended; ballots and opt-ins are closed")
            if st.type not in _ACCEPTS.get(phase, frozenset()):
                raise WrongPhase(f"proposal {pid} is {phase}: it takes no {st.type} statement now")
            if st.type == "adopt":
                result = json.loads(row.result_json or "null") or {}
                if (result.get("version"), result.get("digest")) != (st.version, st.digest):
                    raise InvalidInput("statement: the adoption vote names another version or digest than the result")
            gsql.add_statement(conn, pid, st.type, caller, signed.model_dump_json(), self.now())
        note = " (takes effect from the next round; what was aggregated stays)" if st.type == "opt_out" else ""
        return ActionReceipt(detail=f"{st.type} published{note}")

    def report(self, pid: str) -> SessionReport:
        with self.store.reading() as conn:
            row = self._row(pid, conn)
            t, sts, members = self._tally(conn, row)
            recs = gsql.rounds(conn, pid)
        prop = SignedStatement.model_validate_json(row.signed_json)
        params = proposal_params(open_statement(prop, self.config.federation_id))
        g = proposal_guarantee(open_statement(prop, self.config.federation_id))
        spent = [r for r in recs if r.epsilon > 0]
        eps = gdp_epsilon(compose_gdp([params.mu_per_round] * len(spent)), params.delta) if spent else 0.0
        return SessionReport(
            summary=self._summary(row, t), proposal=prop, statements=sts, members=members,
            guarantee=None if g is None else g.model_dump(mode="json"),
            rounds=[SessionRoundReport(round=r.round, outcome=r.outcome, noisy_participants=r.noisy_participants,
                                       epsilon_per_participant=r.epsilon, finished_at=r.finished_at,
                                       result=json.loads(r.result_json) if r.result_json else None) for r in recs],
            epsilon_spent_per_participant=eps, result=json.loads(row.result_json) if row.result_json else None)

    def adopted_codebook(self) -> Any:
        """The codebook the federation adopted by vote last (its coordinator-side count, cached per
        governance state: :class:`AdoptionCount`), or None: what the coordinator then announces
        and serves for unreleased slots."""
        return self.adoption.codebook()

    # ------------------------------------------------------------------------------ rounds
    def round_state(self, caller: str, pid: str, round_no: int | None = None) -> RoundState:
        with self.rounds.reading() as conn:  # a round ends and is recorded in one transaction
            row = self._row(pid, conn)
            a = self.rounds.attempt(conn, pid, self.rounds.current(row))
            finished = {r.round: r.outcome for r in gsql.rounds(conn, pid)}
            return self.rounds.view(a, caller, round_no, finished, pid)

    def secagg_post(self, caller: str, pid: str, round_no: int, kind: str, message: SignedMessage) -> ActionReceipt:
        """The message, the phase close it completes and the round's record commit together."""
        self._row(pid)
        with self.rounds.writing(pid) as conn:
            row = self._row(pid, conn)
            ended = self.rounds.receive(conn, pid, round_no, kind, caller, message)
            if ended is not None:
                self._finish(conn, row, *ended)
        return ActionReceipt(detail=f"{kind} accepted")

    def tick(self) -> None:
        """Decide proposals whose discussion ended, start session rounds and advance them on their
        deadlines (every process ticks; the first to find a transition due under the write lock takes it)."""
        with self.store.reading() as conn:
            rows = [r for r in gsql.proposals(conn) if r.phase not in FINAL_PHASES]
        for row in rows:  # one proposal that cannot advance (its stored phase contradicts the tally) stops no other
            try:
                if row.in_round:
                    self._tick_round(row.proposal_id)
                else:
                    self._step(row)
            except Exception:
                logger.exception("governance tick of proposal %s failed", row.proposal_id)

    def _tick_round(self, pid: str) -> None:
        with self.rounds.reading() as conn:
            run = self.rounds.current(self._row(pid, conn))
            a = self.rounds.attempt(conn, pid, run)
            if run is None or (a is not None and self.now() < a.deadline):
                return
        with self.rounds.writing(pid) as conn:
            row = self._row(pid, conn)
            run = self.rounds.current(row)
            if run is None:
                return
            a = self.rounds.attempt(conn, pid, run)
            if a is None:  # opened by a coordinator that kept it in memory: nothing to continue from
                self._finish(conn, row, None, None)
            elif self.now() >= a.deadline:
                logger.info("session %s round %d %s deadline: %d of %d posted", pid, a.round_id, a.phase,
                            len(a.posted), len(a.expected))
                ended = self.rounds.advance(conn, a)
                if ended is not None:
                    self._finish(conn, row, *ended)

    def _finish(self, conn: Any, row: gsql.ProposalRow, a: Any, closed: Any) -> None:
        run = self.rounds.current(row)
        assert run is not None
        if self._retry(conn, row, run, a, closed):
            return
        done = self.rounds.finish(run, a, closed, self.kinds[row.kind], self._context(row, conn), conn)
        self._record(conn, row, done)

    def _retry(self, conn: Any, row: gsql.ProposalRow, run: Any, a: Any, closed: Any) -> bool:
        """Try the round again (next attempt, same transaction) with the members who synced, still
        opted in and within budget, when its attempt failed before anything was spent."""
        return self.rounds.retry(conn, run, a, closed, lambda: set(self._tally(conn, row)[0].participants),
                                 lambda: self.kinds[row.kind].layout(self._context(row, conn)).dim)

    def _state(self, row: gsql.ProposalRow) -> SessionState:
        return SessionState(phase=row.phase, round=row.finished_rounds, rounds=row.rounds)  # type: ignore[arg-type]

    def _step(self, row: gsql.ProposalRow) -> None:
        with self.store.reading() as conn:
            t = self._tally(conn, row)[0]
        state = self._state(row)
        if state.phase == "discussion":
            new = decide(state, t)
            if new.phase != state.phase:
                self._set(row.proposal_id, phase=new.phase, reason="; ".join(t.reasons))
                logger.info("proposal %s: %s %s", row.proposal_id, new.phase, "; ".join(t.reasons))
            return
        new = start_round(state, t)
        if new.phase in FINAL_PHASES:
            self._set(row.proposal_id, phase=new.phase,
                      reason="halted by vote" if new.phase == "halted" else "all rounds done")
            return
        self._start(row, new, t)

    def _start(self, row: gsql.ProposalRow, new: SessionState, t: Tally) -> None:
        """Open the next round in one write transaction that first re-reads the proposal, so of
        several processes ticking at once only one opens it."""
        pid = row.proposal_id
        prop = open_statement(SignedStatement.model_validate_json(row.signed_json), self.config.federation_id)
        params = proposal_params(prop)
        kind = self.kinds[row.kind]
        dim = kind.layout(self._context(row)).dim
        with self.rounds.writing(pid) as conn:
            again = self._row(pid, conn)
            if again.in_round or again.phase != row.phase or again.finished_rounds != row.finished_rounds:
                return  # another process took this step
            members = set(self.store.member_keys(t.participants, conn))
            roster = self.rounds.affordable(sorted(m for m in t.participants if m in members), params)
            if len(roster) < params.min_participants:
                gsql.set_proposal(conn, pid, phase="halted", reason=(
                    f"round {new.running_round}: {len(roster)} of {len(t.participants)} opted-in members can take "
                    f"part (member, privacy budget left), fewer than {params.min_participants}"))
                return
            gsql.set_proposal(conn, pid, phase="running", in_round=1)
            run = self.rounds.current(self._row(pid, conn))
            assert run is not None and run.round == int(new.running_round or 1)
            self.rounds.open(conn, run, roster, dim)
        logger.info("session %s round %s of %d started with %d participants", pid, new.running_round,
                    row.rounds, len(roster))

    def _results(self, row: gsql.ProposalRow, conn: Any = None) -> list[Any]:
        """The kind's results of the session's released rounds, in order."""
        model = self.kinds[row.kind].result_model
        if conn is None:
            with self.store.reading() as c:
                recs = gsql.rounds(c, row.proposal_id)
        else:
            recs = gsql.rounds(conn, row.proposal_id)
        return [model.model_validate_json(r.result_json) for r in recs if r.result_json]

    def _context(self, row: gsql.ProposalRow, conn: Any = None) -> Any:
        return context_after(self.kinds[row.kind], self._initial_context(row.kind), self._results(row, conn))

    def _record(self, conn: Any, row: gsql.ProposalRow, done: RoundDone) -> None:
        """Record a finished round (in the transaction that ended it) and, after the last, the
        session's result."""
        pid = row.proposal_id
        state = finish_round(self._state(row).model_copy(update={"running_round": done.round}))
        fields: dict[str, Any] = {"phase": state.phase, "finished_rounds": state.round, "in_round": 0}
        if state.phase == "completed":
            results = self._results(row, conn) + ([done.result] if done.result is not None else [])
            fields["result_json"] = json.dumps(self._final(row, results))
        gsql.record_round(conn, pid, gsql.RoundRecord(
            done.round, done.outcome, done.noisy_participants, done.epsilon, done.charged, self.now(),
            None if done.result is None else done.result.model_dump_json()))
        gsql.set_proposal(conn, pid, **fields)
        logger.info("session %s round %d %s", pid, done.round, done.outcome)

    def _final(self, row: gsql.ProposalRow, results: list[Any]) -> dict[str, Any] | None:
        """The session's published result: the kind's final result, and for a kind whose context
        carries a codebook, the new codebook version with its digest (what adoption votes name)."""
        if not results:
            return None
        kind = self.kinds[row.kind]
        out: dict[str, Any] = {"result": kind.final_result(results).model_dump(mode="json")}
        ctx = context_after(kind, self._initial_context(row.kind), results)
        codebook = getattr(ctx, "codebook", None)
        if codebook is not None:
            out.update(version=codebook.version, digest=codebook_digest(codebook.vectors),
                       vectors_b64=codebook.to_b64(), slots=codebook.slots, dim=codebook.dim)
        return out

    def _set(self, pid: str, **fields: Any) -> None:
        with self.store.transaction() as conn:
            gsql.set_proposal(conn, pid, **fields)


def governance_service(config: CoordinatorConfig, store: CoordinatorStore, verifier: Any, engine: Any,
                       codebook: np.ndarray | None, now: Callable[[], float]) -> GovernanceService:
    """The coordinator's governance over the learning package's session kinds. The first round
    of a codebook session refines the codebook the federation uses (the one adopted by vote last,
    else the coordinator's, else the shipped version it announces)."""
    from continuum_mcp.federation.learning import SESSION_KINDS, SessionContext
    from continuum_mcp.privacy.codebook import Codebook

    def initial(kind: str) -> Any:
        if kind != "codebook_refinement":
            return SessionContext()
        cb = gov.adopted_codebook() or (Codebook(codebook, config.codebook_version) if codebook is not None
                                        else Codebook.load(config.codebook_version))
        return SessionContext(codebook=cb)

    rounds = SessionRounds(store, verifier, engine.privacy, config.phase_timeout_seconds, now, config.federation_id,
                           config.governance)
    gov = GovernanceService(config, store, rounds, SESSION_KINDS, initial, now)
    return gov


__all__ = ["GovernanceService", "governance_service"]
