"""Differential-privacy mechanisms: clipping, noise adders and DP partition selection.

Calibration and composition live in :mod:`.accounting`, the CSPRNG samplers in :mod:`.noise`;
their names are re-exported here because callers reach every mechanism through ``dp``.

Everything here is computed from real parameters (never a typed-in result) and every random draw
comes from the operating system's cryptographic source (``os.urandom`` / ``secrets``), because
DP noise from a predictable PRNG can be subtracted by anyone who recovers its state.

References
- Balle & Wang 2018, "Improving the Gaussian mechanism for differential privacy: analytical
  calibration and optimal denoising" (analytic Gaussian mechanism).
- Dong, Roth & Su 2019/2022, "Gaussian differential privacy" (mu-GDP, exact composition).
- Canonne, Kamath & Steinke 2020, "The discrete Gaussian for differential privacy" (sampler).
- Korolova, Kenthapadi, Mishra & Ntoulas 2009; Google's differential-privacy library
  (``partition_selection``); Desfontaines, Voss, Gipson & Mandayam 2022 (partition selection).
- Gopi, Gulhane, Kulkarni, Shen, Shokouhi & Yekhanin 2020, "Differentially private set union"
  (policy Gaussian).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Hashable, Iterable
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from continuum_mcp.errors import InvalidInput
from continuum_mcp.privacy._scipy import scipy_module as _scipy
from continuum_mcp.privacy.accounting import (
    _check_eps_delta, compose_gdp, gaussian_epsilon, gaussian_sigma, gdp_delta, gdp_epsilon,
    gdp_mu, laplace_epsilon, laplace_scale,
)
from continuum_mcp.privacy.noise import (
    discrete_gaussian, discrete_gaussian_exact, discrete_gaussian_pmf, random_laplace,
    random_standard_normal, random_uniform,
)

K = TypeVar("K", bound=Hashable)

# ---------------------------------------------------------------------------------------------
# Clipping and noise adders
# ---------------------------------------------------------------------------------------------


def clip_l2(vec: NDArray[np.floating], max_norm: float) -> NDArray[np.float64]:
    """Scale the whole array down so that its L2 norm is at most max_norm (sensitivity control)."""
    if not (math.isfinite(max_norm) and max_norm >= 0):
        raise InvalidInput(f"max_norm must be a finite non-negative number, got {max_norm}")
    v = np.asarray(vec, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise InvalidInput("vector contains NaN or infinity")
    norm = float(np.linalg.norm(v))
    if norm <= max_norm or norm == 0.0:
        return v.copy()
    return v * (max_norm / norm)


def add_gaussian_noise(values: NDArray[np.floating] | float, sigma: float) -> NDArray[np.float64]:
    """values + N(0, sigma^2) per coordinate, with cryptographic randomness."""
    v = np.asarray(values, dtype=np.float64)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise InvalidInput(f"sigma must be finite and >= 0, got {sigma}")
    return v + sigma * random_standard_normal(v.size).reshape(v.shape)


def add_laplace_noise(values: NDArray[np.floating] | float, scale: float) -> NDArray[np.float64]:
    """values + Laplace(0, scale) per coordinate, with cryptographic randomness."""
    v = np.asarray(values, dtype=np.float64)
    if not (math.isfinite(scale) and scale >= 0):
        raise InvalidInput(f"scale must be finite and >= 0, got {scale}")
    return v + random_laplace(v.size, scale).reshape(v.shape) if scale > 0 else v.copy()


# ---------------------------------------------------------------------------------------------
# DP partition selection at user level (each user contributes to at most L partitions)
# ---------------------------------------------------------------------------------------------

PartitionMechanism = Literal["laplace", "gaussian", "policy_gaussian"]
PARTITION_MECHANISMS: tuple[PartitionMechanism, ...] = ("laplace", "gaussian", "policy_gaussian")


class PartitionSelection(BaseModel):
    """Calibrated parameters of a user-level DP partition-selection release, and what it costs.

    ``noise`` is the Laplace scale (``laplace``) or the Gaussian sigma (``gaussian``: of the counts;
    ``policy_gaussian``: of the weights). ``contributors_p50`` / ``contributors_p95`` are the
    fewest distinct contributors an item needs to be released with probability >= 50 % / 95 %;
    for ``policy_gaussian`` they assume the worst case (every contributor also spreads weight over
    L-1 other fresh items), and the ``*_best`` fields the best case (contributors whose other
    items are already saturated, so the whole unit of weight lands on this item).
    """

    model_config = ConfigDict(frozen=True)

    mechanism: PartitionMechanism
    epsilon: float
    delta: float
    max_partitions: int
    noise: float
    threshold: float
    delta_noise: float
    delta_threshold: float
    cutoff: float | None = None
    contributors_p50: int
    contributors_p95: int
    contributors_p50_best: int
    contributors_p95_best: int


def _per_partition_delta(delta: float, partitions: int) -> float:
    """delta' with 1 - (1 - delta')^L = delta: L independent partitions together fail w.p. delta."""
    return float(-math.expm1(math.log1p(-delta) / partitions))


def _laplace_tail(x: NDArray[np.float64] | float, scale: float) -> NDArray[np.float64]:
    """P(Laplace(0, scale) > x)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 0.5 * np.exp(-np.abs(x) / scale), 1.0 - 0.5 * np.exp(-np.abs(x) / scale))


def _smallest_n(prob: Callable[[int], float], target: float, limit: int = 10**9) -> int:
    """Smallest integer n >= 1 with prob(n) >= target, for prob non-decreasing in n."""
    lo, hi = 1, 1
    while prob(hi) < target:
        lo, hi = hi + 1, hi * 2
        if hi > limit:
            raise InvalidInput("no finite number of contributors reaches the target probability")
    while lo < hi:
        mid = (lo + hi) // 2
        if prob(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _gaussian_threshold(sigma: float, delta_threshold: float, partitions: int) -> float:
    """tau with P(some of L single-contributor partitions, each at count 1, passes) = delta_thr."""
    return 1.0 + sigma * float(_scipy("stats").norm.isf(_per_partition_delta(delta_threshold, partitions)))


def _policy_threshold(sigma: float, delta_threshold: float, partitions: int) -> float:
    """Gopi et al. 2020 rho = max_{1<=t<=L} 1/sqrt(t) + sigma Phi^-1((1 - delta_thr)^(1/t)).

    A new user who is the only contributor of t items gives each of them weight at most 1/sqrt(t)
    (equal gaps, unit L2 norm), so the chance that any of them passes rho is at most delta_thr.
    """
    t = np.arange(1, partitions + 1, dtype=np.float64)
    per_item = -np.expm1(np.log1p(-delta_threshold) / t)
    return float(np.max(1.0 / np.sqrt(t) + sigma * _scipy("stats").norm.isf(per_item)))


def _policy_worst_case_weight(n: int, partitions: int, cutoff: float) -> float:
    """Weight of an item after n contributors under the L2 policy, when each of them also holds
    L-1 other items with the full gap (the slowest possible growth for this item)."""
    h = 0.0
    others = (partitions - 1) * cutoff * cutoff
    for _ in range(n):
        gap = cutoff - h
        if gap <= 0:
            break
        norm = math.sqrt(gap * gap + others)
        h += gap if norm <= 1.0 else gap / norm
    return min(h, cutoff)


def partition_selection(
    epsilon: float,
    delta: float,
    max_partitions: int,
    mechanism: PartitionMechanism = "gaussian",
    *,
    policy_alpha: float = 3.0,
) -> PartitionSelection:
    """Calibrate user-level DP partition selection for (epsilon, delta) and per-user bound L.

    - ``laplace``: Laplace noise of scale L/epsilon on distinct-user counts (L1 sensitivity L) and
      threshold tau = 1 + (L/epsilon) ln(1/(2 delta')) with 1-(1-delta')^L = delta, so that a
      user's own (count 1) partitions all stay hidden except with probability delta. L = 1 gives
      Korolova et al.'s 1 + ln(1/(2 delta))/epsilon; this is Google's differential-privacy
      library's LaplacePartitionSelection.
    - ``gaussian``: Gaussian noise on counts with L2 sensitivity sqrt(L), sigma from the analytic
      Gaussian at (epsilon, delta_noise), threshold from delta_threshold as above; the split
      delta_noise + delta_threshold = delta is optimised to need the fewest contributors.
    - ``policy_gaussian``: Gopi et al. 2020's policy Gaussian DP set union: each user spreads a unit
      of L2 weight over <= L items, filling items that are still below a cutoff Gamma = rho +
      alpha sigma; sigma for L2 sensitivity 1 at (epsilon, delta_noise); threshold rho as in
      :func:`_policy_threshold`; the delta split is optimised likewise.
    """
    _check_eps_delta(epsilon, delta)
    if max_partitions < 1:
        raise InvalidInput(f"max_partitions must be >= 1, got {max_partitions}")
    L = int(max_partitions)
    if mechanism == "laplace":
        b = laplace_scale(epsilon, float(L))
        tau = 1.0 + b * math.log(1.0 / (2.0 * _per_partition_delta(delta, L)))

        def prob(n: int) -> float:
            return float(_laplace_tail(tau - n, b))

        p50, p95 = _smallest_n(prob, 0.5), _smallest_n(prob, 0.95)
        return PartitionSelection(
            mechanism=mechanism, epsilon=epsilon, delta=delta, max_partitions=L, noise=b,
            threshold=tau, delta_noise=0.0, delta_threshold=delta, contributors_p50=p50,
            contributors_p95=p95, contributors_p50_best=p50, contributors_p95_best=p95,
        )
    if mechanism == "gaussian":

        def tau_for(frac: float) -> float:
            s = gaussian_sigma(epsilon, frac * delta, math.sqrt(L))
            return _gaussian_threshold(s, (1.0 - frac) * delta, L)

        frac = _best_split(tau_for)
        sigma = gaussian_sigma(epsilon, frac * delta, math.sqrt(L))
        tau = _gaussian_threshold(sigma, (1.0 - frac) * delta, L)

        def prob(n: int) -> float:
            return float(_scipy("stats").norm.sf((tau - n) / sigma))

        p50, p95 = _smallest_n(prob, 0.5), _smallest_n(prob, 0.95)
        return PartitionSelection(
            mechanism=mechanism, epsilon=epsilon, delta=delta, max_partitions=L, noise=sigma,
            threshold=tau, delta_noise=frac * delta, delta_threshold=(1.0 - frac) * delta,
            contributors_p50=p50, contributors_p95=p95, contributors_p50_best=p50,
            contributors_p95_best=p95,
        )
    if mechanism == "policy_gaussian":

        def rho_for(frac: float) -> float:
            s = gaussian_sigma(epsilon, frac * delta)
            return _policy_threshold(s, (1.0 - frac) * delta, L)

        frac = _best_split(rho_for)
        sigma = gaussian_sigma(epsilon, frac * delta)
        rho = _policy_threshold(sigma, (1.0 - frac) * delta, L)
        cutoff = rho + policy_alpha * sigma

        def worst(n: int) -> float:
            return float(_scipy("stats").norm.sf((rho - _policy_worst_case_weight(n, L, cutoff)) / sigma))

        def best(n: int) -> float:
            return float(_scipy("stats").norm.sf((rho - min(float(n), cutoff)) / sigma))

        return PartitionSelection(
            mechanism=mechanism, epsilon=epsilon, delta=delta, max_partitions=L, noise=sigma,
            threshold=rho, delta_noise=frac * delta, delta_threshold=(1.0 - frac) * delta,
            cutoff=cutoff, contributors_p50=_smallest_n(worst, 0.5),
            contributors_p95=_smallest_n(worst, 0.95), contributors_p50_best=_smallest_n(best, 0.5),
            contributors_p95_best=_smallest_n(best, 0.95),
        )
    raise InvalidInput(f"unknown partition-selection mechanism {mechanism!r}")


def _best_split(threshold_for: Callable[[float], float]) -> float:
    """Fraction of delta given to the noise that minimises the threshold (1-D bounded search)."""
    res = _scipy("optimize").minimize_scalar(threshold_for, bounds=(0.01, 0.99), method="bounded", options={"xatol": 1e-4})
    return float(res.x)


def _secure_shuffle(items: list[Hashable]) -> list[Hashable]:
    """Fisher-Yates with ``secrets`` so that processing order leaks nothing predictable."""
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        j = secrets.randbelow(i + 1)
        out[i], out[j] = out[j], out[i]
    return out


def _bound_user_sets(user_sets: Iterable[Iterable[K]], max_partitions: int) -> list[list[K]]:
    """Deduplicate each user's items and keep a uniformly random subset of at most L of them."""
    bounded: list[list[K]] = []
    for items in user_sets:
        unique = list(dict.fromkeys(items))
        if len(unique) > max_partitions:
            unique = _secure_shuffle(unique)[:max_partitions]  # type: ignore[assignment]
        bounded.append(unique)
    return bounded


def release_counts(counts: NDArray[np.floating], params: PartitionSelection) -> NDArray[np.float64]:
    """Noise distinct-user counts (Laplace/Gaussian thresholding) and blank those below threshold.

    Returns the noisy counts with NaN where the partition is not released. Vectorised so that the
    empirical DP tests exercise exactly this code path on many independent trials.
    """
    if params.mechanism == "laplace":
        noisy = add_laplace_noise(counts, params.noise)
    elif params.mechanism == "gaussian":
        noisy = add_gaussian_noise(counts, params.noise)
    else:
        raise InvalidInput("release_counts is for the laplace/gaussian threshold mechanisms")
    return np.where(noisy > params.threshold, noisy, np.nan)


def select_partitions(user_sets: Iterable[Iterable[K]], params: PartitionSelection) -> dict[K, float]:
    """Run a calibrated partition selection over each user's item set; return released noisy values.

    Each element of ``user_sets`` is one user's items (deduplicated and cut to L at random here,
    which is what makes the per-user sensitivity hold). Laplace/Gaussian: distinct-user counts,
    noised, kept above the threshold. Policy Gaussian: weights built by Gopi et al.'s L2 policy
    over users in a random order, noised, kept above rho. Items never seen are never released.
    """
    sets = _bound_user_sets(user_sets, params.max_partitions)
    if params.mechanism in ("laplace", "gaussian"):
        counts: dict[K, int] = {}
        for items in sets:
            for it in items:
                counts[it] = counts.get(it, 0) + 1
        keys = list(counts)
        released = release_counts(np.array([counts[k] for k in keys], dtype=np.float64), params)
        return {k: float(v) for k, v in zip(keys, released) if not math.isnan(v)}
    # Policy Gaussian (Gopi et al. 2020, Alg. "L2-Gaussian policy"): users in a random order each
    # move the gap vector of their still-unsaturated items towards the cutoff by at most unit L2.
    assert params.cutoff is not None
    weights: dict[K, float] = {}
    for items in _secure_shuffle(sets):  # type: ignore[arg-type]
        gaps = {it: params.cutoff - weights.get(it, 0.0) for it in items}
        gaps = {it: g for it, g in gaps.items() if g > 0}
        norm = math.sqrt(sum(g * g for g in gaps.values()))
        scale = 1.0 if norm <= 1.0 else 1.0 / norm
        for it, g in gaps.items():
            weights[it] = weights.get(it, 0.0) + g * scale
    keys = list(weights)
    noisy = add_gaussian_noise(np.array([weights[k] for k in keys], dtype=np.float64), params.noise)
    return {k: float(v) for k, v in zip(keys, noisy) if v > params.threshold}


def gaussian_partition_threshold(sigma: float, delta_threshold: float, max_partitions: int) -> float:
    """Threshold for distinct-user counts noised with N(0, sigma^2) when each user adds 1 to <= L
    partitions: the chance that any of a user's own (count 1) partitions passes is delta_threshold."""
    if sigma <= 0 or not (0 < delta_threshold < 1) or max_partitions < 1:
        raise InvalidInput("sigma > 0, 0 < delta_threshold < 1 and max_partitions >= 1 are required")
    return _gaussian_threshold(sigma, delta_threshold, int(max_partitions))


def policy_gaussian_threshold(sigma: float, delta_threshold: float, max_partitions: int) -> float:
    """Gopi et al. 2020's rho for weights noised with N(0, sigma^2), unit L2 weight per user."""
    if sigma <= 0 or not (0 < delta_threshold < 1) or max_partitions < 1:
        raise InvalidInput("sigma > 0, 0 < delta_threshold < 1 and max_partitions >= 1 are required")
    return _policy_threshold(sigma, delta_threshold, int(max_partitions))


def contributors_needed_gaussian(threshold: float, sigma: float, probability: float) -> int:
    """Fewest contributors n with P(n + N(0, sigma^2) > threshold) >= probability."""
    return _smallest_n(lambda n: float(_scipy("stats").norm.sf((threshold - n) / sigma)), probability)


def contributors_needed_policy(
    threshold: float, sigma: float, cutoff: float, max_partitions: int, probability: float, *, worst_case: bool
) -> int:
    """Fewest contributors for a policy-Gaussian item to pass rho with the given probability.

    worst_case: every contributor also holds L-1 other items with a full gap, so this item gets the
    smallest possible share of each unit of weight; otherwise each contributor's whole unit lands
    on this item.
    """

    def prob(n: int) -> float:
        w = _policy_worst_case_weight(n, max_partitions, cutoff) if worst_case else min(float(n), cutoff)
        return float(_scipy("stats").norm.sf((threshold - w) / sigma))

    return _smallest_n(prob, probability)


__all__ = [
    # mechanisms defined here
    "PARTITION_MECHANISMS", "PartitionMechanism", "PartitionSelection", "add_gaussian_noise",
    "add_laplace_noise", "clip_l2", "contributors_needed_gaussian", "contributors_needed_policy",
    "gaussian_partition_threshold", "partition_selection", "policy_gaussian_threshold",
    "release_counts", "select_partitions",
    # re-exported from .accounting and .noise
    "compose_gdp", "gaussian_epsilon", "gaussian_sigma", "gdp_delta", "gdp_epsilon", "gdp_mu",
    "laplace_epsilon", "laplace_scale", "discrete_gaussian", "discrete_gaussian_exact",
    "discrete_gaussian_pmf", "random_laplace", "random_standard_normal", "random_uniform",
]
