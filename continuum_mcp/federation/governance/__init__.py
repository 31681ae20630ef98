"""Governance of learning sessions (pure): signed statements, the tally every client runs, and the
session state machine. No I/O: the coordinator stores and publishes statements, the client fetches
them; both count with :func:`tally`.
"""

from continuum_mcp.federation.governance._session import (
    FINAL_PHASES,
    SessionPhase,
    SessionState,
    decide,
    finish_round,
    start_round,
)
from continuum_mcp.federation.governance._statements import (
    AdoptionStatement,
    BallotStatement,
    Choice,
    ConsentStatement,
    HaltStatement,
    PROPOSAL_ID_PATTERN,
    ProposalStatement,
    SignedStatement,
    Statement,
    StatementType,
    codebook_digest,
    open_statement,
    proposal_id,
    sign_statement,
)
from continuum_mcp.federation.governance._tally import (
    Adoption,
    Decision,
    GovernanceRules,
    InvalidStatement,
    Tally,
    open_proposal,
    tally,
)

__all__ = [
    "FINAL_PHASES", "Adoption", "AdoptionStatement", "BallotStatement", "Choice", "ConsentStatement", "Decision",
    "GovernanceRules", "HaltStatement", "InvalidStatement", "PROPOSAL_ID_PATTERN", "ProposalStatement", "SessionPhase",
    "SessionState",
    "SignedStatement", "Statement", "StatementType", "Tally", "codebook_digest", "decide", "finish_round",
    "open_proposal", "open_statement", "proposal_id", "sign_statement", "start_round", "tally",
]
