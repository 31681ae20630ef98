"""Privacy accounting: calibrate a mechanism from (epsilon, delta) and compose releases.

The analytic Gaussian mechanism (Balle & Wang 2018), Gaussian differential privacy (mu-GDP, exact
composition; Dong, Roth & Su) and the Laplace mechanism's scale. Pure functions of parameters:
every privacy figure of the project is computed here, never typed in.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from continuum_mcp.errors import InvalidInput
from continuum_mcp.privacy._scipy import scipy_module as _scipy

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
