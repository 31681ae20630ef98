"""Federated learning sessions (DESIGN.md section 4): what a session computes, and what it costs.

Pure machinery, no network I/O: governance (proposals, ballots, rounds) calls it.

- :class:`SessionParams` / :func:`session_guarantee`: a session's parameters and its computed
  user-level (epsilon, delta) over all rounds; :func:`session_round_params`,
  :func:`check_session_round`: the secure aggregation of one session round, for coordinator and
  clients.
- :class:`SessionKind` (the plug-in), :data:`SESSION_KINDS` / :func:`get_kind` (the registry),
  and the two kinds: :mod:`.codebook_refinement` (DP federated k-means) and
  :mod:`.usage_statistics` (DP histograms of usage signals), whose local input is the opt-in-gated
  :class:`UsageRecorder`.
"""

from continuum_mcp.federation.learning._kind import (
    PARTICIPANT_SHARE, SessionContext, SessionKind, SessionResult, VectorLayout,
)
from continuum_mcp.federation.learning._params import (
    DEFAULT_ROUNDS, DEFAULT_SESSION_DELTA, MAX_DISCRETE_TAU, MAX_SESSION_DELTA, MAX_SESSION_ROUNDS,
    MIN_SESSION_PARTICIPANTS, SessionGuarantee, SessionParams, check_session_round, session_discrete_tau,
    session_expectations, session_guarantee, session_round_params,
)
from continuum_mcp.federation.learning._registry import SESSION_KINDS, get_kind
from continuum_mcp.federation.learning._table import budgets_markdown, guarantees_markdown
from continuum_mcp.federation.learning.codebook_refinement import (
    CodebookInputs, CodebookRefinement, CodebookRefinementResult, pattern_embeddings,
)
from continuum_mcp.federation.learning.recorder import USAGE_DB, UsageDeletion, UsageRecord, UsageRecorder
from continuum_mcp.federation.learning.simulation import simulate_round_sum, simulate_session
from continuum_mcp.federation.learning.usage_statistics import (
    SIGNALS, UsageEvent, UsageHistogram, UsageInputs, UsageStatistics, UsageStatisticsResult, usage_counts,
    usage_distributions,
)

__all__ = [
    "DEFAULT_ROUNDS", "DEFAULT_SESSION_DELTA", "MAX_DISCRETE_TAU", "MAX_SESSION_DELTA", "MAX_SESSION_ROUNDS",
    "MIN_SESSION_PARTICIPANTS", "PARTICIPANT_SHARE", "SESSION_KINDS", "SIGNALS", "USAGE_DB", "CodebookInputs",
    "CodebookRefinement", "CodebookRefinementResult", "SessionContext", "SessionGuarantee", "SessionKind",
    "SessionParams", "SessionResult", "UsageDeletion", "UsageEvent", "UsageHistogram", "UsageInputs",
    "UsageRecord", "UsageRecorder", "UsageStatistics", "UsageStatisticsResult", "VectorLayout",
    "budgets_markdown", "check_session_round", "get_kind", "guarantees_markdown", "pattern_embeddings",
    "session_discrete_tau",
    "session_expectations", "session_guarantee", "session_round_params", "simulate_round_sum", "simulate_session",
    "usage_counts", "usage_distributions",
]
