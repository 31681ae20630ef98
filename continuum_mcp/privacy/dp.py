"""Differential-privacy mechanisms: calibration, noise, clipping and DP partition selection.

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
import os
import secrets
from fractions import Fraction
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from continuum_mcp.errors import InvalidInput


def _scipy(name: str) -> Any:
    """scipy submodules on first use: importing them costs about a second, which the MCP
    server's start-up (handshake before the model loads) should not pay."""
    import importlib

    return importlib.import_module(f"scipy.{name}")

K = TypeVar("K", bound=Hashable)

# ---------------------------------------------------------------------------------------------
# Cryptographic randomness as numpy arrays
# ---------------------------------------------------------------------------------------------

_TWO_POW_53 = float(2**53)


def _random_u64(n: int) -> NDArray[np.uint64]:
    """n uniform 64-bit words straight from the OS CSPRNG."""
    if n <= 0:
        return np.zeros(0, dtype=np.uint64)
    return np.frombuffer(os.urandom(8 * n), dtype=np.uint64).copy()


def random_uniform(n: int) -> NDArray[np.float64]:
    """n uniforms on the grid {k / 2^53 : 0 <= k < 2^53}, i.e. [0, 1) at full double precision."""
    return (_random_u64(n) >> np.uint64(11)).astype(np.float64) / _TWO_POW_53


def _random_uniform_open0(n: int) -> NDArray[np.float64]:
    """n uniforms on {k / 2^53 : 1 <= k <= 2^53}, i.e. (0, 1]; safe to take the log of."""
    return ((_random_u64(n) >> np.uint64(11)).astype(np.float64) + 1.0) / _TWO_POW_53


def _random_below(n: int, bound: int) -> NDArray[np.int64]:
    """n exact uniform integers in [0, bound) by rejection (no modulo bias); bound < 2^62."""
    if bound <= 0 or bound >= 2**62:
        raise InvalidInput(f"bound must be in [1, 2^62), got {bound}")
    if bound == 1:
        return np.zeros(n, dtype=np.int64)
    limit = (2**64 // bound) * bound  # accept words below the largest multiple of bound
    out = np.empty(0, dtype=np.uint64)
    while out.size < n:
        words = _random_u64(max(16, int((n - out.size) * 1.05) + 8))
        if limit < 2**64:
            words = words[words < np.uint64(limit)]
        out = np.concatenate([out, words])
    return (out[:n] % np.uint64(bound)).astype(np.int64)


def random_standard_normal(n: int) -> NDArray[np.float64]:
    """n standard normal draws by Box-Muller on cryptographic uniforms."""
    m = (n + 1) // 2
    u1 = _random_uniform_open0(m)
    u2 = random_uniform(m)
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2.0 * math.pi * u2), r * np.sin(2.0 * math.pi * u2)])
    return z[:n]


def random_laplace(n: int, scale: float) -> NDArray[np.float64]:
    """n Laplace(0, scale) draws: a random sign times an exponential, from cryptographic bits."""
    u = _random_uniform_open0(n)
    sign = np.where((_random_u64(n) & np.uint64(1)) == 0, 1.0, -1.0)
    return sign * (-scale * np.log(u))


# ---------------------------------------------------------------------------------------------
# Discrete Gaussian (Canonne, Kamath & Steinke 2020)
# ---------------------------------------------------------------------------------------------


def _shape_size(size: int | tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    shape = (size,) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if any(s < 0 for s in shape):
        raise InvalidInput(f"size must be non-negative, got {size}")
    return shape, int(np.prod(shape, dtype=np.int64)) if shape else 1


def discrete_gaussian(sigma: float, size: int | tuple[int, ...]) -> NDArray[np.int64]:
    """int64 samples of the discrete Gaussian N_Z(0, sigma^2): P(x) ∝ exp(-x^2 / (2 sigma^2)).

    Why this algorithm: secure aggregation needs the noise in integer arithmetic (sums modulo
    2^32), and sums of discrete Gaussians stay close to discrete Gaussian (CKS20, Thm 1.1 / Sec 4).
    This is CKS20 Algorithm 3 (discrete Laplace proposal with t = floor(sigma) + 1, Gaussian
    acceptance), with the discrete Laplace drawn as in CKS20 Algorithm 2 (uniform residue
    U in [0, t) accepted with probability exp(-U/t), plus t times a geometric(exp(-1)) count),
    vectorised with numpy. Randomness: os.urandom.

    Approximation (honest): the integers are exact, but the three Bernoulli/geometric steps compare
    a 53-bit uniform with a double-precision exp()/log(). Each acceptance probability is therefore
    off by at most ~2^-52 in absolute terms, so the total-variation distance of one output from the
    exact N_Z(0, sigma^2) is of order 1e-15 whatever sigma is; the geometric part is cut at
    -ln(2^-53) ≈ 36.7 (mass e^-36.7 ≈ 1e-16, far inside the Gaussian tail). The exact
    rational-arithmetic sampler :func:`discrete_gaussian_exact` is the reference the tests compare
    this one against.
    """
    if not (isinstance(sigma, (int, float, np.floating, np.integer)) and math.isfinite(sigma)):
        raise InvalidInput(f"sigma must be a finite number, got {sigma!r}")
    if sigma < 0:
        raise InvalidInput(f"sigma must be >= 0, got {sigma}")
    shape, n = _shape_size(size)
    if sigma == 0 or n == 0:
        return np.zeros(shape, dtype=np.int64)
    sigma = float(sigma)
    if sigma > 2.0**40:
        raise InvalidInput(f"sigma {sigma} too large for int64 discrete Gaussian sampling")
    t = math.floor(sigma) + 1
    sigma2 = sigma * sigma
    centre = sigma2 / t
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        m = max(64, int((n - filled) * 2.6) + 32)  # overall acceptance is ~0.4-0.6
        # Discrete Laplace with scale t (CKS20 Alg. 2), magnitude X = U + t V.
        u = _random_below(m, t)
        keep = random_uniform(m) < np.exp(-u.astype(np.float64) / t)
        u = u[keep]
        k = u.size
        v = np.floor(-np.log(_random_uniform_open0(k))).astype(np.int64)  # P(V >= j) = e^-j
        x = u + t * v
        negative = (_random_u64(k) & np.uint64(1)).astype(bool)
        keep = ~(negative & (x == 0))  # zero must not be counted twice
        y = np.where(negative, -x, x)[keep]
        # Gaussian acceptance (CKS20 Alg. 3): accept with prob exp(-(|y| - sigma^2/t)^2 / (2 sigma^2)).
        d = np.abs(y).astype(np.float64) - centre
        accept = random_uniform(y.size) < np.exp(-(d * d) / (2.0 * sigma2))
        y = y[accept]
        take = min(y.size, n - filled)
        out[filled : filled + take] = y[:take]
        filled += take
    return out.reshape(shape)


def _bernoulli_exp_neg(gamma: Fraction) -> bool:
    """Exact Bernoulli(exp(-gamma)) for rational gamma >= 0 (CKS20 Algorithm 1)."""
    if gamma <= 1:
        k = 1
        while True:
            # Bernoulli(gamma / k) with exact integer arithmetic.
            if secrets.randbelow(gamma.denominator * k) >= gamma.numerator:
                return k % 2 == 1
            k += 1
    whole = math.floor(gamma)
    for _ in range(whole):
        if not _bernoulli_exp_neg(Fraction(1)):
            return False
    return _bernoulli_exp_neg(gamma - whole)


def discrete_gaussian_exact(sigma: Fraction | int | float) -> int:
    """One exact sample of N_Z(0, sigma^2) in rational arithmetic (CKS20 Algorithm 3).

    Slow (pure Python, a few thousand samples per second); it is the reference implementation
    that :func:`discrete_gaussian` is tested against. Randomness: ``secrets``.
    """
    s = Fraction(sigma)
    if s < 0:
        raise InvalidInput(f"sigma must be >= 0, got {sigma}")
    if s == 0:
        return 0
    t = math.floor(s) + 1
    s2 = s * s
    while True:
        # Discrete Laplace with scale t (CKS20 Algorithm 2).
        while True:
            u = secrets.randbelow(t)
            if not _bernoulli_exp_neg(Fraction(u, t)):
                continue
            v = 0
            while _bernoulli_exp_neg(Fraction(1)):
                v += 1
            x = u + t * v
            negative = secrets.randbelow(2) == 1
            if negative and x == 0:
                continue
            y = -x if negative else x
            break
        gamma = (abs(y) - s2 / t) ** 2 / (2 * s2)
        if _bernoulli_exp_neg(gamma):
            return y


def discrete_gaussian_pmf(sigma: float, support: NDArray[np.int64]) -> NDArray[np.float64]:
    """Exact-to-double pmf of N_Z(0, sigma^2) at the given integers (normaliser summed to 2^-100)."""
    half = int(math.ceil(sigma * math.sqrt(2.0 * 100.0 * math.log(2.0)))) + 2
    xs = np.arange(-half, half + 1, dtype=np.float64)
    norm = float(np.sum(np.exp(-(xs * xs) / (2.0 * sigma * sigma))))
    s = np.asarray(support, dtype=np.float64)
    return np.exp(-(s * s) / (2.0 * sigma * sigma)) / norm


# ---------------------------------------------------------------------------------------------
# Analytic Gaussian mechanism and Gaussian differential privacy
# ---------------------------------------------------------------------------------------------


def _check_eps_delta(epsilon: float, delta: float) -> None:
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise InvalidInput(f"epsilon must be a positive finite number, got {epsilon}")
    if not (0 < delta < 1):
        raise InvalidInput(f"delta must be in (0, 1), got {delta}")


def gdp_delta(mu: float, epsilon: float) -> float:
    """delta(epsilon) of a mu-GDP mechanism (Dong, Roth & Su; = Balle & Wang's exact condition).

    delta = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2), evaluated in log space so that large
    epsilon does not overflow.
    """
    if mu <= 0:
        return 0.0
    a = -epsilon / mu + mu / 2.0
    b = -epsilon / mu - mu / 2.0
    first = _scipy("special").log_ndtr(a)
    second = epsilon + _scipy("special").log_ndtr(b)
    if second >= first:
        return 0.0
    return float(math.exp(first) * -math.expm1(second - first))


def gdp_epsilon(mu: float, delta: float) -> float:
    """Smallest epsilon such that a mu-GDP mechanism is (epsilon, delta)-DP; exact up to root finding."""
    if not (0 < delta < 1):
        raise InvalidInput(f"delta must be in (0, 1), got {delta}")
    if mu < 0 or not math.isfinite(mu):
        raise InvalidInput(f"mu must be a finite non-negative number, got {mu}")
    if mu == 0 or gdp_delta(mu, 0.0) <= delta:
        return 0.0
    hi = 1.0
    while gdp_delta(mu, hi) > delta:
        hi *= 2.0
        if hi > 1e6:
            raise InvalidInput(f"mu={mu} is too large for delta={delta}")
    return float(_scipy("optimize").brentq(lambda e: gdp_delta(mu, e) - delta, 0.0, hi, xtol=1e-14, rtol=1e-15, maxiter=500))


def gdp_mu(epsilon: float, delta: float) -> float:
    """Largest mu such that mu-GDP implies (epsilon, delta)-DP (the analytic Gaussian's 1/sigma)."""
    _check_eps_delta(epsilon, delta)
    lo, hi = 1e-12, 1.0
    while gdp_delta(hi, epsilon) < delta:
        hi *= 2.0
    return float(_scipy("optimize").brentq(lambda m: gdp_delta(m, epsilon) - delta, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=500))


def compose_gdp(mus: list[float] | tuple[float, ...] | NDArray[np.float64]) -> float:
    """Exact composition of Gaussian mechanisms: mu adds in quadrature (Dong, Roth & Su, Cor. 3.3)."""
    return float(math.sqrt(sum(float(m) * float(m) for m in mus)))


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """Smallest sigma for which N(0, sigma^2) noise on an L2-sensitivity query is (epsilon, delta)-DP.

    Analytic Gaussian mechanism (Balle & Wang 2018, Thm 8): the exact condition, solved by a root
    finder, instead of the classical sqrt(2 ln(1.25/delta))/epsilon bound that wastes noise.
    """
    if sensitivity <= 0:
        raise InvalidInput(f"sensitivity must be > 0, got {sensitivity}")
    return sensitivity / gdp_mu(epsilon, delta)


def gaussian_epsilon(sigma: float, delta: float, sensitivity: float = 1.0) -> float:
    """Smallest epsilon at which Gaussian noise sigma on an L2-sensitivity query is (epsilon, delta)-DP."""
    if sigma <= 0 or sensitivity <= 0:
        raise InvalidInput(f"sigma and sensitivity must be > 0, got {sigma}, {sensitivity}")
    return gdp_epsilon(sensitivity / sigma, delta)


# ---------------------------------------------------------------------------------------------
# Laplace mechanism
# ---------------------------------------------------------------------------------------------


def laplace_scale(epsilon: float, sensitivity: float = 1.0) -> float:
    """Laplace scale b = L1-sensitivity / epsilon for an epsilon-DP release."""
    if not (math.isfinite(epsilon) and epsilon > 0) or sensitivity <= 0:
        raise InvalidInput(f"epsilon and sensitivity must be > 0, got {epsilon}, {sensitivity}")
    return sensitivity / epsilon


def laplace_epsilon(scale: float, sensitivity: float = 1.0) -> float:
    """epsilon of Laplace noise of scale b on an L1-sensitivity query."""
    if scale <= 0 or sensitivity <= 0:
        raise InvalidInput(f"scale and sensitivity must be > 0, got {scale}, {sensitivity}")
    return sensitivity / scale


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
