"""Privacy modes (release v2): the parameters live in one place and every figure is computed and
consistent with the DP primitives and the ledger.

(Rewritten for release v2: v1 modes spent a slice of a 30-day budget per daily round and split
each slice between slots, phrases and statements; v2 spends a window's whole budget in one release
of phrase tokens plus centroids, with a lifetime bound beside it.)"""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from continuum_mcp.errors import InvalidInput, PrivacyBudgetExceeded
from continuum_mcp.privacy import dp
from continuum_mcp.privacy.ledger import PrivacyLedger
from continuum_mcp.privacy.modes import PrivacyPolicy, default_policy, privacy_table_markdown


@pytest.fixture(scope="module")
def policy() -> PrivacyPolicy:
    return default_policy()


def test_modes_and_levels_have_the_designed_parameters(policy: PrivacyPolicy) -> None:
    assert [(m.name, m.budget_epsilon, m.delta, m.phrases_per_window, m.window_days) for m in policy.modes] == [
        ("high", 10.0, 1e-6, 20, 30), ("balanced", 20.0, 1e-6, 20, 30), ("open", 30.0, 1e-6, 20, 30)]
    assert [(lv.name, lv.max_slots) for lv in policy.levels] == [("minimal", 20), ("standard", 100), ("extensive", 250)]
    assert policy.default_mode == "high"


def test_the_window_spends_exactly_its_budget_in_one_release(policy: PrivacyPolicy) -> None:
    for m in policy.modes:
        cal = m.calibration
        spend = m.window_spend()
        assert spend.mu == pytest.approx(cal.mu, rel=1e-9)  # phrases and centroids compose to the window's mu
        assert spend.extra_delta == pytest.approx(cal.delta_threshold)
        assert dp.gdp_epsilon(spend.mu, m.delta - spend.extra_delta) == pytest.approx(m.budget_epsilon, rel=1e-7)
        assert cal.sigma == pytest.approx(math.sqrt(m.phrases_per_window) / cal.mu_phrases)
        assert cal.mu_centroids ** 2 == pytest.approx(m.allocation.centroids * cal.mu ** 2)
        assert m.sigma == m.centroid_noise_multiplier == pytest.approx(1 / cal.mu_centroids)
        assert m.centroid_clip == pytest.approx(math.sqrt(m.allocation.centroids))


def test_less_noise_would_not_fit_the_budget(policy: PrivacyPolicy) -> None:
    m = policy.mode("high")
    weaker = m.window_spend(m.centroid_noise_multiplier * 0.9)
    assert weaker.mu is not None and dp.gdp_epsilon(weaker.mu, m.delta - weaker.extra_delta) > m.budget_epsilon
    with pytest.raises(InvalidInput):
        m.window_spend(0.0)


def test_one_window_fits_the_ledger_and_a_second_inside_the_window_does_not(policy: PrivacyPolicy, tmp_path: Path) -> None:
    m = policy.mode("balanced")
    now = [datetime(2026, 3, 1, tzinfo=timezone.utc)]
    ledger = PrivacyLedger(tmp_path / "l.db", budget_epsilon=m.budget_epsilon, delta=m.delta, clock=lambda: now[0],
                           window=timedelta(days=m.window_days), lifetime=m.lifetime_budget())
    status = ledger.spend(m.round_spend(), round_id="w0")
    assert status.allowed and status.warning  # the whole window budget: at 100 %
    now[0] += timedelta(days=29)
    with pytest.raises(PrivacyBudgetExceeded, match="returns at"):
        ledger.spend(m.round_spend(), round_id="w1")
    now[0] += timedelta(days=2)
    assert ledger.spend(m.round_spend(), round_id="w1").allowed


def test_contributors_needed_meet_the_targets_and_do_not_depend_on_the_level(policy: PrivacyPolicy) -> None:
    targets = {"high": 20, "balanced": 12, "open": 10}
    rows = policy.table()
    assert len(rows) == len(policy.modes) * len(policy.levels)
    for r in rows:
        assert r.contributors_50 <= r.contributors_95 <= targets[r.mode]
        cal = policy.mode(r.mode).calibration
        assert cal.release_probability(r.contributors_95) >= 0.95 > cal.release_probability(r.contributors_95 - 1)
        assert cal.release_probability(r.contributors_50) >= 0.5 > cal.release_probability(r.contributors_50 - 1)
    for m in policy.modes:
        assert len({(r.tau, r.contributors_95) for r in rows if r.mode == m.name}) == 1
    needed = [policy.release_requirement(m.name, "standard").contributors_95 for m in policy.modes]
    assert needed == sorted(needed, reverse=True)  # more budget, fewer contributors needed
    with pytest.raises(InvalidInput):
        policy.release_requirement("high", "standard", "slots")  # no separate slot selection in v2
    with pytest.raises(InvalidInput):
        policy.mode("paranoid")


def test_lifetime_bound_is_the_composition_of_the_stated_windows(policy: PrivacyPolicy) -> None:
    for m in policy.modes:
        spend = m.window_spend()
        assert spend.mu is not None
        k = m.windows_per_year
        assert m.lifetime_delta == pytest.approx(k * m.delta)
        assert m.lifetime_epsilon == pytest.approx(
            dp.gdp_epsilon(math.sqrt(k) * spend.mu, m.lifetime_delta - k * spend.extra_delta))
        assert m.budget_epsilon < m.lifetime_epsilon < k * m.budget_epsilon  # tighter than adding up


def test_table_renders_computed_figures(policy: PrivacyPolicy) -> None:
    table = privacy_table_markdown(policy)
    for r in policy.table():
        assert f"| {r.mode} | {r.level} ({r.L}) | {r.epsilon:g} ({r.delta:g}) | {r.C} | {r.sigma:.2f} | {r.tau} " \
               f"| {r.contributors_50} / {r.contributors_95} |" in table
    out = subprocess.run(
        [sys.executable, "-m", "continuum_mcp.privacy.modes"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out == table


def test_docs_table_is_the_generated_one(policy: PrivacyPolicy) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "privacy.md").read_text(encoding="utf-8")
    assert privacy_table_markdown(policy) in docs
