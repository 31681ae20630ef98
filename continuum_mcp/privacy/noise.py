"""Cryptographic randomness as numpy arrays, and the discrete Gaussian sampler.

Every random draw comes from the operating system's cryptographic source (``os.urandom`` /
``secrets``), because DP noise from a predictable PRNG can be subtracted by anyone who recovers
its state. Canonne, Kamath & Steinke 2020, "The discrete Gaussian for differential privacy".
"""

from __future__ import annotations

import math
import os
import secrets
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray

from continuum_mcp.errors import InvalidInput

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


def discrete_gaussian_sf(sigma: float, k: int) -> float:
    """P(Z >= k) for Z ~ N_Z(0, sigma^2), summed directly over the tail (no 1 - cdf cancellation),
    so that failure probabilities of order 1e-12 are exact to double precision."""
    if sigma <= 0:
        return 1.0 if k <= 0 else 0.0
    half = int(math.ceil(sigma * math.sqrt(2.0 * 100.0 * math.log(2.0)))) + 2
    if k > half:
        return 0.0
    xs = np.arange(max(int(k), -half), half + 1, dtype=np.int64)
    return float(min(1.0, np.sum(discrete_gaussian_pmf(sigma, xs))))
