"""An exact in-process simulation of one session round's DP sum, for tests and benchmarks.

What secure aggregation releases, without its cryptography: every participant's vector is
quantised exactly as the secure-aggregation client does (``secagg.params.quantise``: L2 clip,
fixed point at the round's scale, stochastic rounding), the integers are summed, and ONE discrete
Gaussian of the survivors' total std (sqrt(survivors) x each client's share; the sum of the
shares is the same up to the distributed-discrete-Gaussian gap, 0 at these scales) is added.
Results are labelled as simulations wherever they are shown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.learning._kind import SessionContext, SessionKind, SessionResult
from continuum_mcp.federation.learning._params import SessionParams, session_round_params
from continuum_mcp.privacy.noise import discrete_gaussian
from continuum_mcp.secagg.params import quantise


def simulate_round_sum(kind: SessionKind, inputs: Sequence[Any], context: SessionContext, params: SessionParams,
                       *, round_id: int = 0, survivors: int | None = None) -> tuple[np.ndarray, float]:
    """(noisy float sum, its per-coordinate noise std) of one round with ``inputs`` as the
    participants (the first ``survivors`` of them reach the sum; all by default)."""
    n = len(inputs)
    dim = kind.layout(context).dim
    secagg = session_round_params("simulation", round_id, 0, [f"sim-{i:06d}" for i in range(n)], dim, params)
    s = n if survivors is None else survivors
    if not secagg.threshold <= s <= n:
        raise InvalidInput(f"survivors must be between t = {secagg.threshold} and n = {n}, got {s}")
    total = np.zeros(dim, dtype=np.int64)
    for x in inputs[:s]:
        total += quantise(kind.local_vector(x, context, params), secagg)
    sigma_int = math.sqrt(s) * secagg.client_sigma_scaled
    total += discrete_gaussian(sigma_int, dim)
    return total.astype(np.float64) / secagg.scale, sigma_int / secagg.scale


def simulate_session(kind: SessionKind, inputs: Sequence[Any], context: SessionContext,
                     params: SessionParams) -> list[SessionResult]:
    """Every round of a session with the same participants: each round's result, in order (the
    next round starting from ``kind.next_context``)."""
    results: list[SessionResult] = []
    for r in range(params.rounds):
        noisy, std = simulate_round_sum(kind, inputs, context, params, round_id=r)
        results.append(kind.postprocess(noisy, std, context, params))
        context = kind.next_context(context, results[-1])
    return results
