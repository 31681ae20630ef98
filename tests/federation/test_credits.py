"""Credit rules on a real store (SQLite file and PostgreSQL: the ``backend`` fixture), no server:
balances never go negative, and concurrent spends from several stores on one database never double-spend."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from continuum_mcp.errors import InsufficientCredits
from continuum_mcp.federation.coordinator import CoordinatorStore, Credits
from continuum_mcp.federation.protocol import CreditRules

WHO = "member-a"


def fund(store: CoordinatorStore, amount: float, ref: str = "grant") -> None:
    """Give WHO ``amount`` credits the way members earn them (one verification worth ``amount``)."""
    with store.transaction() as conn:
        Credits(CreditRules(earn_per_verification=amount), True).earn_verification(conn, WHO, ref, time.time())


def available(store: CoordinatorStore) -> float:
    with store.reading() as conn:
        return Credits(CreditRules(), True).balance(conn, WHO, time.time()).available


def test_a_charge_above_the_balance_is_refused_and_changes_nothing(tmp_path: Path, backend: str | None) -> None:
    store = CoordinatorStore(tmp_path, database=backend)
    credits = Credits(CreditRules(), require_contribution=True)
    fund(store, 3.0)
    with pytest.raises(InsufficientCredits, match="needs 10 credits and you have 3"):
        with store.transaction() as conn:
            credits.charge_download(conn, WHO, "d1", time.time())
    with store.reading() as conn:
        bal = credits.balance(conn, WHO, time.time())
    assert bal.available == 3.0 and bal.spent_this_month == 0.0


def test_free_queries_then_paid_then_refused(tmp_path: Path, backend: str | None) -> None:
    store = CoordinatorStore(tmp_path, database=backend)
    credits = Credits(CreditRules(free_queries_per_day=2, cost_query=1.0), require_contribution=True)
    fund(store, 1.0)
    results = []
    for k in range(3):
        with store.transaction() as conn:
            results.append(credits.charge_query(conn, WHO, priority=False, level="standard", ref=f"q{k}",
                                                now=time.time()))
    assert results == [(0.0, True), (0.0, True), (1.0, False)]
    with pytest.raises(InsufficientCredits), store.transaction() as conn:
        credits.charge_query(conn, WHO, priority=False, level="standard", ref="q3", now=time.time())
    with store.reading() as conn:
        bal = credits.balance(conn, WHO, time.time())
    assert bal.available == 0.0 and bal.free_queries_left_today == 0


def test_queries_are_free_when_contribution_is_not_required(tmp_path: Path, backend: str | None) -> None:
    store = CoordinatorStore(tmp_path, database=backend)
    credits = Credits(CreditRules(), require_contribution=False)
    with store.transaction() as conn:
        assert credits.charge_query(conn, WHO, priority=True, level="minimal", ref="q", now=time.time()) == (0.0, False)
        assert credits.charge_download(conn, WHO, "d", time.time()) == 0.0


def test_concurrent_spends_on_one_database_never_double_spend(tmp_path: Path, backend: str | None) -> None:
    CoordinatorStore(tmp_path, database=backend).close()
    setup = CoordinatorStore(tmp_path, database=backend)
    fund(setup, 7.0)
    credits = Credits(CreditRules(cost_download=1.0), require_contribution=True)
    ok, refused = [], []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def spend(k: int) -> None:
        store = CoordinatorStore(tmp_path, database=backend)  # its own connection(s): the store's write lock serialises the spends
        start.wait()
        for j in range(3):
            try:
                with store.transaction() as conn:
                    credits.charge_download(conn, WHO, f"t{k}-{j}", time.time())
                with lock:
                    ok.append(k)
            except InsufficientCredits:
                with lock:
                    refused.append(k)
        store.close()

    threads = [threading.Thread(target=spend, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 7 and len(refused) == 12 * 3 - 7
    assert available(setup) == pytest.approx(0.0)
    setup.close()


def test_round_earnings_respect_the_daily_limit_and_are_idempotent(tmp_path: Path, backend: str | None) -> None:
    store = CoordinatorStore(tmp_path, database=backend)
    credits = Credits(CreditRules(earn_per_pattern=1.0, earn_daily_limit=5.0), require_contribution=True)
    now = time.time()
    with store.transaction() as conn:
        credits.earn_round(conn, 0, {WHO: 3}, [WHO], now)
        credits.earn_round(conn, 0, {WHO: 3}, [WHO], now)  # a retried release pays once
        credits.earn_round(conn, 1, {WHO: 4}, [WHO], now)  # only 2 left today
    assert available(store) == 5.0
