"""A learning session's parameters and guarantee: validated, computed by the project's accountant,
equal to dp-accounting's, and resting on noise that the honest survivors alone provide."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution as pld
from dp_accounting.rdp import rdp_privacy_accountant as rdp

from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.errors import CryptoError, InvalidInput
from continuum_mcp.federation.learning import (
    DEFAULT_ROUNDS, MIN_SESSION_PARTICIPANTS, SessionParams, check_session_round, session_discrete_tau,
    session_guarantee, session_round_params,
)
from continuum_mcp.federation.participant import honest_survivors
from continuum_mcp.federation.protocol import RoundState
from continuum_mcp.privacy.modes import default_policy
from continuum_mcp.secagg import simulate

DISC = 1e-4  # PLD discretisation; its pessimistic rounding is what the tolerance below covers


def test_card_defaults_and_per_kind_rounds() -> None:
    p = SessionParams.build(kind="codebook_refinement")
    assert (p.rounds, p.noise_multiplier, p.clip, p.local_steps, p.min_participants) == (3, 1.1, 1.0, 1, 10)
    assert p.delta == default_policy().mode("high").delta == 1e-6  # the modes' per-window delta
    assert SessionParams.build(kind="usage_statistics").rounds == DEFAULT_ROUNDS["usage_statistics"] == 1
    assert SessionParams.build(kind="usage_statistics", rounds=4).rounds == 4
    with pytest.raises(Exception):
        p.rounds = 5  # type: ignore[misc]  # frozen


@pytest.mark.parametrize("fields,message", [
    ({"kind": "fedavg"}, "unknown session kind 'fedavg'"),
    ({"kind": "usage_statistics", "min_participants": 9}, "min_participants: Input should be greater than or equal to 10"),
    ({"kind": "usage_statistics", "rounds": 0}, "rounds: Input should be greater than or equal to 1"),
    ({"kind": "usage_statistics", "rounds": "3"}, "rounds: Input should be a valid integer"),
    ({"kind": "usage_statistics", "noise_multiplier": 0.0}, "noise_multiplier: Input should be greater than 0"),
    ({"kind": "usage_statistics", "clip": math.inf}, "clip: Input should be a finite number"),
    ({"kind": "usage_statistics", "delta": 1e-3}, "delta: Input should be less than or equal to"),
    ({"kind": "usage_statistics", "budget": 3}, "budget: Extra inputs are not permitted"),
])
def test_bad_parameters_are_refused_with_the_field_and_rule(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        SessionParams.build(**fields)


def test_guarantee_matches_published_gaussian_values() -> None:
    # Balle & Wang 2018: the analytic Gaussian needs sigma = 3.73 for (1, 1e-5) (the classical
    # bound sqrt(2 ln(1.25/delta)) / epsilon = 4.84).
    g = session_guarantee(SessionParams.build(kind="usage_statistics", noise_multiplier=3.7306, delta=1e-5))
    assert g.epsilon == pytest.approx(1.0, abs=1e-3)
    # Dong, Roth & Su: R rounds of a Gaussian of multiplier s are exactly sqrt(R)/s-GDP; 1-GDP is
    # (epsilon 1, delta 0.127): 4 rounds at multiplier 2 is 1-GDP.
    g4 = session_guarantee(SessionParams.build(kind="codebook_refinement", rounds=4, noise_multiplier=2.0, delta=1e-5))
    assert g4.mu == pytest.approx(1.0)
    from continuum_mcp.privacy.accounting import gdp_delta
    assert round(gdp_delta(g4.mu, 1.0), 3) == 0.127


@pytest.mark.parametrize("kind,rounds,multiplier", [
    ("usage_statistics", 1, 1.1), ("codebook_refinement", 3, 1.1), ("codebook_refinement", 10, 1.1),
    ("codebook_refinement", 3, 2.5), ("usage_statistics", 2, 0.8),
])
def test_guarantee_equals_dp_accounting_pld_and_is_below_rdp(kind: str, rounds: int, multiplier: float) -> None:
    """Our exact GDP composition and dp-accounting's PLD over R Gaussian events agree to 1e-6
    relative (PLD's pessimistic discretisation only adds); the RDP accountant, an upper bound, is
    at most 10 % looser."""
    g = session_guarantee(SessionParams.build(kind=kind, rounds=rounds, noise_multiplier=multiplier))
    assert g.rounds == rounds and g.noise_multiplier == multiplier
    ref = pld.from_gaussian_mechanism(multiplier, sensitivity=1.0, value_discretization_interval=DISC)
    eps_pld = ref.self_compose(rounds).get_epsilon_for_delta(g.delta)
    assert eps_pld == pytest.approx(g.epsilon, rel=1e-6)
    acc = rdp.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(multiplier), rounds)
    eps_rdp = acc.get_epsilon(g.delta)
    assert g.epsilon <= eps_rdp <= 1.1 * g.epsilon
    # the per-round ledger charge composes to the same figure
    from continuum_mcp.privacy.ledger import compose_epsilon
    spend = SessionParams.build(kind=kind, rounds=rounds, noise_multiplier=multiplier).round_spend()
    assert compose_epsilon([spend] * rounds, g.delta) == pytest.approx(g.epsilon, rel=1e-9)


def test_default_guarantees() -> None:
    """The figures docs/governance.md states for the default sessions."""
    cb = session_guarantee(SessionParams.build(kind="codebook_refinement"))
    us = session_guarantee(SessionParams.build(kind="usage_statistics"))
    assert round(cb.epsilon, 2) == 8.27 and round(us.epsilon, 2) == 4.39
    assert "epsilon 8.27" in cb.statement and "at least 7 participants" in cb.statement
    assert cb.exceeds(10.0) is None
    assert cb.exceeds(5.0) == ("the session's guarantee is epsilon 8.266 at delta 1e-06 (3 rounds at noise "
                               "multiplier 1.1, clip 1), over the federation's per-session cap of epsilon 5")


def test_discrete_noise_is_accounted_as_the_continuous_gaussian() -> None:
    """The integer noise of a session round, per client, has std in the millions of fixed-point units:
    the distributed-discrete-Gaussian tau (Kairouz, Liu & Steinke 2021) is 0 in double precision,
    and even at a coarse scale (sensitivity 64 integer units) the exact discrete-Gaussian PLD of
    one and of three rounds' noise is within 0.01 % of the continuous one's epsilon."""
    p = SessionParams.build(kind="codebook_refinement")
    roster = [f"fed-m{i:03d}" for i in range(40)]
    sp = session_round_params("fed-x/s1", 0, 0, roster, 256 * 385 + 1, p)
    assert sp.client_sigma_scaled > 1e5 and session_discrete_tau(sp) == 0.0
    delta_int = 2 ** 6  # a coarse scale: sensitivity 64 integer units
    for sigma in (1.1 * delta_int, 1.1 * delta_int / math.sqrt(3)):
        cont = pld.from_gaussian_mechanism(sigma, sensitivity=delta_int, value_discretization_interval=DISC)
        disc = pld.from_discrete_gaussian_mechanism(sigma, sensitivity=delta_int, value_discretization_interval=DISC)
        e_cont, e_disc = cont.get_epsilon_for_delta(1e-6), disc.get_epsilon_for_delta(1e-6)
        assert abs(e_disc - e_cont) < 1e-4 * e_cont


@pytest.mark.parametrize("n", [10, 11, 12, 15, 30, 100, 1000])
def test_honest_survivors_alone_add_the_whole_noise(n: int) -> None:
    """Per client sigma/sqrt(t) raised by sqrt(t/h): the h honest ones of any t survivors (up to a
    third of the roster fake) add at least multiplier x the quantised clip."""
    p = SessionParams.build(kind="codebook_refinement")
    sp = session_round_params("fed-x/s1", 2, 0, [f"fed-m{i:04d}" for i in range(n)], 512, p)
    h = honest_survivors(n, sp.threshold, p.sybil_fraction)
    per_client = sp.client_sigma_scaled / sp.scale
    assert math.sqrt(h) * per_client >= p.noise_multiplier * sp.quantised_sensitivity * (1 - 1e-12)
    assert sp.clip_norm == p.clip and sp.session_id == "fed-x/s1/r2/a0"
    g = session_guarantee(p)
    assert (g.min_survivors, g.honest_survivors) == (7, 4)  # at n = 10
    assert g.client_noise_std == pytest.approx(1.1 * math.sqrt(7 / 4) / math.sqrt(7))


def test_real_secure_aggregation_of_a_session_round_with_dropouts() -> None:
    ids = [Identity.generate() for _ in range(MIN_SESSION_PARTICIPANTS)]
    p = SessionParams.build(kind="usage_statistics")
    sp = session_round_params("fed-x/s9", 0, 0, [i.instance_id for i in ids], 2000, p)
    rng = np.random.default_rng(1)
    inputs = {i.instance_id: rng.normal(size=2000) for i in ids}
    drops = {ids[j].instance_id: "after_share_keys" for j in range(3)}  # 7 = t survive
    report = simulate(sp, ids, inputs, Verifier(MemoryReplayGuard()), drops)
    res = report.result
    noise = (res.int_sum - sum(report.clients[c].quantised_input for c in res.contributors)) / sp.scale
    assert len(res.contributors) == sp.threshold == 7
    assert noise.std() == pytest.approx(math.sqrt(7) * sp.client_sigma_scaled / sp.scale, rel=0.06)
    assert noise.std() >= p.noise_multiplier * sp.quantised_sensitivity  # sybil factor on top


def test_rosters_below_the_floor_are_refused_by_coordinator_and_client() -> None:
    p = SessionParams.build(kind="usage_statistics")
    nine = [f"fed-m{i:02d}" for i in range(9)]
    with pytest.raises(InvalidInput, match="at least 10 participants, the roster has 9"):
        session_round_params("fed-x/s1", 0, 0, nine, 64, p)
    # a coordinator that publishes a 9-member session round anyway is refused by the client
    loose = p.model_copy(update={"min_participants": 3})
    forged = session_round_params("fed-x/s1", 0, 0, nine, 64, loose)
    state = RoundState(round_id=0, attempt=0, phase="advertise", phase_deadline=None, you_submitted=True,
                       you_in_roster=True, you_pending="advertise", params=forged.model_dump(mode="json"))
    assert check_session_round(state, nine[0], "fed-x/s1", 64, loose).n == 9
    with pytest.raises(CryptoError, match="at least 10"):
        check_session_round(state, nine[0], "fed-x/s1", 64, p)


def test_docs_show_the_computed_guarantee_table() -> None:
    from pathlib import Path

    from continuum_mcp.federation.learning import guarantees_markdown
    page = (Path(__file__).resolve().parents[3] / "docs" / "governance.md").read_text(encoding="utf-8")
    assert guarantees_markdown() in page
