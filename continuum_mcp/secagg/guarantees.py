"""Choosing k and t for SecAgg+, and the failure and privacy-loss probabilities they give.

Model (semi-honest server, as for the complete graph): the members U1 are placed on the cycle of
a Harary graph H(N, k) by a uniformly random permutation that is fixed only after the corrupt set
is (see ``_graph``). A fraction ``corrupt`` (gamma) of U1 colludes with the server; at most a
fraction ``dropout`` (delta) of U1 drops out at random later. Each member Shamir-shares its two
secrets among its closed neighbourhood (k + 1 holders) with threshold t. Then, for N members:

* **failure** (the round aborts; liveness only): some member whose secret must be reconstructed
  has fewer than t responding holders. Its k other holders are a uniform k-subset, so the count
  of responders is hypergeometric, which is dominated by Binomial(k, 1 - delta) (Hoeffding 1963);
  union bound: ``P_fail <= N * P[Bin(k, 1 - delta) < t]`` (the owner's own share not counted).
* **privacy loss** (the server learns more than the sum of the honest survivors), two ways:
  (a) an honest member has >= t corrupt neighbours, who with the honest shares of the other
  secret unmask it: ``N * P[Bin(k, gamma) >= t]``; (b) the graph on honest survivors is
  disconnected, which for H(N, k) happens exactly when at least two runs of k/2 consecutive
  cycle positions are all "bad" (corrupt or dropped; beta = gamma + (1 - gamma) * delta):
  ``<= min(N * beta^(k/2), N^2 * beta^k / 2)``.

:func:`choose_graph` returns the smallest even k, and the t that best balances the two, with
``P_loss <= 2^-privacy_bits`` and ``P_fail <= 2^-failure_bits``; ``tests/secagg`` checks the
bounds against sampled graphs.
"""

from __future__ import annotations

import math
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

_MAX_DEGREE = 2048


class SparseDesign(BaseModel):
    """What a SecAgg+ round must tolerate, and how surely (inputs of :func:`choose_graph`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dropout: float = Field(default=1 / 3, ge=0, lt=1, description="fraction of U1 that may drop")
    corrupt: float = Field(default=0.05, ge=0, lt=1, description="fraction of U1 colluding")
    privacy_bits: float = Field(default=40, gt=0, description="P(privacy loss) <= 2^-bits")
    failure_bits: float = Field(default=20, gt=0, description="P(round fails) <= 2^-bits")
    min_roster: int = Field(default=200, ge=3, description="smaller rosters use the complete graph")
    neighbours: int | None = Field(default=None, ge=2, description="fixed k (tests); None = choose")
    threshold: int | None = Field(default=None, ge=1, description="fixed t, with a fixed k")


class GraphGuarantee(BaseModel):
    """The chosen (k, t) for N members and the probabilities it gives, computed from the model."""

    model_config = ConfigDict(frozen=True)

    members: int
    neighbours: int
    threshold: int
    p_failure: float
    p_corrupt_threshold: float
    p_disconnected: float

    @property
    def p_privacy_loss(self) -> float:
        return min(1.0, self.p_corrupt_threshold + self.p_disconnected)


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    if p <= 0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1:
        return 0.0 if k == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def binom_tail(n: int, p: float, lo: int, hi: int) -> float:
    """P[lo <= Bin(n, p) <= hi], summed in log space (exact to float rounding)."""
    terms = [_log_binom_pmf(j, n, p) for j in range(max(lo, 0), min(hi, n) + 1)]
    terms = [x for x in terms if x > -math.inf]
    if not terms:
        return 0.0
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in terms))


def guarantee(members: int, neighbours: int, threshold: int, design: SparseDesign) -> GraphGuarantee:
    """The probabilities of :mod:`this module's docstring <continuum_mcp.secagg.guarantees>`."""
    n, k, t = members, neighbours, threshold
    if k >= n - 1:  # complete graph: no disconnection; corrupt holders counted among n - 1
        k = n - 1
    beta = design.corrupt + (1 - design.corrupt) * design.dropout
    if k >= n - 1:
        disconnected = 0.0
    else:
        one_run = n * beta ** (k // 2)
        disconnected = min(1.0, one_run, n * n * beta**k / 2)
    return GraphGuarantee(
        members=n,
        neighbours=k,
        threshold=t,
        p_failure=min(1.0, n * binom_tail(k, 1 - design.dropout, 0, t - 1)),
        p_corrupt_threshold=min(1.0, n * binom_tail(k, design.corrupt, t, k)),
        p_disconnected=disconnected,
    )


@lru_cache(maxsize=256)
def choose_graph(members: int, design: SparseDesign) -> GraphGuarantee | None:
    """Smallest even k (and its best t) meeting both targets, or None if no sparse graph (k below
    N - 1 and at most ``_MAX_DEGREE``) does: then the complete graph is the right choice."""
    eps_loss, eps_fail = 2.0**-design.privacy_bits, 2.0**-design.failure_bits
    for k in range(2, min(members - 1, _MAX_DEGREE + 1), 2):
        best: tuple[float, GraphGuarantee] | None = None
        lo, hi = max(1, int(design.corrupt * k)), min(k, int(math.ceil((1 - design.dropout) * k)) + 1)
        for t in range(lo, hi + 1):
            g = guarantee(members, k, t, design)
            if g.p_privacy_loss <= eps_loss and g.p_failure <= eps_fail:
                score = max(math.log2(max(g.p_privacy_loss, 1e-300)) + design.privacy_bits,
                            math.log2(max(g.p_failure, 1e-300)) + design.failure_bits)
                if best is None or score < best[0]:
                    best = (score, g)
        if best is not None:
            return best[1]
    return None
