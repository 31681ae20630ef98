"""The coordinator store's two backends as several coordinator processes use them: one database,
many stores. Credits are never double-spent, a nonce is accepted once, a ledger never overspends,
and a database the store cannot use is one line with the taxonomy's exit code, never a traceback.

Run on both backends (``backend`` fixture); the PostgreSQL-only tests take the ``pg_server`` directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from continuum_mcp._postgres import VERSIONS_TABLE, pg_ddl, pg_sql
from continuum_mcp.crypto.replay import REPLAY_SCHEMA, DatabaseReplayGuard
from continuum_mcp.errors import InsufficientCredits, InvalidInput, PrivacyBudgetExceeded, ReplayError, StoreCorrupt
from continuum_mcp.federation.coordinator import CoordinatorStore, Credits
from continuum_mcp.federation.coordinator.cli import main
from continuum_mcp.federation.coordinator.store import LEDGER_DB_NAME, REPLAY_DB_NAME
from continuum_mcp.federation.protocol import CreditRules
from continuum_mcp.privacy.ledger import LEDGER_SCHEMA, PrivacyLedger, PrivacySpend

WHO = "member-a"
FUNDS = 9

#: one coordinator process spending: its own store (own pool or connection), as many spends as it can
_SPENDER = """
import sys, time
from continuum_mcp.errors import InsufficientCredits
from continuum_mcp.federation.coordinator import CoordinatorStore, Credits
from continuum_mcp.federation.protocol import CreditRules
store = CoordinatorStore(sys.argv[1], database=sys.argv[2] or None)
credits = Credits(CreditRules(cost_download=1.0), True)
ok = 0
while time.time() < float(sys.argv[3]):
    time.sleep(0.001)
for j in range(int(sys.argv[4])):
    try:
        with store.transaction() as conn:
            credits.charge_download(conn, "member-a", f"{sys.argv[5]}-{j}", time.time())
        ok += 1
    except InsufficientCredits:
        pass
store.close()
print(ok)
"""


def together(n: int, fn: Callable[[int], None]) -> None:
    """Run ``fn(0) .. fn(n-1)`` on n threads (each waits on its own barrier to start at once) to the end."""
    threads = [threading.Thread(target=fn, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def fund(store: CoordinatorStore, amount: float) -> None:
    with store.transaction() as conn:
        Credits(CreditRules(earn_per_verification=amount), True).earn_verification(conn, WHO, "grant", time.time())


@pytest.mark.slow
def test_processes_spending_on_one_database_never_double_spend(tmp_path: Path, backend: str | None) -> None:
    store = CoordinatorStore(tmp_path, database=backend)
    fund(store, FUNDS)
    start_at = time.time() + 3.0  # every process starts spending at once
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", _SPENDER, str(tmp_path), backend or "", str(start_at), "6",
                               f"p{k}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for k in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert sum(int(o) for o, _ in outs) == FUNDS  # 18 tries, exactly the 9 funded spends succeed
    with store.reading() as conn:
        assert Credits(CreditRules(), True).balance(conn, WHO, time.time()).available == pytest.approx(0.0)
    store.close()


def test_two_stores_threads_spending_never_overdraw(tmp_path: Path, backend: str | None) -> None:
    stores = [CoordinatorStore(tmp_path, database=backend) for _ in range(2)]
    fund(stores[0], FUNDS)
    credits = Credits(CreditRules(cost_download=1.0), True)
    wins: list[int] = []
    go = threading.Barrier(8)

    def spend(k: int) -> None:
        go.wait()
        for j in range(4):
            try:
                with stores[k % 2].transaction() as conn:
                    credits.charge_download(conn, WHO, f"t{k}-{j}", time.time())
                wins.append(k)
            except InsufficientCredits:
                pass

    together(8, spend)
    assert len(wins) == FUNDS
    for s in stores:
        s.close()


def test_one_nonce_is_accepted_once_across_stores(tmp_path: Path, backend: str | None) -> None:
    stores = [CoordinatorStore(tmp_path, database=backend) for _ in range(2)]
    guards = [DatabaseReplayGuard(s.component(REPLAY_DB_NAME, REPLAY_SCHEMA, what="replay guard")) for s in stores]
    now = int(time.time())
    accepted: list[int] = []
    refused: list[int] = []
    go = threading.Barrier(10)

    def post(k: int) -> None:
        go.wait()
        try:
            guards[k % 2].check_and_record("fed-aaaa-bbbb-cccc", "the-one-nonce", now + 300, now)
            accepted.append(k)
        except ReplayError:
            refused.append(k)

    together(10, post)
    assert len(accepted) == 1 and len(refused) == 9
    with pytest.raises(ReplayError):
        guards[1].check_and_record("fed-aaaa-bbbb-cccc", "the-one-nonce", now + 300, now + 10)
    guards[0].check_and_record("fed-aaaa-bbbb-cccc", "the-one-nonce", now + 900, now + 600)  # expired: reusable
    assert len(guards[0]) == len(guards[1]) == 1
    for s in stores:
        s.close()


def test_a_member_ledger_shared_by_stores_never_exceeds_its_budget(tmp_path: Path, backend: str | None) -> None:
    stores = [CoordinatorStore(tmp_path, database=backend) for _ in range(2)]
    dbs = [s.component(LEDGER_DB_NAME, LEDGER_SCHEMA, what="privacy ledger") for s in stores]
    spend = PrivacySpend.approx_dp(1.0, 1e-9)
    spent: list[str] = []
    go = threading.Barrier(6)

    def take(k: int) -> None:
        ledger = PrivacyLedger(db=dbs[k % 2], identity=WHO, budget_epsilon=3.0, delta=1e-6,
                               window=timedelta(days=30))
        go.wait()
        try:
            ledger.spend(spend, round_id=f"r{k}")
            spent.append(f"r{k}")
        except PrivacyBudgetExceeded:
            pass

    together(6, take)
    assert len(spent) == 3  # epsilon 1 each, budget 3: exactly three fit, whichever process records them
    history = PrivacyLedger(db=dbs[0], identity=WHO, budget_epsilon=3.0, delta=1e-6).history()
    assert sorted(e.round_id for e in history) == sorted(spent)
    for s in stores:
        s.close()


# ----------------------------------------------------------------------------- refusals


def test_a_postgresql_database_of_a_newer_release_is_refused_with_the_reason(
        tmp_path: Path, pg_server: Any, capsys: Any) -> None:
    url = pg_server.database()
    CoordinatorStore(tmp_path, database=url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"UPDATE {VERSIONS_TABLE} SET version = version + 1 WHERE component = 'coordinator'")
    with pytest.raises(StoreCorrupt, match="newer than this release understands"):
        CoordinatorStore(tmp_path, database=url)
    assert main(["--storage", str(tmp_path), "--port", "0", "--database", url]) == StoreCorrupt.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: store_corrupt:") and "newer than this release" in err[0]


def test_bad_database_urls_are_one_line_with_the_exit_code(tmp_path: Path, capsys: Any) -> None:
    cases = [("mysql://127.0.0.1/x", InvalidInput, "postgresql:// URL"),
             ("postgresql://127.0.0.1:1/nothing-listens-here", StoreCorrupt, "cannot be opened"),
             ("postgresql://u:secret@127.0.0.1:1/x", StoreCorrupt, "u:***@")]
    for url, error, said in cases:
        with pytest.raises(error, match=said.replace("*", r"\*")):
            CoordinatorStore(tmp_path, database=url)
        assert main(["--storage", str(tmp_path), "--port", "0", "--database", url]) == error.exit_code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {error.code}:"), err
        assert "secret" not in err[0] and "Traceback" not in err[0]


def test_sqlite_only_sql_is_refused_and_the_schema_translates() -> None:
    for sql in ("INSERT OR IGNORE INTO votes VALUES (?)", "INSERT OR REPLACE INTO t VALUES (1)",
                "REPLACE INTO t VALUES (1)", "SELECT rowid FROM t"):
        with pytest.raises(InvalidInput, match="not portable"):
            pg_sql(sql)
    assert pg_sql("SELECT a FROM t WHERE b = ? AND c LIKE 'x%?'") == "SELECT a FROM t WHERE b = %s AND c LIKE 'x%%?'"
    ddl = pg_ddl("CREATE TABLE IF NOT EXISTS j (id INTEGER PRIMARY KEY AUTOINCREMENT, x REAL, b BLOB, "
                 "t TEXT -- a comment\n);\nCREATE TRIGGER IF NOT EXISTS j_no_update BEFORE UPDATE ON j\n"
                 "BEGIN SELECT RAISE(ABORT, 'append-only'); END;")
    assert "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" in ddl[0] and "DOUBLE PRECISION" in ddl[0]
    assert "BYTEA" in ddl[0] and 'TEXT COLLATE "C"' in ddl[0] and "comment" not in ddl[0]
    assert ddl[1].startswith("CREATE OR REPLACE TRIGGER j_no_update BEFORE UPDATE ON j FOR EACH ROW")


def test_member_keyed_transactions_run_side_by_side_but_never_beside_an_exclusive_one(
        tmp_path: Path, pg_server: Any) -> None:
    url = pg_server.database()
    holder, other = CoordinatorStore(tmp_path, database=url), CoordinatorStore(tmp_path, database=url)
    held, release = threading.Event(), threading.Event()

    def hold(key: str) -> None:
        with holder.transaction(key):
            held.set()
            release.wait(30)

    def timed(key: str) -> float:
        t = time.monotonic()
        with other.transaction(key):
            pass
        return time.monotonic() - t

    for key, blocked in (("member:a", {"member:b": False, "member:a": True, "": True}),
                         ("", {"member:b": True, "": True})):
        for probe, must_wait in blocked.items():
            held.clear()
            release.clear()
            t = threading.Thread(target=hold, args=(key,))
            t.start()
            assert held.wait(30)
            threading.Timer(1.0, release.set).start()
            waited = timed(probe)
            t.join()
            assert (waited >= 0.9) == must_wait, (key, probe, waited)
    holder.close()
    other.close()


def test_a_database_that_goes_away_mid_run_is_a_typed_503_and_loses_nothing(tmp_path: Path, pg_server: Any) -> None:
    """PostgreSQL refusing connections while the coordinator runs: every request is a JSON 503
    ``coordinator_unavailable`` (clients retry it, as for a coordinator that is down), never a bare 500;
    once the database is back the same coordinator answers again and what it held is intact."""
    from starlette.testclient import TestClient

    from continuum_mcp.crypto.identity import Identity
    from continuum_mcp.federation.coordinator import FederationCoordinator
    from continuum_mcp.federation.protocol import ErrorBody, JoinRequest

    url = pg_server.database()
    dbname = url.rsplit("/", 1)[1].split("?")[0]
    coord = FederationCoordinator(storage_path=tmp_path / "coord", federation_id="fed-down", privacy_mode="open",
                                  slots=4, dim=8, database=url)
    client = TestClient(coord.app)
    member = Identity.generate()
    body = JoinRequest(admission_token=coord.create_admission_tokens(1)[0], privacy_mode="open").model_dump_json().encode()
    headers = {**member.sign_request("POST", "/v1/join", body), "content-type": "application/json"}
    assert client.post("/v1/join", content=body, headers=headers).status_code == 200

    def status() -> Any:
        return client.get("/v1/status", headers=member.sign_request("GET", "/v1/status"))

    admin = psycopg.connect(pg_server.url(), autocommit=True)
    try:
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
        r = status()
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/json")
        err = ErrorBody.model_validate(r.json())
        assert err.code == "coordinator_unavailable" and "nothing was changed" in err.message
        assert "password" not in err.message
    finally:
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        admin.close()
    for _ in range(20):  # the pool replaces the connections it found broken
        r = status()
        if r.status_code == 200:
            break
        time.sleep(0.25)
    assert r.status_code == 200, r.text
    coord.stop()
