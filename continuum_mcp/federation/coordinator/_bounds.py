"""Per-slot norm bounds on a round's noisy sum: refuse the centroids a poisoned input could steer.

Why here and why this way: without range proofs the coordinator never sees one member's input,
only the sum, and the secure-aggregation check bounds the *whole* sum by what |U3| clipped inputs
can give, so one member could put its whole norm (or, unclipped, many times the clip) into a
single slot and steer that slot's centroid. The coordinator does know, from the submissions, how
many members contributed each slot this round; an honest member's block in a slot has norm at
most the clip. So a slot's block can be at most ``n_s * clip`` plus rounding plus the noise's
high-probability norm; a block beyond that cannot be honest and its centroid is refused (the
slot keeps its public codebook vector for ranking; phrases are released as usual, since
centroids rank and refine but never decide what is released). See docs/threat-model.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from continuum_mcp.secagg import AggregateResult, SecAggParams

#: chi-square tail parameter of the noise bound: P(one honest block exceeds it) <= exp(-40).
_TAIL = 40.0


def block_bound(params: SecAggParams, contributors: int, survivors: int, block: int) -> float:
    """Largest L2 norm (float units) an honest slot block of ``contributors`` clipped inputs plus
    the noise of ``survivors`` members can have (Laurent-Massart bound on the noise block)."""
    rounding = contributors * math.sqrt(block) / params.scale  # stochastic rounding, < 1 unit per coordinate
    sigma = math.sqrt(max(survivors, 1)) * params.client_sigma_scaled / params.scale
    noise = sigma * math.sqrt(block + 2 * math.sqrt(block * _TAIL) + 2 * _TAIL)
    return contributors * params.clip_norm + rounding + noise


def refuse_poisoned_blocks(result: AggregateResult, params: SecAggParams, slots: int, dim: int,
                           slot_contributors: Mapping[int, int]) -> tuple[np.ndarray, set[int]]:
    """The float sum with every block above its bound zeroed (so no centroid is made of it), and
    the refused slots. A slot nobody contributed to may hold noise only."""
    out = np.array(result.float_sum, dtype=np.float64, copy=True)
    refused: set[int] = set()
    survivors = len(result.contributors)
    for s in range(slots):
        block = out[s * dim:(s + 1) * dim]
        norm = float(np.linalg.norm(block))
        if not math.isfinite(norm) or norm > block_bound(params, int(slot_contributors.get(s, 0)), survivors, dim):
            block[:] = 0.0
            refused.add(s)
    return out, refused


__all__ = ["block_bound", "refuse_poisoned_blocks"]
