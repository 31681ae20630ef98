"""The governance part of the wire contract (``protocol`` imports these and routes them).

Everything a member needs to count for itself travels here: the signed proposal, every signed
statement the coordinator received, and the keys of the admitted members who signed them. The
coordinator's own tally is included and labelled informative.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from continuum_mcp.federation.governance._session import SessionPhase
from continuum_mcp.federation.governance._statements import SignedStatement
from continuum_mcp.federation.governance._tally import GovernanceRules, Tally

#: shown with every report and before an opt-out: what opting out does and does not undo
OPT_OUT_NOTE = ("Opting out takes effect from the next round. What was already aggregated stays in the "
                "differentially private output and in your privacy ledger.")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StatementPost(_Model):
    """Body of every governance POST: one signed statement, published as it is."""

    statement: SignedStatement


class GovernanceInfo(_Model):
    rules: GovernanceRules = Field(description="The federation's rules; a client counts with the stricter of these "
                                               "and its own.")
    kinds: list[str] = Field(description="Session kinds this coordinator can run.")


class ProposalSummary(_Model):
    proposal_id: str
    title: str
    kind: str
    proposer: str
    discussion_deadline: int
    phase: SessionPhase
    round: int = Field(description="Rounds finished.")
    rounds: int
    coordinator_tally: Tally | None = Field(default=None, description="Informative only: clients count themselves.")


class ProposalList(_Model):
    proposals: list[ProposalSummary]


class SessionRoundReport(_Model):
    round: int = Field(description="1-based round of the session.")
    outcome: str = Field(description="released or aborted")
    noisy_participants: float | None = Field(description="The DP count of the round's contributors.")
    epsilon_per_participant: float = Field(description="What the round charged each participant's ledger (at the "
                                                       "session's delta); 0 if nothing was sent.")
    finished_at: float
    result: dict[str, Any] | None = Field(default=None, description="The kind's result of a released round (the "
                                                                    "next round's context is built from these).")


class SessionReport(_Model):
    """A session as every member may read it, at no credit cost."""

    summary: ProposalSummary
    proposal: SignedStatement
    statements: list[SignedStatement]
    members: dict[str, str] = Field(description="instance id -> base64 public key of each admitted signer.")
    guarantee: dict[str, Any] | None = Field(description="The computed guarantee of the proposal's parameters.")
    rounds: list[SessionRoundReport]
    epsilon_spent_per_participant: float = Field(description="All rounds so far together, at the session's delta.")
    result: dict[str, Any] | None = Field(default=None, description="The kind's output (e.g. the new codebook, the "
                                                                    "histograms); None before the first round.")
    note: str = OPT_OUT_NOTE


__all__ = ["OPT_OUT_NOTE", "GovernanceInfo", "ProposalList", "ProposalSummary", "SessionReport",
           "SessionRoundReport", "StatementPost"]
