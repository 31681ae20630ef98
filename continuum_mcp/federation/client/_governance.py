"""A member's side of governance: propose, vote, consent, halt, adopt -- and count for itself.

Why the client counts: the coordinator publishes every signed statement but is not trusted to
tally them. :meth:`Governance.verified` fetches a session's report, runs the pure
:func:`governance.tally` over the signed statements with this client's own rules (the stricter of
its defaults and the federation's published ones) and the guarantee it computes itself from the
signed parameters, and refuses (``CryptoError``) when the coordinator's claims contradict it: a
session it runs that the client's tally does not approve, a halted session it keeps running, a
forged or altered statement it presents, a tally it miscounts. The client takes part in a
session round, or adopts a result, only through this check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from continuum_mcp._governance_app import consents as _consents
from continuum_mcp._governance_app import set_consent as _set_consent
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.errors import CryptoError, InvalidInput, NotFound, WrongPhase
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.client._governance_log import OwnStatements
from continuum_mcp.federation.client._rounds import LedgerCharge, run_round
from continuum_mcp.federation.client._seats import SessionSeats
from continuum_mcp.federation.governance import (
    AdoptionStatement,
    BallotStatement,
    ConsentStatement,
    GovernanceRules,
    HaltStatement,
    ProposalStatement,
    Tally,
    codebook_digest,
    open_proposal,
    sign_statement,
    tally,
)
from continuum_mcp.federation.governance._wire import OPT_OUT_NOTE, GovernanceInfo, SessionReport, StatementPost
from continuum_mcp.federation.governance.guarantee import (
    context_after,
    proposal_guarantee,
    proposal_params,
    session_label,
)
from continuum_mcp.federation.participant import RoundOutcome, RoundParticipant
from continuum_mcp.federation.protocol import SESSION_ROUTES
from continuum_mcp.privacy.ledger import LedgerStatus, PrivacyLedger
from continuum_mcp.secagg import SecAggClient

#: a client's own rules: the card's thresholds, which no coordinator can relax; the discussion
#: minimum and the cap are taken from the federation when they are stricter
CLIENT_RULES = GovernanceRules(min_discussion_seconds=0)


class SessionAPI:
    """The coordinator API with a release round's route names mapped onto one session's routes,
    so the one :class:`RoundParticipant` also takes part in session rounds."""

    def __init__(self, api: CoordinatorAPI, proposal_id: str) -> None:
        self._api, self._pid = api, proposal_id

    def call(self, name: str, body: BaseModel | None = None, **path: Any) -> Any:
        return self._api.call(SESSION_ROUTES[name], body, proposal_id=self._pid, **path)


class VerifiedSession(BaseModel):
    """A report together with this client's own count of it."""

    report: SessionReport
    tally: Tally
    agrees: bool = Field(description="The coordinator's informative tally says the same as ours.")
    data_description: str
    guarantee: dict[str, Any] | None
    note: str = OPT_OUT_NOTE
    own_privacy: LedgerStatus | None = Field(default=None, description="This member's ledger (learning budget, "
                                             "and every purpose of the window composed), in a report.")


class SessionTurn(BaseModel):
    proposal_id: str
    rounds_taken: list[int] = Field(default_factory=list)
    refused: str = ""
    refused_code: str = Field(default="", description="The error code of a refusal (``not_opted_in`` when this "
                                                      "member is not among the session's participants).")
    session_over: bool = Field(default=False, description="The session ended (completed, rejected, halted).")
    outcomes: list[RoundOutcome] = Field(default_factory=list)


class Governance:
    """Governance for one membership. ``inputs(kind, context)`` gives this instance's local input
    of a session kind (the kind computes its vector from it); ``ledger()`` opens the privacy ledger."""

    def __init__(self, api: Callable[[], CoordinatorAPI], identity: Identity, federation_id: str,
                 ledger: Callable[[], PrivacyLedger], inputs: Callable[[str, Any], Any],
                 initial_context: Callable[[str], Any], *, rules: GovernanceRules = CLIENT_RULES,
                 now: Callable[[], float] = time.time, poll_seconds: float = 0.2,
                 consent_dir: Path | None = None, seats: SessionSeats | None = None) -> None:
        self._api, self.identity, self.federation_id, self._consent_dir = api, identity, federation_id, consent_dir
        self._seats = seats or SessionSeats(consent_dir)
        self._ledger, self._inputs, self._initial = ledger, inputs, initial_context
        self.own_rules, self.now, self._poll = rules, now, poll_seconds
        self.own = OwnStatements(consent_dir)  #: what this member signed and the coordinator accepted

    # ------------------------------------------------------------------------------ statements
    def _sign(self, statement: BaseModel) -> StatementPost:
        return StatementPost(statement=sign_statement(self.identity, statement, timestamp=int(self.now())))

    def _publish(self, route: str, statement: BaseModel, proposal_id: str) -> Any:
        """Sign and post ``statement``, keep it among this member's own, and check at once that the
        coordinator publishes it (and every earlier one): ``StatementDropped`` otherwise."""
        post = self._sign(statement)
        receipt = self._api().call(route, post, proposal_id=proposal_id)
        self.own.add(proposal_id, post.statement)
        self.verified(proposal_id)
        return receipt

    def rules(self) -> GovernanceRules:
        """The rules this client counts with: its own, made stricter by the federation's."""
        info: GovernanceInfo = self._api().call("gov_info")
        return self.own_rules.at_least_as_strict(info.rules)

    def propose(self, kind: str, *, title: str, expected_benefit: str, data_description: str | None = None,
                discussion_seconds: int | None = None, **params: Any) -> Any:
        """Sign and publish a proposal of a session of ``kind`` (``params``: SessionParams fields)."""
        from continuum_mcp.federation.learning import SESSION_KINDS, SessionParams

        if kind not in SESSION_KINDS:
            raise InvalidInput(f"kind: one of {sorted(SESSION_KINDS)}")
        sp = SessionParams.build(kind=kind, **params)
        rules = self.rules()
        period = rules.default_discussion_seconds if discussion_seconds is None else int(discussion_seconds)
        prop = ProposalStatement(federation_id=self.federation_id, title=title, kind=kind,
                                 params_json=sp.model_dump_json(),
                                 data_description=data_description or SESSION_KINDS[kind].data_touched,
                                 expected_benefit=expected_benefit, discussion_deadline=int(self.now()) + period)
        post = self._sign(prop)
        summary = self._api().call("gov_propose", post)
        self.own.add(summary.proposal_id, post.statement)
        self.verified(summary.proposal_id)
        return summary

    def proposals(self) -> list[Any]:
        return list(self._api().call("gov_proposals").proposals)

    def vote(self, proposal_id: str, choice: str, concern: str = "") -> Any:
        return self._publish("gov_ballot", BallotStatement(
            federation_id=self.federation_id, proposal_id=proposal_id, choice=choice, concern=concern), proposal_id)

    def opt_in(self, proposal_id: str) -> VerifiedSession:
        """Opt in, after checking the proposal (signature, guarantee within the cap); returns what
        the user consents to (the data description and the guarantee)."""
        v = self.verified(proposal_id)
        if v.tally.decision == "refused":
            raise InvalidInput(f"not opting in: {'; '.join(v.tally.reasons)}")
        self._publish("gov_opt_in", ConsentStatement(
            federation_id=self.federation_id, proposal_id=proposal_id, type="opt_in"), proposal_id)
        _set_consent(self._consent_dir, proposal_id, v.report.summary.kind)
        return v

    def opt_out(self, proposal_id: str) -> Any:
        """Opt out: from the next round on (what was aggregated stays); local recording for the
        session stops at once."""
        _set_consent(self._consent_dir, proposal_id, None)
        return self._publish("gov_opt_out", ConsentStatement(
            federation_id=self.federation_id, proposal_id=proposal_id, type="opt_out"), proposal_id)

    def halt(self, proposal_id: str) -> Any:
        return self._publish("gov_halt", HaltStatement(federation_id=self.federation_id, proposal_id=proposal_id),
                             proposal_id)

    def adopt(self, proposal_id: str, approve: bool = True) -> Any:
        """Vote on adopting the session's result, named by its version and digest, after checking
        that this client's own tally approved the session that produced it."""
        v = self.verified(proposal_id)
        res = v.report.result or {}
        if v.tally.decision != "approved" or "digest" not in res:
            raise WrongPhase(f"session {proposal_id} has no result to adopt ({v.report.summary.phase})")
        return self._publish("gov_adopt", AdoptionStatement(
            federation_id=self.federation_id, proposal_id=proposal_id, version=res["version"], digest=res["digest"],
            choice="approve" if approve else "reject"), proposal_id)

    def adopted_codebook(self, version: str) -> Any:
        """The codebook ``version`` the federation announces, once this client's own count of the
        adoption votes adopted exactly those vectors (name and digest, recomputed from the bytes);
        ``CryptoError`` otherwise."""
        from continuum_mcp.privacy.codebook import Codebook

        for p in reversed(self.proposals()):
            if p.kind != "codebook_refinement" or p.phase != "completed":
                continue
            v = self.verified(p.proposal_id)
            res = v.report.result or {}
            if res.get("version") != version:
                continue
            cb = Codebook.from_b64(res["vectors_b64"], res["slots"], res["dim"], parent=None)
            if cb.version == version and codebook_digest(cb.vectors) == res["digest"] \
                    and v.tally.adopted(version, res["digest"]):
                return cb
        raise CryptoError(f"the federation announces codebook {version}, which this client's own count of the "
                          "adoption votes did not adopt: not re-slotting to it")

    def learning_ledger(self, rules: GovernanceRules | None = None) -> PrivacyLedger:
        """The own privacy ledger spending under the ``learning`` purpose: its window budget is the
        per-session cap times the sessions allowed per window (of the rules this client counts
        with); releases keep theirs, and the lifetime bound covers both."""
        ledger = self._ledger()
        return ledger.for_purpose("learning", (rules or self.rules()).learning_budget(ledger.window, ledger.delta))

    # ------------------------------------------------------------------------------ checking
    def verified(self, proposal_id: str, rules: GovernanceRules | None = None) -> VerifiedSession:
        """The report with this client's own tally; ``CryptoError`` if the coordinator's claims
        (phase, halting) contradict it, ``StatementDropped`` if it does not publish a statement this
        member signed."""
        try:
            report: SessionReport = self._api().call("gov_report", proposal_id=proposal_id)
        except NotFound:
            self.own.check_listed(proposal_id, [])  # a proposal it accepted from us is gone: dropped
            raise
        prop = open_proposal(report.proposal, self.federation_id)
        g = proposal_guarantee(prop)
        t = tally(report.proposal, report.statements, report.members, federation_id=self.federation_id,
                  rules=rules or self.rules(), now=self.now(), epsilon=None if g is None else g.epsilon)
        if t.proposal_id != proposal_id:
            raise CryptoError("the coordinator answered with another proposal than the one asked for")
        phase = report.summary.phase
        if phase in ("approved", "running", "completed") and t.decision != "approved":
            raise CryptoError(f"the coordinator runs session {proposal_id} ({phase}) but this client's own tally "
                              f"of the signed statements says {t.decision}: {'; '.join(t.reasons) or 'not approved'}")
        if phase == "running" and t.halted and report.summary.round > _halt_round(report, t):
            raise CryptoError(f"session {proposal_id} was halted by vote but the coordinator keeps running it")
        self.own.check_listed(proposal_id, [report.proposal, *report.statements])  # none of ours dropped
        ct = report.summary.coordinator_tally
        agrees = ct is not None and (ct.decision, ct.approve, ct.reject, ct.abstain, ct.opt_ins_at_deadline) == (
            t.decision, t.approve, t.reject, t.abstain, t.opt_ins_at_deadline)
        return VerifiedSession(report=report, tally=t, agrees=agrees, data_description=prop.data_description,
                               guarantee=None if g is None else g.model_dump(mode="json"))

    def report(self, proposal_id: str) -> VerifiedSession:
        """:meth:`verified`, with this member's own ledger beside it: its learning budget and
        what every purpose of the window (releases and sessions) composes to."""
        rules = self.rules()
        v = self.verified(proposal_id, rules)
        with self.learning_ledger(rules) as ledger:
            v.own_privacy = ledger.status()
        return v

    # ------------------------------------------------------------------------------ rounds
    def standing_opt_ins(self) -> list[str]:
        """The sessions this member stands opted in to, as recorded on this machine (opt-in records,
        opt-out and the end of a session drop); the signed tally decides whether it takes part."""
        return [] if self._consent_dir is None else sorted(_consents(self._consent_dir))

    def session_over(self, proposal_id: str) -> None:
        """The session ended: drop the standing opt-in (local recording for it stops)."""
        _set_consent(self._consent_dir, proposal_id, None)

    def participate(self, proposal_id: str, *, timeout_seconds: float,
                    sleep: Callable[[float], bool | None] = time.sleep) -> SessionTurn:
        """Take part in the session's rounds until it ends, this member is not in a round's roster
        any more, ``timeout_seconds`` pass, or ``sleep`` returns True (a closing client's
        ``Event.wait``). Every round is checked first (own tally approves, not halted, this member
        still opted in) and charged to the own ledger before its masked input is sent. One turn per
        session at a time on this instance (:class:`SessionSeats`)."""
        turn = SessionTurn(proposal_id=proposal_id)
        with self._seats.seat(proposal_id) as secagg:
            if secagg is None:
                turn.refused, turn.refused_code = ("this instance is already taking part in this session (auto-sync "
                                                   "or another take-part call)"), "busy"
                return turn
            self._turn(turn, time.monotonic() + timeout_seconds, sleep, secagg)
        return turn

    def _turn(self, turn: SessionTurn, deadline: float, sleep: Callable[[float], bool | None],
              secagg: dict[str, SecAggClient]) -> None:
        from continuum_mcp.federation.learning import SESSION_KINDS, session_expectations

        proposal_id, rules, stopped = turn.proposal_id, self.rules(), False

        def nap(seconds: float) -> bool:
            nonlocal stopped
            stopped = stopped or bool(sleep(seconds))
            return stopped

        while not stopped and time.monotonic() < deadline:
            try:
                v = self.verified(proposal_id, rules)
            except CryptoError as exc:
                turn.refused, turn.refused_code = exc.message, exc.code
                return
            phase, t = v.report.summary.phase, v.tally
            if phase in ("rejected", "refused", "completed", "halted") or t.halted:
                self.session_over(proposal_id)
                turn.session_over = True
                return
            if self.identity.instance_id not in t.participants:
                turn.refused = turn.refused or "not opted in (or opted out)"
                turn.refused_code = turn.refused_code or "not_opted_in"
                return
            if phase != "running" or t.decision != "approved":
                nap(self._poll)
                continue
            prop = open_proposal(v.report.proposal, self.federation_id)
            params, kind = proposal_params(prop), SESSION_KINDS[prop.kind]
            results = [kind.result_model.model_validate(r.result) for r in v.report.rounds if r.result is not None]
            ctx = context_after(kind, self._initial(prop.kind), results)
            label = session_label(self.federation_id, proposal_id)
            expect = session_expectations(label, kind.layout(ctx).dim, params)
            inputs = self._inputs(prop.kind, ctx)
            part = RoundParticipant(self.identity, expect, lambda _p: kind.local_vector(inputs, ctx, params),
                                    sessions=secagg)
            charge = LedgerCharge(lambda: self.learning_ledger(rules), params.round_spend(), self.federation_id)
            out = run_round(SessionAPI(self._api(), proposal_id), part,  # type: ignore[arg-type]
                            timeout_seconds=max(1.0, deadline - time.monotonic()), poll_seconds=self._poll,
                            sleep=nap, before_post=charge)
            turn.outcomes.append(out)
            if out.took_part is not None:
                turn.rounds_taken.append(out.took_part)
            else:
                nap(self._poll)


def _halt_round(report: SessionReport, t: Tally) -> int:
    """The round by which a halt must have taken effect: the one running when it passed (the
    session stops at the next round). Without the time of passing, the rounds finished by the
    last halt vote's time plus one."""
    last_halt = max((s.envelope.timestamp for s in report.statements if s.type == "halt"), default=None)
    if last_halt is None:
        return report.summary.rounds
    done_by_then = sum(1 for r in report.rounds if r.finished_at <= last_halt)
    return done_by_then + 1






#: which adopted codebook this member slots with (its vectors: ``Codebook.save`` under CODEBOOKS_DIR)
ADOPTED_FILE = "codebook.json"
CODEBOOKS_DIR = "codebooks"


def save_adopted(federation_dir: Path, codebook: Any) -> None:
    """Keep the adopted codebook beside the membership and point at it."""
    from continuum_mcp._sqlite import atomic_write

    codebook.save(Path(federation_dir) / CODEBOOKS_DIR)
    atomic_write(Path(federation_dir) / ADOPTED_FILE, json.dumps({"version": codebook.version}).encode("utf-8"))


def load_adopted(federation_dir: Path) -> Any:
    """The adopted codebook kept by :func:`save_adopted` (``Codebook.load`` checks that its vectors
    hash to its name), or None."""
    from continuum_mcp.privacy.codebook import Codebook

    try:
        version = json.loads((Path(federation_dir) / ADOPTED_FILE).read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Codebook.load(str(version), directory=Path(federation_dir) / CODEBOOKS_DIR)


def follow_adopted(client: Any, current: Any, outbox: Any) -> Any:
    """The codebook a client slots with: ``current``, or the one the federation announces once the
    client's own count of the adoption votes adopted it (then kept on disk, and what waits in the
    outbox under the old version is dropped, so a release never mixes versions)."""
    info = client.api().federation()
    if info.codebook_version == current.version:
        return current
    cb = member_governance(client).adopted_codebook(info.codebook_version)
    save_adopted(client.dir, cb)
    outbox.clear()
    return cb


def join_adopted(client: Any, result: Any) -> Any:
    """Right after joining: follow the codebook version the federation adopted by vote before this
    member joined (counted by this client itself, as at every sync). A count that does not confirm
    it leaves the member joined but not slotting (``result.note`` says why; every sync refuses
    until it does)."""
    try:
        with client._sync_lock:
            client._codebook = follow_adopted(client, client.codebook, client._outbox)
    except CryptoError as exc:
        result.note = "; ".join(n for n in (result.note, f"not following the federation's codebook: {exc.message}")
                                if n)
    return result


def member_governance(client: Any) -> Governance:
    """The :class:`Governance` of a :class:`FederationClient`'s membership: its identity, API and
    ledger; the codebook it slots with as a codebook session's first context; its own pattern
    embeddings and opted-in usage record as the kinds' local inputs."""
    from continuum_mcp.federation.learning import SessionContext

    m = client._membership.require()

    def inputs(kind: str, _ctx: Any) -> Any:
        from continuum_mcp.federation.learning import UsageInputs, pattern_embeddings

        if kind == "codebook_refinement":
            return pattern_embeddings(client.store.all_memories(), client.generalizer)
        from continuum_mcp.federation.learning.recorder import UsageRecorder

        return UsageInputs(events=UsageRecorder(Path(client.settings.data_dir), opted_in=lambda: False).events())

    def initial(kind: str) -> Any:
        return SessionContext(codebook=client.codebook) if kind == "codebook_refinement" else SessionContext()

    return Governance(lambda: client.api(m), client.identity, m.federation_id, lambda: client.ledger(m), inputs,
                      initial, poll_seconds=client._poll, consent_dir=client.dir, seats=client.session_seats,
                      rules=client.governance_rules or CLIENT_RULES)
__all__ = ["ADOPTED_FILE", "CLIENT_RULES", "CODEBOOKS_DIR", "Governance", "SessionAPI", "SessionSeats", "SessionTurn",
           "VerifiedSession", "follow_adopted", "join_adopted", "load_adopted", "member_governance", "save_adopted"]
