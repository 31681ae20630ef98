"""The tables of docs/governance.md computed by the code: the session kinds' guarantees at their
default parameters, and the ledger's release and learning budgets per mode (tests check that the
pages show exactly these)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from continuum_mcp.federation.learning._kind import PARTICIPANT_SHARE
from continuum_mcp.federation.learning._params import SessionParams, session_guarantee
from continuum_mcp.federation.learning._registry import SESSION_KINDS
from continuum_mcp.federation.learning.codebook_refinement import COUNT_WEIGHT, CodebookRefinement
from continuum_mcp.federation.learning.usage_statistics import UsageStatistics

_DIM = 384  # the bundled model's embedding dimension (codebook v0)


def _error(params: SessionParams) -> str:
    """Each kind's accuracy at the nominal noise (noise multiplier x clip; a round's actual noise is
    at least this: the sybil factor and absent dropouts only add)."""
    sigma = params.noise_multiplier * params.clip
    if params.kind == UsageStatistics.name:
        return f"each bin: noise std >= {UsageStatistics().predicted_std(sigma, params):.2f} members"
    if params.kind == CodebookRefinement.name:
        floor = CodebookRefinement.min_count(sigma, _DIM)
        per_member = math.sqrt(1 - PARTICIPANT_SHARE) * params.clip / math.sqrt(1 + COUNT_WEIGHT ** 2)
        return (f"a codeword moves only when its noisy weight reaches >= {floor:.0f}: about "
                f"{math.ceil(floor / per_member)} members whose patterns all fall in it (d = {_DIM})")
    return "-"


def guarantees_markdown() -> str:
    lines = ["| kind | rounds | noise multiplier | clip | local steps | min participants (t, honest survivors) "
             "| epsilon (delta) | epsilon per round | accuracy |", "|---|---|---|---|---|---|---|---|---|"]
    for name in sorted(SESSION_KINDS):
        p = SessionParams.build(kind=name)
        g = session_guarantee(p)
        lines.append(f"| {name} | {g.rounds} | {g.noise_multiplier:g} | {g.clip:g} | {g.local_steps} | "
                     f"{g.min_participants} ({g.min_survivors}, {g.honest_survivors}) | {g.epsilon:.2f} ({g.delta:g}) | "
                     f"{g.epsilon_per_round:.2f} | {_error(p)} |")
    return "\n".join(lines) + "\n"


def _windows_that_fit(release: Any, per_window: list[Any], once: list[Any], lifetime: Any) -> int:
    """How many release windows (each with ``per_window`` session rounds, plus ``once`` in the
    year) the one lifetime bound admits, by the ledger's own composition."""
    from continuum_mcp.privacy.ledger import compose_epsilon

    k = 0
    while compose_epsilon(([release] + per_window) * (k + 1) + once, lifetime.delta) <= lifetime.epsilon:
        k += 1
    return k


def budgets_markdown(rules: Any = None) -> str:
    """The ledger's two purposes per privacy mode (docs/governance.md and docs/privacy.md show it):
    the release window budget, the learning one (the per-session cap times the sessions allowed
    per window), what a window with its release and a default codebook session composes to, and
    how many release windows the ONE lifetime bound then leaves in a year. Every figure comes from
    the ledger's composition (``privacy.ledger.compose_epsilon``)."""
    from continuum_mcp.federation.governance import GovernanceRules
    from continuum_mcp.privacy.ledger import compose_epsilon
    from continuum_mcp.privacy.modes import default_policy

    rules = rules or GovernanceRules()
    cb, us = (SessionParams.build(kind=k) for k in ("codebook_refinement", "usage_statistics"))
    session, usage = [cb.round_spend()] * cb.rounds, [us.round_spend()] * us.rounds
    lines = ["| mode | release window budget: epsilon (delta) | learning window budget: epsilon | a window with its "
             "release and a default codebook session: epsilon | lifetime bound, all purposes: epsilon per 365 days "
             "(delta) | release windows a year: no session | one codebook session in the year | a codebook session "
             "every window | a usage-statistics session every window |", "|---|---|---|---|---|---|---|---|---|"]
    policy = default_policy()
    for name in ("high", "balanced", "open"):
        m = policy.mode(name)
        release, life = m.window_spend(), m.lifetime_budget()
        learning = rules.learning_budget(timedelta(days=m.window_days), m.delta)
        fits = [_windows_that_fit(release, per, once, life) for per, once in
                (([], []), ([], session), (session, []), (usage, []))]
        lines.append(f"| {name} | {m.budget_epsilon:g} ({m.delta:g}) | {learning.epsilon:g} | "
                     f"{compose_epsilon([release] + session, m.delta):.2f} | {m.lifetime_epsilon:.1f} "
                     f"({life.delta:g}) | " + " | ".join(str(min(f, m.windows_per_year)) for f in fits) + " |")
    return "\n".join(lines) + "\n"
