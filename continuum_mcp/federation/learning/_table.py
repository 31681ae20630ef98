"""The "Session kinds and their guarantees" table of docs/governance.md, computed from the kinds'
default parameters by the accountant (a test checks that the page shows exactly this)."""

from __future__ import annotations

import math

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
