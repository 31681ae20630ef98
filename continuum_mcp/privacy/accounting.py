"""Privacy accounting: calibrate a mechanism from (epsilon, delta) and compose releases.

The analytic Gaussian mechanism (Balle & Wang 2018), Gaussian differential privacy (mu-GDP, exact
composition; Dong, Roth & Su) and the Laplace mechanism's scale. Pure functions of parameters:
every privacy figure of the project is computed here, never typed in.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from continuum_mcp.errors import InvalidInput
from continuum_mcp.privacy._scipy import scipy_module as _scipy
from continuum_mcp.privacy.noise import discrete_gaussian_sf

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
# Release v2: one Gaussian partition selection of phrase tokens per window, with integer noise
# ---------------------------------------------------------------------------------------------


class WindowCalibration(BaseModel):
    """The calibrated release of one window (DESIGN.md "Release v2"), every figure computed.

    What is released per window, per user: (a) the distinct-contributor count of each candidate
    phrase token plus integer discrete-Gaussian noise of std ``sigma`` (each user adds 1 to at most
    ``max_phrases`` = C counts: L2 sensitivity sqrt(C)), kept when the noisy count exceeds the
    integer ``tau``; (b) the per-slot embedding sums of secure aggregation, noised with
    ``centroid_noise_multiplier`` times the clip. Both are Gaussian mechanisms, so together they are
    ``mu``-GDP with ``mu^2 = mu_phrases^2 + mu_centroids^2`` (exact composition, Dong-Roth-Su).

    delta is split exactly: ``delta_gaussian`` is what the composed Gaussian is measured at, and
    ``delta_threshold`` bounds the chance that any of a user's own (count-1) tokens passes ``tau``
    (``1 - (1 - P(1 + Z > tau))^C``). ``delta_gaussian + delta_threshold = delta``; the split is
    chosen to need the fewest contributors. Accounting treats the integer noise as the continuous
    Gaussian of the same sigma; tests measure the gap with dp-accounting's exact discrete-Gaussian
    privacy-loss distribution (the discrete one is slightly *more* private at these sigmas).
    """

    model_config = ConfigDict(frozen=True)

    epsilon: float
    delta: float
    max_phrases: int
    centroid_share: float
    delta_gaussian: float
    delta_threshold: float
    mu: float
    mu_phrases: float
    mu_centroids: float
    sigma: float
    tau: int
    centroid_noise_multiplier: float
    contributors_50: int
    contributors_95: int

    def release_probability(self, contributors: int) -> float:
        """P(a phrase with this many distinct contributors is released): P(n + Z > tau)."""
        return discrete_gaussian_sf(self.sigma, self.tau - int(contributors) + 1)


def _tail_threshold(sigma: float, per_token_delta: float) -> int:
    """Smallest integer tau with P(1 + Z > tau) = P(Z >= tau) <= per_token_delta."""
    tau = 1
    while discrete_gaussian_sf(sigma, tau) > per_token_delta:
        tau += 1
    return tau


def _contributors(sigma: float, tau: int, probability: float) -> int:
    n = 1
    while discrete_gaussian_sf(sigma, tau - n + 1) < probability:
        n += 1
    return n


def calibrate_window(epsilon: float, delta: float, max_phrases: int, centroid_share: float,
                     splits: int = 49) -> WindowCalibration:
    """Calibrate one window's release for (epsilon, delta), C = ``max_phrases`` and the share of
    the window's mu^2 that the centroids use; the delta split minimises the contributors needed
    (95 %, then 50 %), searched on a grid of ``splits`` fractions."""
    _check_eps_delta(epsilon, delta)
    if max_phrases < 1:
        raise InvalidInput(f"max_phrases must be >= 1, got {max_phrases}")
    if not 0 <= centroid_share < 1:
        raise InvalidInput(f"centroid_share must be in [0, 1), got {centroid_share}")
    best: WindowCalibration | None = None
    for i in range(1, splits + 1):
        frac = i / (splits + 1)
        d_gauss, d_thr = frac * delta, (1.0 - frac) * delta
        mu = gdp_mu(epsilon, d_gauss)
        mu_p, mu_c = mu * math.sqrt(1.0 - centroid_share), mu * math.sqrt(centroid_share)
        sigma = math.sqrt(max_phrases) / mu_p
        per_token = float(-math.expm1(math.log1p(-d_thr) / max_phrases))
        tau = _tail_threshold(sigma, per_token)
        cal = WindowCalibration(
            epsilon=epsilon, delta=delta, max_phrases=max_phrases, centroid_share=centroid_share,
            delta_gaussian=d_gauss, delta_threshold=d_thr, mu=mu, mu_phrases=mu_p, mu_centroids=mu_c,
            sigma=sigma, tau=tau, centroid_noise_multiplier=math.inf if mu_c == 0 else 1.0 / mu_c,
            contributors_50=_contributors(sigma, tau, 0.5), contributors_95=_contributors(sigma, tau, 0.95))
        if best is None or (cal.contributors_95, cal.contributors_50, cal.tau) < (
                best.contributors_95, best.contributors_50, best.tau):
            best = cal
    assert best is not None
    return best
