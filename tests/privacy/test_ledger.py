"""Privacy ledger on real SQLite: persistence, rolling window, warnings, refusals, idempotency and
atomicity under concurrent processes."""

from __future__ import annotations

import math
import time
import multiprocessing as mp
import multiprocessing.synchronize
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from continuum_mcp.privacy.dp import compose_gdp, gaussian_sigma, gdp_epsilon, gdp_mu
from continuum_mcp.errors import InvalidInput, PrivacyBudgetExceeded
from continuum_mcp.privacy.ledger import PrivacyLedger, PrivacySpend, compose_epsilon

DELTA = 1e-6
ROUND = PrivacySpend.gaussian(gaussian_sigma(1.0, DELTA))  # one (1, 1e-6) analytic-Gaussian release
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class ManualClock:
    """An injected clock the test moves by hand (the ledger takes any callable)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def test_composition_matches_published_values_and_refuses_past_budget(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "l.db", budget_epsilon=8.0, clock=ManualClock(T0))
    for i in range(41):
        ledger.spend(ROUND, round_id=f"r{i}")
    assert round(ledger.spent(), 2) == 7.90
    assert not ledger.check(ROUND).allowed
    assert round(ledger.check(ROUND).epsilon_after, 2) == 8.02
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.spend(ROUND, round_id="r41")
    assert len(ledger.history()) == 41


def test_persists_across_reopen_and_separates_identities(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    clock = ManualClock(T0)
    with PrivacyLedger(path, clock=clock) as a:
        for i in range(3):
            a.spend(ROUND, round_id=f"r{i}")
        spent = a.spent()
    with PrivacyLedger(path, clock=clock) as again:
        assert again.spent() == pytest.approx(spent)
        assert [e.round_id for e in again.history()] == ["r0", "r1", "r2"]
        assert spent == pytest.approx(gdp_epsilon(math.sqrt(3) * gdp_mu(1.0, DELTA), DELTA))
    with PrivacyLedger(path, identity="fed-other", clock=clock) as other:
        assert other.spent() == 0.0 and other.history() == []


def test_window_expiry_with_injected_clock(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ledger = PrivacyLedger(tmp_path / "l.db", window=timedelta(days=30), clock=clock)
    ledger.spend(ROUND, round_id="old")
    clock.advance(days=10)
    ledger.spend(ROUND, round_id="newer")
    two = ledger.spent()
    clock.advance(days=20, seconds=-1)  # the first spend is 30 days minus 1 s old: still counts
    assert ledger.spent() == pytest.approx(two)
    clock.advance(seconds=2)
    assert ledger.spent() == pytest.approx(1.0, abs=1e-9)
    hist = ledger.history()
    assert [e.in_window for e in hist] == [False, True]
    assert hist[0].leaves_window_at == T0 + timedelta(days=30)
    clock.advance(days=11)
    assert ledger.spent() == 0.0 and ledger.remaining() == 10.0


def test_warning_at_80_percent(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "l.db", budget_epsilon=10.0, clock=ManualClock(T0))
    mu = gdp_mu(1.0, DELTA)
    for k in range(1, 61):
        status = ledger.spend(ROUND, round_id=f"r{k}")
        expected = gdp_epsilon(math.sqrt(k) * mu, DELTA)
        assert status.epsilon_after == pytest.approx(expected, rel=1e-9)
        assert status.warning == (expected >= 8.0)
    assert ledger.status().warning
    assert not ledger.check(ROUND).allowed  # 61 rounds of (1, 1e-6) compose to 10.004 > 10


def test_refusal_says_when_budget_returns(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    ledger = PrivacyLedger(tmp_path / "l.db", budget_epsilon=3.0, clock=clock)
    big = PrivacySpend.gaussian(gaussian_sigma(2.0, DELTA))
    ledger.spend(big, round_id="a")
    clock.advance(days=5)
    ledger.spend(big, round_id="b")
    clock.advance(days=1)
    status = ledger.check(big)
    assert not status.allowed
    # Two (2, 1e-6) releases already exceed 3 when a third joins; once "a" leaves, b + new fit.
    assert status.returns_at == T0 + timedelta(days=30)
    with pytest.raises(PrivacyBudgetExceeded) as err:
        ledger.spend(big, round_id="c")
    assert "2026-01-31T00:00:00+00:00" in err.value.message
    assert err.value.code == "privacy_budget_exceeded"
    clock.now = T0 + timedelta(days=30)
    assert ledger.spend(big, round_id="c").allowed
    # A spend larger than the whole budget never fits: the message says so.
    huge = PrivacySpend.gaussian(gaussian_sigma(5.0, DELTA))
    with pytest.raises(PrivacyBudgetExceeded, match="never"):
        ledger.spend(huge, round_id="d")


def test_round_ids_are_idempotent(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "l.db", clock=ManualClock(T0))
    ledger.spend(ROUND, round_id="round-7")
    once = ledger.spent()
    again = ledger.spend(ROUND, round_id="round-7")
    assert again.already_spent and ledger.spent() == pytest.approx(once)
    assert len(ledger.history()) == 1
    with pytest.raises(InvalidInput):
        ledger.spend(PrivacySpend.gaussian(1.0), round_id="round-7")


def test_mixed_spends_compose_through_pld(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "l.db", clock=ManualClock(T0))
    ledger.spend(ROUND, round_id="g")
    ledger.spend(PrivacySpend.approx_dp(0.5, 1e-8), round_id="e")
    mixed = ledger.spent()
    gaussian_only = gdp_epsilon(gdp_mu(1.0, DELTA), DELTA - 1e-8)
    assert gaussian_only < mixed <= gaussian_only + 0.5 + 1e-3  # never worse than basic composition
    # PLD on Gaussian-only spends agrees with the closed form (within its discretisation).
    g = [ROUND] * 5
    closed = compose_epsilon(g, DELTA)
    via_pld = compose_epsilon(g + [PrivacySpend.approx_dp(0.0, 0.0)], DELTA)
    assert via_pld == pytest.approx(closed, abs=2e-3)
    # Threshold-failure deltas add up and shrink the delta left for the Gaussian part.
    with_thr = compose_epsilon([PrivacySpend.gaussian(ROUND.noise_multiplier or 0, extra_delta=2e-7)] * 2, DELTA)
    assert with_thr == pytest.approx(gdp_epsilon(compose_gdp([1 / (ROUND.noise_multiplier or 1)] * 2), 6e-7))
    assert compose_epsilon([PrivacySpend.approx_dp(1.0, 6e-7)] * 2, DELTA) == math.inf


def test_spend_validation() -> None:
    with pytest.raises(ValueError):
        PrivacySpend(noise_multiplier=2.0, epsilon=1.0, delta=1e-6)
    with pytest.raises(ValueError):
        PrivacySpend(epsilon=1.0)
    with pytest.raises(ValueError):
        PrivacySpend()


def _spend_until_refused(
    path: str, worker: int, start_iso: str, barrier: "mp.synchronize.Barrier", out: "mp.Queue[tuple[int, int]]"
) -> None:
    start = datetime.fromisoformat(start_iso)
    ledger = PrivacyLedger(Path(path), budget_epsilon=8.0, clock=lambda: start)
    barrier.wait(timeout=120)  # all processes start spending at the same moment
    recorded = 0
    for i in range(15):  # 4 x 15 attempts > the 41 that fit; no single worker can take them all
        try:
            ledger.spend(ROUND, round_id=f"w{worker}-r{i}")
            recorded += 1
        except PrivacyBudgetExceeded:
            break
        time.sleep(0.002)
    ledger.close()
    out.put((worker, recorded))


@pytest.mark.slow
def test_concurrent_processes_never_exceed_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    PrivacyLedger(path).close()  # create the schema once
    ctx = mp.get_context("spawn")
    queue: mp.Queue[tuple[int, int]] = ctx.Queue()
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(target=_spend_until_refused, args=(str(path), w, T0.isoformat(), barrier, queue)) for w in range(4)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    total = sum(n for _, n in results)
    # Exactly 41 (1, 1e-6) rounds fit in epsilon 8: never more, however the processes interleave.
    assert total == 41
    assert sum(1 for _, n in results if n > 0) >= 3  # the spends really were interleaved
    ledger = PrivacyLedger(path, budget_epsilon=8.0, clock=lambda: T0)
    assert len(ledger.history()) == 41 and ledger.spent() <= 8.0
