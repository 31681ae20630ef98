"""The pure release: fixed counts and a seeded noise source give exact decisions.

No database, no server: ``plan_release`` is the function the engine (and the privacy benchmark)
hands the window's distinct-contributor counts to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from continuum_mcp.federation.coordinator.release import Decision, centroids, decide, gaussian_noise, plan_release
from continuum_mcp.privacy.modes import default_policy


@dataclass(frozen=True)
class Req:
    count_sigma: float
    threshold: float


@dataclass(frozen=True)
class Old:
    true_count: int
    noisy_count: float


def no_noise(sigma: float) -> float:
    raise AssertionError("no fresh draw was expected")


def test_seeded_noise_gives_exact_decisions() -> None:
    counts = {0: 5, 1: 2, 2: 40, 3: 12}
    plan = plan_release(counts, {}, {}, {}, floor=3, slot_requirement=Req(2.0, 10.0),
                        phrase_requirement=Req(1.0, 1.0), dp_select=True, noise=gaussian_noise(np.random.default_rng(0)))
    draws = np.random.default_rng(0).normal(0.0, 2.0, size=4)  # one draw per item, in slot order
    expected_noisy = {s: counts[s] + draws[k] for k, s in enumerate(sorted(counts))}
    assert {s: d.noisy_count for s, d in plan.slots.items()} == pytest.approx(expected_noisy)
    for s, d in plan.slots.items():
        assert d.keep == (counts[s] >= 3 and expected_noisy[s] > 10.0)
    assert plan.slots[2].keep and not plan.slots[1].keep and not plan.slots[0].keep
    assert plan.selected_slots == {s for s, d in plan.slots.items() if d.keep}


def test_hard_floor_holds_whatever_the_noise_says() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        out = decide({7: 2, 8: 3}, {}, floor=3, requirement=Req(1000.0, -1e9), dp_select=True,
                     noise=gaussian_noise(rng))
        assert not out[7].keep  # below the floor: never, even with a threshold no noise can miss
        assert out[8].keep


def test_open_mode_is_the_floor_alone() -> None:
    out = decide({0: 2, 1: 3, 2: 100}, {}, floor=3, requirement=Req(5.0, 1e9), dp_select=False,
                 noise=gaussian_noise(np.random.default_rng(2)))
    assert [out[s].keep for s in (0, 1, 2)] == [False, True, True]


def test_unchanged_counts_keep_their_noise_and_changed_ones_are_redrawn() -> None:
    prior = {(1, "a"): Old(6, 17.5), (1, "b"): Old(6, 3.0)}
    out = decide({(1, "a"): 6}, prior, floor=3, requirement=Req(1.0, 10.0), dp_select=True, noise=lambda s: 0.25)
    assert out[(1, "a")] == Decision(keep=True, true_count=6, noisy_count=17.5, was_released=True)
    # (1, "b") lost all its contributors: re-evaluated with a fresh draw, and withdrawn
    assert out[(1, "b")] == Decision(keep=False, true_count=0, noisy_count=0.25, was_released=True)
    again = decide({(1, "a"): 6}, {(1, "a"): Old(6, 17.5)}, floor=3, requirement=Req(1.0, 10.0),
                   dp_select=True, noise=no_noise)
    assert again[(1, "a")].noisy_count == 17.5  # recomputation never averages the noise away


def test_withdraw_only_never_releases_anything_new() -> None:
    out = decide({0: 50, 1: 50}, {1: Old(51, 60.0)}, floor=3, requirement=Req(1.0, 10.0), dp_select=True,
                 noise=lambda s: 0.0, withdraw_only=True)
    assert set(out) == {1} and out[1].keep


def test_decisions_with_the_policy_requirement_of_high_mode() -> None:
    req = default_policy().release_requirement("high", "standard", "phrases")
    plan = plan_release({}, {(0, "t"): 4, (0, "u"): 10_000}, {}, {}, floor=3, slot_requirement=req,
                        phrase_requirement=req, dp_select=True, noise=gaussian_noise(np.random.default_rng(4)))
    assert not plan.phrases[(0, "t")].keep  # 4 contributors are far below high's threshold
    assert plan.phrases[(0, "u")].keep


def test_centroids_are_unit_vectors_of_nonzero_blocks() -> None:
    s = np.zeros(3 * 4)
    s[4:8] = [3.0, 0.0, 4.0, 0.0]
    s[8:12] = [1.0, 1.0, 1.0, 1.0]
    c = centroids(s, slots=3, dim=4)
    assert set(c) == {1, 2}
    assert c[1].tolist() == pytest.approx([0.6, 0.0, 0.8, 0.0])
    assert c[1].dtype == np.dtype("<f4")
    assert set(centroids(s, slots=3, dim=4, only={2})) == {2}
