"""DP mechanisms: published calibration values, sampler correctness, and an empirical DP audit.

The empirical audit runs a mechanism many times on two neighbouring inputs, bins the outputs, and
flags a violation when, for some bin, the Clopper-Pearson lower bound of one probability exceeds
e^epsilon times the upper bound of the other plus delta. With alpha = 1e-7 per bound and a few
dozen bins a correct mechanism is flagged with probability < 1e-5 (never flaky), while the same
check catches a mechanism whose noise is halved.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats

from continuum_mcp.privacy import dp
from continuum_mcp.errors import InvalidInput

DELTA = 1e-6


# ----------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("epsilon,expected", [(0.5, 8.06), (1.0, 4.22), (4.0, 1.19), (8.0, 0.65)])
def test_analytic_gaussian_sigma_matches_published_values(epsilon: float, expected: float) -> None:
    assert round(dp.gaussian_sigma(epsilon, DELTA), 2) == expected


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1.0, 4.0, 8.0, 20.0])
def test_gaussian_calibration_round_trips(epsilon: float) -> None:
    sigma = dp.gaussian_sigma(epsilon, DELTA, sensitivity=3.0)
    assert dp.gaussian_epsilon(sigma, DELTA, sensitivity=3.0) == pytest.approx(epsilon, rel=1e-9)
    # The exact condition holds with equality at the calibrated sigma, and tightens above it.
    assert dp.gdp_delta(3.0 / sigma, epsilon) == pytest.approx(DELTA, rel=1e-6)
    assert dp.gdp_delta(3.0 / (1.01 * sigma), epsilon) < DELTA


def test_analytic_gaussian_beats_classical_bound() -> None:
    for epsilon in (0.1, 0.5, 0.9):
        classical = math.sqrt(2 * math.log(1.25 / DELTA)) / epsilon
        assert dp.gaussian_sigma(epsilon, DELTA) < classical


def test_gaussian_dp_composition_matches_published_values() -> None:
    mu = dp.gdp_mu(1.0, DELTA)
    assert round(dp.gdp_epsilon(dp.compose_gdp([mu] * 41), DELTA), 2) == 7.90
    assert round(dp.gdp_epsilon(dp.compose_gdp([mu] * 42), DELTA), 2) == 8.02


def test_laplace_threshold_matches_published_values() -> None:
    assert round(dp.partition_selection(1.0, DELTA, 1, "laplace").threshold, 1) == 14.1
    # DESIGN.md's L = 1 reference thresholds.
    assert round(dp.partition_selection(0.5, DELTA, 1, "laplace").threshold) == 27
    assert round(dp.partition_selection(4.0, DELTA, 1, "laplace").threshold, 1) == 4.3
    assert round(dp.partition_selection(8.0, DELTA, 1, "laplace").threshold, 1) == 2.6
    assert dp.laplace_scale(2.0, 4.0) == 2.0 and dp.laplace_epsilon(2.0, 4.0) == 2.0


def test_invalid_parameters_raise_typed_errors() -> None:
    with pytest.raises(InvalidInput):
        dp.gaussian_sigma(0.0, DELTA)
    with pytest.raises(InvalidInput):
        dp.gaussian_sigma(1.0, 1.5)
    with pytest.raises(InvalidInput):
        dp.discrete_gaussian(-1.0, 3)
    with pytest.raises(InvalidInput):
        dp.partition_selection(1.0, DELTA, 0)


# ----------------------------------------------------------------------------- clipping, noise


def test_clip_l2_only_shrinks_long_vectors() -> None:
    v = np.array([3.0, 4.0])
    assert np.allclose(dp.clip_l2(v, 1.0), [0.6, 0.8])
    assert np.allclose(dp.clip_l2(v, 10.0), v)
    assert np.linalg.norm(dp.clip_l2(np.ones((4, 384)), 1.0)) == pytest.approx(1.0)
    with pytest.raises(InvalidInput):
        dp.clip_l2(np.array([np.nan]), 1.0)


def test_continuous_noise_has_the_right_distribution() -> None:
    n = 200_000
    g = dp.add_gaussian_noise(np.zeros(n), 2.0)
    lap = dp.add_laplace_noise(np.zeros(n), 2.0)
    assert stats.kstest(g, stats.norm(scale=2.0).cdf).pvalue > 1e-6
    assert stats.kstest(lap, stats.laplace(scale=2.0).cdf).pvalue > 1e-6
    # Cryptographic source: two draws never coincide.
    assert not np.array_equal(dp.add_gaussian_noise(np.zeros(8), 1.0), dp.add_gaussian_noise(np.zeros(8), 1.0))


# ----------------------------------------------------------------------------- discrete Gaussian


def _chi_square_pvalue(samples: NDArray[np.int64], sigma: float) -> float:
    """Chi-square goodness of fit against the exact pmf, pooling cells with expectation < 20."""
    n = samples.size
    half = int(math.ceil(12 * sigma)) + 2
    support = np.arange(-half, half + 1)
    expected = dp.discrete_gaussian_pmf(sigma, support) * n
    observed = np.array([np.count_nonzero(samples == x) for x in support], dtype=np.float64)
    assert np.count_nonzero(np.abs(samples) > half) == 0
    big = expected >= 20
    exp_cells = list(expected[big]) + [expected[~big].sum()]
    obs_cells = list(observed[big]) + [observed[~big].sum()]
    return float(stats.chisquare(obs_cells, np.array(exp_cells) * sum(obs_cells) / sum(exp_cells)).pvalue)


@pytest.mark.parametrize("sigma", [0.4, 1.0, 3.5, 25.0])
def test_fast_discrete_gaussian_matches_exact_pmf(sigma: float) -> None:
    samples = dp.discrete_gaussian(sigma, 400_000)
    assert samples.dtype == np.int64
    assert _chi_square_pvalue(samples, sigma) > 1e-6
    support = np.arange(-int(15 * sigma) - 5, int(15 * sigma) + 6)
    pmf = dp.discrete_gaussian_pmf(sigma, support)
    true_var = float(np.sum(pmf * support.astype(np.float64) ** 2))
    # Variance within 6 standard errors (var of the sample variance ~ 2 var^2 / n).
    assert abs(samples.var() - true_var) < 6 * math.sqrt(2 / samples.size) * true_var
    # Total variation distance between the empirical and exact pmf is at sampling-noise level.
    counts = np.array([np.count_nonzero(samples == x) for x in support]) / samples.size
    assert 0.5 * np.abs(counts - pmf).sum() < 0.01


def test_exact_discrete_gaussian_matches_pmf() -> None:
    sigma = 1.5
    samples = np.array([dp.discrete_gaussian_exact(sigma) for _ in range(4000)], dtype=np.int64)
    assert _chi_square_pvalue(samples, sigma) > 1e-6


def test_discrete_gaussian_large_sigma_and_shapes() -> None:
    sigma = 2.0**20
    samples = dp.discrete_gaussian(sigma, (100, 1000))
    assert samples.shape == (100, 1000) and samples.dtype == np.int64
    assert abs(samples.var() / sigma**2 - 1.0) < 0.03
    assert abs(samples.mean()) < 6 * sigma / math.sqrt(samples.size)
    assert np.all(dp.discrete_gaussian(0.0, 5) == 0)
    assert dp.discrete_gaussian(1.0, 0).shape == (0,)


def test_sum_of_discrete_gaussians_has_summed_variance() -> None:
    # Secure aggregation adds one share per client: n shares of sigma/sqrt(n) carry sigma overall.
    n, sigma = 100, 40.0
    total = dp.discrete_gaussian(sigma / math.sqrt(n), (n, 20_000)).sum(axis=0)
    assert abs(total.var() / sigma**2 - 1.0) < 0.06


# ----------------------------------------------------------------------------- empirical DP audit


ALPHA = 1e-7


def _cp_bounds(k: NDArray[np.int64], n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Clopper-Pearson lower and upper bounds, each with one-sided error ALPHA."""
    k = np.asarray(k, dtype=np.float64)
    lower = np.where(k > 0, stats.beta.ppf(ALPHA, k, n - k + 1), 0.0)
    upper = np.where(k < n, stats.beta.ppf(1 - ALPHA, k + 1, n - k), 1.0)
    return lower, upper


def _binned(outputs: NDArray[np.float64], edges: NDArray[np.float64]) -> NDArray[np.int64]:
    """Counts per bin; NaN ('not released') is its own bin."""
    released = outputs[~np.isnan(outputs)]
    idx = np.searchsorted(edges, released, side="right")
    counts = np.bincount(idx, minlength=edges.size + 1)
    return np.concatenate([counts, [np.count_nonzero(np.isnan(outputs))]]).astype(np.int64)


def dp_violated(a: NDArray[np.float64], b: NDArray[np.float64], edges: NDArray[np.float64], epsilon: float, delta: float) -> bool:
    """True when some bin proves P_a(bin) > e^eps P_b(bin) + delta (or the other way round)."""
    ca, cb = _binned(a, edges), _binned(b, edges)
    la, ua = _cp_bounds(ca, a.size)
    lb, ub = _cp_bounds(cb, b.size)
    e = math.exp(epsilon)
    return bool(np.any(la > e * ub + delta) or np.any(lb > e * ua + delta))


N_TRIALS = 1_000_000


def test_empirical_dp_gaussian_and_broken_calibration_is_caught() -> None:
    epsilon = 1.0
    sigma = dp.gaussian_sigma(epsilon, DELTA)
    edges = np.arange(-20.0, 21.0, 2.0)
    run = lambda x, s: dp.add_gaussian_noise(np.full(N_TRIALS, x), s)  # noqa: E731
    assert not dp_violated(run(0.0, sigma), run(1.0, sigma), edges, epsilon, DELTA)
    assert dp_violated(run(0.0, sigma / 2), run(1.0, sigma / 2), edges, epsilon, DELTA)


def test_empirical_dp_laplace_and_broken_calibration_is_caught() -> None:
    epsilon = 1.0
    b = dp.laplace_scale(epsilon)
    edges = np.arange(-10.0, 11.0, 1.0)
    run = lambda x, s: dp.add_laplace_noise(np.full(N_TRIALS, x), s)  # noqa: E731
    assert not dp_violated(run(0.0, b), run(1.0, b), edges, epsilon, 0.0)
    assert dp_violated(run(0.0, b / 2), run(1.0, b / 2), edges, epsilon, 0.0)


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_empirical_dp_partition_selection(mechanism: dp.PartitionMechanism) -> None:
    epsilon = 1.0
    params = dp.partition_selection(epsilon, DELTA, 1, mechanism)
    tau = params.threshold
    edges = np.arange(math.floor(tau), math.floor(tau) + 4 * params.noise + 2, max(params.noise / 2, 0.5))

    def run(count: float, p: dp.PartitionSelection) -> NDArray[np.float64]:
        return dp.release_counts(np.full(N_TRIALS, count), p)

    # epsilon part: a partition near the threshold, with and without one more user.
    c = math.floor(tau)
    assert not dp_violated(run(c, params), run(c + 1, params), edges, epsilon, DELTA)
    broken = params.model_copy(update={"noise": params.noise / 2})
    assert dp_violated(run(c, broken), run(c + 1, broken), edges, epsilon, DELTA)
    # delta part: the user's own partition (count 1) versus no partition at all (never released).
    absent = np.full(N_TRIALS, np.nan)
    assert not dp_violated(run(1, params), absent, edges, epsilon, DELTA)
    naive = params.model_copy(update={"threshold": 5.0})  # plain k-anonymity-style cut
    assert dp_violated(run(1, naive), absent, edges, epsilon, DELTA)


# ----------------------------------------------------------------------------- partition selection


def test_partition_selection_parameters_are_consistent() -> None:
    for mech in dp.PARTITION_MECHANISMS:
        prev = None
        for L in (1, 20, 100):
            p = dp.partition_selection(1.0, DELTA, L, mech)
            assert p.contributors_p95 >= p.contributors_p50 >= 1
            assert p.contributors_p50_best <= p.contributors_p50
            assert p.delta_noise + p.delta_threshold == pytest.approx(DELTA)
            if prev is not None:
                assert p.contributors_p50 >= prev.contributors_p50
            prev = p
    # Laplace grows like L, Gaussian like sqrt(L): Gaussian needs far fewer at L = 100.
    lap = dp.partition_selection(1.0, DELTA, 100, "laplace")
    gau = dp.partition_selection(1.0, DELTA, 100, "gaussian")
    assert gau.contributors_p50 < lap.contributors_p50 / 4
    # The 50 % figure is where the threshold sits; the 95 % one adds the noise's 95th percentile.
    assert gau.contributors_p50 == math.ceil(gau.threshold)
    assert gau.contributors_p95 == math.ceil(gau.threshold + stats.norm.ppf(0.95) * gau.noise)
    assert lap.contributors_p95 == math.ceil(lap.threshold + lap.noise * math.log(10))


def test_gaussian_threshold_bounds_the_chance_a_lone_user_is_released() -> None:
    L, sigma, dthr = 20, 3.0, 1e-6
    tau = dp.gaussian_partition_threshold(sigma, dthr, L)
    p_one = stats.norm.sf((tau - 1) / sigma)
    assert 1 - (1 - p_one) ** L == pytest.approx(dthr, rel=1e-6)
    rho = dp.policy_gaussian_threshold(sigma, dthr, L)
    for t in (1, 5, L):  # a lone user's t items each get 1/sqrt(t)
        p = stats.norm.sf((rho - 1 / math.sqrt(t)) / sigma)
        assert 1 - (1 - p) ** t <= dthr * (1 + 1e-9)


@pytest.mark.parametrize("mechanism", dp.PARTITION_MECHANISMS)
def test_select_partitions_releases_popular_items_only(mechanism: dp.PartitionMechanism) -> None:
    params = dp.partition_selection(4.0, DELTA, 3, mechanism)
    popular = params.contributors_p95_best + 20 if mechanism == "policy_gaussian" else params.contributors_p95 + 20
    users = [["common"] for _ in range(popular)]
    users += [[f"secret-{i}", f"private-{i}"] for i in range(300)]  # each known to one user only
    released = dp.select_partitions(users, params)
    assert "common" in released
    assert not any(k.startswith(("secret", "private")) for k in released)


def test_select_partitions_enforces_the_per_user_bound() -> None:
    params = dp.partition_selection(8.0, DELTA, 2, "laplace")
    # One user claiming 10 items with 1000 copies of itself still counts once per item, in <= L items.
    noisy = dp.select_partitions([[f"i{j}" for j in range(10)] * 1000], params)
    assert noisy == {}
    many = [["x", "y", "z", "w"] for _ in range(200)]
    out = dp.select_partitions(many, params)
    # Each user keeps 2 of its 4 items at random: about 100 each, never 200.
    assert all(v < 160 for v in out.values()) and len(out) == 4
