"""The pure release of one window (release v2): fixed counts and a seeded noise source give exact
decisions.

No database, no server: ``window_counts`` and ``select_phrases`` are the functions the engine (and
the privacy benchmark) hand a window's member tokens to. (Rewritten for release v2: v1's
``plan_release`` selected slots and (slot, phrase) pairs separately and redrew noise whenever a
count changed; v2 selects phrase tokens once per window, sticky, with integer noise.)
"""

from __future__ import annotations

import numpy as np
import pytest

from continuum_mcp.federation.coordinator.release import (
    centroids, discrete_noise, select_phrases, window_counts, withdrawals)
from continuum_mcp.privacy.modes import default_policy


def no_noise(sigma: float, n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)


def test_each_member_counts_once_per_token_and_for_at_most_c_tokens() -> None:
    members = [("a", [f"t{i}" for i in range(30)]), ("b", ["t0", "t0", "t29"]), ("a", ["t25"])]
    counts = window_counts(members, max_phrases=20)
    assert counts["t0"] == 2  # a and b, b's duplicate ignored
    assert counts["t19"] == 1 and "t20" not in counts and "t25" not in counts  # a's 21st+ tokens never count
    assert counts["t29"] == 1  # only b's
    assert sum(1 for t in counts if t.startswith("t")) == 21


def test_threshold_floor_and_integer_counts() -> None:
    d = select_phrases({"x": 8, "y": 7, "z": 2}, set(), sigma=1.0, tau=7, floor=3, noise=no_noise)
    assert d["x"].keep and not d["y"].keep  # released only strictly above tau
    assert not d["z"].keep
    big = select_phrases({"z": 2}, set(), sigma=1.0, tau=0, floor=3, noise=no_noise)
    assert not big["z"].keep  # the hard floor holds whatever the noise says
    seeded = select_phrases({f"k{i}": 10 for i in range(50)}, set(), sigma=2.5, tau=9, floor=3,
                            noise=discrete_noise(np.random.default_rng(1)))
    assert all(isinstance(v.noisy_count, int) for v in seeded.values())
    assert len({v.noisy_count for v in seeded.values()}) > 3  # noisy, but integers


def test_seeded_noise_is_reproducible_and_released_tokens_are_never_redrawn() -> None:
    counts = {"a": 12, "b": 30, "c": 5}
    one = select_phrases(counts, set(), sigma=2.0, tau=9, floor=3, noise=discrete_noise(np.random.default_rng(5)))
    two = select_phrases(counts, set(), sigma=2.0, tau=9, floor=3, noise=discrete_noise(np.random.default_rng(5)))
    assert one == two

    def forbidden(sigma: float, n: int) -> np.ndarray:
        raise AssertionError("a released token got a fresh draw")

    assert select_phrases({"a": 99, "b": 1}, {"a", "b"}, sigma=2.0, tau=9, floor=3, noise=forbidden) == {}


def test_withdrawals_only_under_the_floor() -> None:
    assert withdrawals({"a": 2, "b": 3}, {"a", "b", "c"}, floor=3) == {"a", "c"}


def test_seeded_discrete_noise_has_the_discrete_gaussian_variance() -> None:
    z = discrete_noise(np.random.default_rng(7))(2.7, 40_000)
    assert z.dtype == np.int64
    assert float(z.mean()) == pytest.approx(0.0, abs=0.05)
    assert float(z.var()) == pytest.approx(2.7**2, rel=0.03)


def test_decisions_with_the_calibration_of_high_mode() -> None:
    cal = default_policy().mode("high").calibration
    d = select_phrases({"t": 4, "u": 10_000}, set(), sigma=cal.sigma, tau=cal.tau, floor=3,
                       noise=discrete_noise(np.random.default_rng(4)))
    assert not d["t"].keep and d["u"].keep  # tau is computed, far above 4 contributors


def test_centroids_are_unit_vectors_of_nonzero_blocks() -> None:
    s = np.zeros(3 * 4)
    s[4:8] = [3.0, 0.0, 4.0, 0.0]
    s[8:12] = [1.0, 1.0, 1.0, 1.0]
    c = centroids(s, slots=3, dim=4)
    assert set(c) == {1, 2}
    assert c[1].tolist() == pytest.approx([0.6, 0.0, 0.8, 0.0])
    assert c[1].dtype == np.dtype("<f4")
    assert set(centroids(s, slots=3, dim=4, only={2})) == {2}
