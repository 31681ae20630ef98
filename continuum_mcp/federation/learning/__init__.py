"""Federated learning sessions (DESIGN.md section 4): what a session computes, and what it costs.

Pure machinery, no I/O: governance (proposals, ballots, rounds) calls it.

- :class:`SessionParams` / :func:`session_guarantee`: a session's parameters and its computed
  user-level (epsilon, delta) over all rounds; :func:`session_round_params`,
  :func:`check_session_round`: the secure aggregation of one session round, for coordinator and
  clients.
"""

from continuum_mcp.federation.learning._params import (
    DEFAULT_ROUNDS, DEFAULT_SESSION_DELTA, MAX_DISCRETE_TAU, MAX_SESSION_DELTA, MAX_SESSION_ROUNDS,
    MIN_SESSION_PARTICIPANTS, SessionGuarantee, SessionParams, check_session_round, session_discrete_tau,
    session_expectations, session_guarantee, session_round_params,
)

__all__ = [
    "DEFAULT_ROUNDS", "DEFAULT_SESSION_DELTA", "MAX_DISCRETE_TAU", "MAX_SESSION_DELTA", "MAX_SESSION_ROUNDS",
    "MIN_SESSION_PARTICIPANTS", "SessionGuarantee", "SessionParams", "check_session_round", "session_discrete_tau",
    "session_expectations", "session_guarantee", "session_round_params",
]
