"""Privacy modes: the parameters live in one place and every figure is computed and consistent
with the DP primitives and the ledger."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from scipy import stats

from continuum_mcp.privacy import dp
from continuum_mcp.errors import InvalidInput, PrivacyBudgetExceeded
from continuum_mcp.privacy.ledger import PrivacyLedger
from continuum_mcp.privacy.modes import PrivacyPolicy, default_policy, privacy_table_markdown


@pytest.fixture(scope="module")
def policy() -> PrivacyPolicy:
    return default_policy()


def test_modes_and_levels_have_the_designed_parameters(policy: PrivacyPolicy) -> None:
    assert [(m.name, m.epsilon_per_round, m.budget_epsilon, m.delta) for m in policy.modes] == [
        ("high", 1.0, 10.0, 1e-6),
        ("balanced", 4.0, 20.0, 1e-6),
        ("open", 8.0, 30.0, 1e-6),
    ]
    assert [(lv.name, lv.max_slots) for lv in policy.levels] == [("minimal", 20), ("standard", 100), ("extensive", 250)]
    assert policy.default_mode == "high"
    with pytest.raises(InvalidInput):
        policy.mode("paranoid")
    with pytest.raises(InvalidInput):
        policy.level("everything")


def test_sigma_is_the_analytic_gaussian_of_the_mode(policy: PrivacyPolicy) -> None:
    for m in policy.modes:
        assert m.sigma == pytest.approx(dp.gaussian_sigma(m.epsilon_per_round, m.delta_gaussian))
        assert dp.gaussian_epsilon(m.sigma, m.delta_gaussian) == pytest.approx(m.epsilon_per_round)


def test_rounds_afforded_are_exactly_what_the_budget_composes_to(policy: PrivacyPolicy) -> None:
    for m in policy.modes:
        for mu_round, d, r in (
            (1 / m.sigma, m.delta_gaussian, m.rounds_afforded),
            (dp.gdp_mu(m.epsilon_per_round, m.delta), m.delta, m.rounds_afforded_pure_gaussian),
        ):
            assert dp.gdp_epsilon(math.sqrt(r) * mu_round, d) <= m.budget_epsilon + 1e-9
            assert dp.gdp_epsilon(math.sqrt(r + 1) * mu_round, d) > m.budget_epsilon


@pytest.mark.parametrize("mode_name", ["high", "balanced", "open"])
def test_ledger_accepts_exactly_the_rounds_the_mode_affords(tmp_path: Path, policy: PrivacyPolicy, mode_name: str) -> None:
    m = policy.mode(mode_name)
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    ledger = PrivacyLedger(tmp_path / "l.db", budget_epsilon=m.budget_epsilon, delta=m.delta, clock=lambda: now)
    spend = m.round_spend()
    for i in range(m.rounds_afforded):
        ledger.spend(spend, round_id=f"r{i}")
    assert ledger.spent() <= m.budget_epsilon
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.spend(spend, round_id="one-too-many")


def test_release_requirements_are_consistent(policy: PrivacyPolicy) -> None:
    for m in policy.modes:
        prev = 0
        for lv in policy.levels:
            r = policy.release_requirement(m.name, lv.name, "slots")
            assert r.partitions_per_user == lv.max_slots
            assert r.contributors_p50 > prev  # more slots per user -> more contributors needed
            prev = r.contributors_p50
            # The 50 % and 95 % figures are the smallest counts reaching those probabilities.
            for n, target in ((r.contributors_p50, 0.5), (r.contributors_p95, 0.95)):
                assert stats.norm.sf((r.threshold - n) / r.count_sigma) >= target
                assert stats.norm.sf((r.threshold - (n - 1)) / r.count_sigma) < target
            # A lone user's own slots pass the threshold with at most the reserved probability.
            p_one = stats.norm.sf((r.threshold - 1) / r.count_sigma)
            assert 1 - (1 - p_one) ** lv.max_slots == pytest.approx(m.threshold_delta_per_selection, rel=1e-6)
            phrases = policy.release_requirement(m.name, lv.name, "phrases")
            assert phrases.partitions_per_user == lv.max_slots * policy.max_phrases_per_pattern
            assert phrases.contributors_p50 > r.contributors_p50
            assert r.set_union_p50_best <= r.set_union_p50_worst
    # Looser modes need fewer contributors.
    needed = [policy.release_requirement(m.name, "standard", "slots").contributors_p50 for m in policy.modes]
    assert needed == sorted(needed, reverse=True)
    with pytest.raises(InvalidInput):
        policy.release_requirement("high", "standard", "statements")  # high never releases statements


def test_round_spend_reserves_threshold_delta(policy: PrivacyPolicy) -> None:
    for m in policy.modes:
        spend = m.round_spend()
        assert spend.noise_multiplier == pytest.approx(m.sigma)
        total_thr = spend.extra_delta * m.rounds_afforded
        assert total_thr == pytest.approx(m.threshold_delta_share * m.delta)


def test_table_renders_computed_figures(policy: PrivacyPolicy) -> None:
    table = privacy_table_markdown(policy)
    for m in policy.modes:
        assert f"| {m.name} | {m.epsilon_per_round:g} | {m.budget_epsilon:g} (delta 1e-06) | {m.sigma:.2f} | {m.rounds_afforded} |" in table
    r = policy.release_requirement("balanced", "extensive", "phrases")
    assert f"{r.contributors_p50} / {r.contributors_p95}" in table
    out = subprocess.run(
        [sys.executable, "-m", "continuum_mcp.privacy.modes"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out == table
