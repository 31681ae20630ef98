"""The tally every client runs over the published signed statements of one proposal.

Why pure and run by every client: the coordinator publishes statements but is not trusted to
count them. Each client verifies every signature against the admitted members' keys, keeps one
statement per identity, applies the rules below and reaches its own decision; it takes part in
(or adopts the result of) a session only if that decision says so. A coordinator that forges a
ballot (a bad signature, or a key that is not a member's) has it dropped and listed in
``invalid``; a coordinator that miscounts is contradicted by every client's own count.

Rules (decided here, documented in docs/governance.md):
- **One ballot per identity.** A member may change its ballot during the discussion: the latest
  (by the signed timestamp, then nonce) ballot signed no later than the deadline counts; later
  ones do not.
- **Approval.** approvals >= ``approval_fraction`` (75 %) of the members who voted approve or
  reject. Abstentions are counted and shown but are in neither side of the fraction (an abstainer
  says "I do not object, I do not endorse"); with no approve or reject vote nothing is approved.
- **Consent.** at least ``min_opt_ins`` (10) identities whose latest consent statement signed by
  the deadline is an opt-in. An opt-out may come at any time: it takes effect from the next round
  (what was already aggregated stays in the DP output). Opt-ins after the deadline do not count.
- **Guarantee cap.** a proposal whose computed epsilon exceeds ``max_session_epsilon`` is refused
  (the numbers are in ``reasons``), as is one whose discussion is shorter than
  ``min_discussion_seconds``.
- **Halt.** halt votes signed after the deadline; the session halts when they exceed
  ``halt_fraction`` (default one half: a majority) of the voters (identities with a ballot or a
  halt vote).
- **Adoption.** per (version, digest), the latest adoption vote of each identity; adopted when
  approvals >= ``approval_fraction`` of approve + reject and approvals >= ``min_adoption_votes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from continuum_mcp.errors import ContinuumError
from continuum_mcp.privacy.ledger import LedgerBudget
from continuum_mcp.federation.governance._statements import (
    AdoptionStatement,
    BallotStatement,
    ConsentStatement,
    HaltStatement,
    ProposalStatement,
    SignedStatement,
    open_statement,
    proposal_id,
)

Decision = Literal["discussion", "approved", "rejected", "refused"]
#: the defaults of the federated-learning card; a federation may only be stricter
DEFAULT_APPROVAL_FRACTION = 0.75
DEFAULT_MIN_OPT_INS = 10
DEFAULT_DISCUSSION_SECONDS = 7 * 86400
#: one session at the cap per privacy window (the ledger composes exactly, so several smaller
#: sessions fit in the same budget, e.g. the two default kinds together: docs/governance.md)
DEFAULT_SESSIONS_PER_WINDOW = 1


class GovernanceRules(BaseModel):
    """The rules a tally applies (the client's own; see :meth:`at_least_as_strict`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approval_fraction: float = Field(default=DEFAULT_APPROVAL_FRACTION, gt=0, le=1)
    min_opt_ins: int = Field(default=DEFAULT_MIN_OPT_INS, ge=1)
    halt_fraction: float = Field(default=0.5, ge=0, lt=1, description="Halt passes when halt votes exceed this "
                                                                       "fraction of the voters.")
    max_session_epsilon: float = Field(default=10.0, gt=0, description="The federation's per-session cap.")
    min_discussion_seconds: int = Field(default=DEFAULT_DISCUSSION_SECONDS, ge=0)
    default_discussion_seconds: int = Field(default=DEFAULT_DISCUSSION_SECONDS, ge=0)
    min_adoption_votes: int = Field(default=DEFAULT_MIN_OPT_INS, ge=1)
    sessions_per_window: int = Field(default=DEFAULT_SESSIONS_PER_WINDOW, ge=1, le=100,
                                     description="Learning sessions a member may take part in per privacy window: "
                                                 "its learning budget is this times the per-session cap.")

    def learning_budget(self, window: timedelta, delta: float) -> LedgerBudget:
        """The ledger's window budget of the ``learning`` purpose: the per-session cap times the
        sessions allowed per window (at the ledger's ``delta``, over its ``window``). Releases keep
        their own window budget; the lifetime bound covers both."""
        return LedgerBudget(window=window, epsilon=self.max_session_epsilon * self.sessions_per_window, delta=delta)

    def at_least_as_strict(self, other: GovernanceRules) -> GovernanceRules:
        """The stricter of two rule sets, field by field (a client combines its own with the
        federation's published ones, so a coordinator cannot relax what a client counts)."""
        return GovernanceRules(
            approval_fraction=max(self.approval_fraction, other.approval_fraction),
            min_opt_ins=max(self.min_opt_ins, other.min_opt_ins),
            halt_fraction=min(self.halt_fraction, other.halt_fraction),
            max_session_epsilon=min(self.max_session_epsilon, other.max_session_epsilon),
            min_discussion_seconds=max(self.min_discussion_seconds, other.min_discussion_seconds),
            default_discussion_seconds=max(self.default_discussion_seconds, other.default_discussion_seconds),
            min_adoption_votes=max(self.min_adoption_votes, other.min_adoption_votes),
            sessions_per_window=min(self.sessions_per_window, other.sessions_per_window))


class InvalidStatement(BaseModel):
    signer: str
    type: str
    reason: str


class Adoption(BaseModel):
    version: str
    digest: str
    approve: int
    reject: int
    adopted: bool


class Tally(BaseModel):
    """One party's count of one proposal's signed statements."""

    proposal_id: str
    proposer: str
    decision: Decision
    reasons: list[str] = Field(default_factory=list)
    approve: int = 0
    reject: int = 0
    abstain: int = 0
    approval_share: float | None = Field(default=None, description="approve / (approve + reject)")
    concerns: list[str] = Field(default_factory=list)
    opt_ins_at_deadline: int = 0
    participants: list[str] = Field(default_factory=list, description="Opted in at the deadline and not opted out "
                                                                      "since (as of the tally's time).")
    halt_votes: int = 0
    halted: bool = False
    adoptions: list[Adoption] = Field(default_factory=list)
    invalid: list[InvalidStatement] = Field(default_factory=list)

    def adopted(self, version: str, digest: str) -> bool:
        return any(a.adopted and a.version == version and a.digest == digest for a in self.adoptions)


def _order(s: SignedStatement) -> tuple[int, str]:
    return s.envelope.timestamp, s.envelope.nonce


def open_proposal(proposal: SignedStatement, federation_id: str) -> ProposalStatement:
    st = open_statement(proposal, federation_id)
    if not isinstance(st, ProposalStatement):
        from continuum_mcp.errors import InvalidInput

        raise InvalidInput(f"a {proposal.type} statement is not a proposal")
    return st


def tally(proposal: SignedStatement, statements: Sequence[SignedStatement], members: Mapping[str, str], *,
          federation_id: str, rules: GovernanceRules, now: float, epsilon: float | None) -> Tally:
    """Count ``statements`` of ``proposal`` as of ``now``. ``members`` maps each admitted
    identity to its base64 public key; ``epsilon`` is the guarantee this party computed from the
    proposal's parameters (None: the kind or parameters are unknown to it, so it is refused)."""
    pid = proposal_id(proposal)
    prop = open_proposal(proposal, federation_id)
    out = Tally(proposal_id=pid, proposer=proposal.signer, decision="discussion")
    deadline = prop.discussion_deadline
    ballots: dict[str, tuple[tuple[int, str], BallotStatement]] = {}
    consent: dict[str, tuple[tuple[int, str], ConsentStatement]] = {}
    opted_out_after: set[str] = set()
    halts: set[str] = set()
    adopt: dict[tuple[str, str], tuple[tuple[int, str], AdoptionStatement]] = {}

    for s in sorted(statements, key=_order):
        try:
            st = open_statement(s, federation_id)
            if members.get(s.signer) != s.envelope.public_key:
                raise ValueError("the signer is not an admitted member (or not with this key)")
            if getattr(st, "proposal_id", None) != pid:
                raise ValueError("the statement is about another proposal")
        except (ContinuumError, ValueError) as exc:
            out.invalid.append(InvalidStatement(signer=s.signer, type=s.type, reason=getattr(exc, "message", str(exc))))
            continue
        ts = s.envelope.timestamp
        if isinstance(st, BallotStatement):
            if ts <= deadline:
                ballots[s.signer] = (_order(s), st)
        elif isinstance(st, ConsentStatement):
            if ts <= deadline:
                consent[s.signer] = (_order(s), st)
            elif st.type == "opt_out" and ts <= now:
                opted_out_after.add(s.signer)
        elif isinstance(st, HaltStatement):
            if deadline < ts <= now:
                halts.add(s.signer)
        elif isinstance(st, AdoptionStatement):
            adopt[(s.signer, f"{st.version}/{st.digest}")] = (_order(s), st)

    for _, b in ballots.values():
        setattr(out, b.choice, getattr(out, b.choice) + 1)
        if b.concern:
            out.concerns.append(b.concern)
    at_deadline = sorted(m for m, (_, c) in consent.items() if c.type == "opt_in")
    out.opt_ins_at_deadline = len(at_deadline)
    out.participants = [m for m in at_deadline if m not in opted_out_after]
    decided = out.approve + out.reject
    out.approval_share = out.approve / decided if decided else None
    voters = set(ballots) | halts
    out.halt_votes = len(halts)
    out.halted = bool(halts) and len(halts) > rules.halt_fraction * len(voters)
    out.adoptions = _adoptions(adopt, rules)
    out.decision, out.reasons = _decide(out, prop, proposal, rules, now, epsilon)
    return out


def _decide(out: Tally, prop: ProposalStatement, signed: SignedStatement, rules: GovernanceRules, now: float,
            epsilon: float | None) -> tuple[Decision, list[str]]:
    if epsilon is None:
        return "refused", [f"session kind {prop.kind!r} or its parameters are not supported by this client"]
    if epsilon > rules.max_session_epsilon + 1e-12:
        return "refused", [f"the computed guarantee epsilon {epsilon:.4g} exceeds the federation's per-session cap "
                           f"{rules.max_session_epsilon:.4g}"]
    if prop.discussion_deadline - signed.envelope.timestamp < rules.min_discussion_seconds:
        return "refused", [f"the discussion period of {prop.discussion_deadline - signed.envelope.timestamp} s is "
                           f"shorter than the federation's minimum {rules.min_discussion_seconds} s"]
    if now <= prop.discussion_deadline:
        return "discussion", []
    reasons = []
    if out.approval_share is None or out.approval_share < rules.approval_fraction - 1e-12:
        share = "no approve or reject vote" if out.approval_share is None else f"{out.approval_share:.0%} approval"
        reasons.append(f"{share} ({out.approve} approve, {out.reject} reject, {out.abstain} abstain); "
                       f"{rules.approval_fraction:.0%} of approve + reject is needed")
    if out.opt_ins_at_deadline < rules.min_opt_ins:
        reasons.append(f"{out.opt_ins_at_deadline} opt-ins at the deadline; at least {rules.min_opt_ins} are needed")
    return ("rejected", reasons) if reasons else ("approved", [])


def _adoptions(adopt: Mapping[tuple[str, str], tuple[Any, AdoptionStatement]], rules: GovernanceRules) -> list[Adoption]:
    counts: dict[tuple[str, str], list[int]] = {}
    for (_, _key), (_, st) in adopt.items():
        c = counts.setdefault((st.version, st.digest), [0, 0])
        c[0 if st.choice == "approve" else 1] += 1
    out = []
    for (version, digest), (yes, no) in sorted(counts.items()):
        adopted = yes >= rules.min_adoption_votes and yes >= rules.approval_fraction * (yes + no) - 1e-12
        out.append(Adoption(version=version, digest=digest, approve=yes, reject=no, adopted=adopted))
    return out


__all__ = ["Adoption", "Decision", "GovernanceRules", "InvalidStatement", "Tally", "open_proposal", "tally"]
