"""A store written before the log pruning drops its ended attempts' logs once, when the new code opens it.

The coordinator deletes a secure-aggregation attempt's log in the transaction that ends it; a
schema-2 store still holds every log of every attempt that ever ran. Here such a store is built as
the old code left it (a released round's log, a running round's log, learning-session logs and
pre-log ``secagg_messages`` rows written back with SQL, the version set back to 2), then reopened:
exactly the ended attempts' rows go, the running attempt's stay byte for byte, and the running
round completes after the restart. Both backends (SQLite files, PostgreSQL).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_durable_attempt import FED, engine, founded, inputs  # the restart-recovery helpers (same folder)

from continuum_mcp._postgres import VERSIONS_TABLE
from continuum_mcp._sqlite import split_sql
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.federation.coordinator import _governance_sql as gsql
from continuum_mcp.federation.coordinator._schema import SCHEMA, SCHEMA_VERSION, drop_ended_logs
from continuum_mcp.federation.coordinator.store import DB_NAME, CoordinatorStore
from continuum_mcp.federation.governance.guarantee import session_label
from continuum_mcp.federation.protocol import ContributionRequest, PatternSubmission, PhraseSubmission
from continuum_mcp.secagg import SecAggClient

pytestmark = pytest.mark.usefixtures("backend")

_ROWS = "SELECT session_id, seq, kind, instance_id, body, at FROM secagg_log"


def _rows(store: CoordinatorStore, sql: str) -> list[tuple[Any, ...]]:
    with store.reading() as conn:
        return sorted(tuple(r) for r in conn.execute(sql).fetchall())


def _set_version(storage: Path, database: str | None, version: int) -> None:
    """What the store's version record says (``PRAGMA user_version`` / the PostgreSQL versions table)."""
    if database is None:
        with sqlite3.connect(storage / DB_NAME) as conn:
            conn.execute(f"PRAGMA user_version = {version}")
        return
    with psycopg.connect(database, autocommit=True) as pg:
        pg.execute(f"UPDATE {VERSIONS_TABLE} SET version = %s WHERE component = 'coordinator'", (version,))


def _version(store: CoordinatorStore) -> int:
    sql = ("PRAGMA user_version" if store.dialect == "sqlite" else
           f"SELECT version FROM {VERSIONS_TABLE} WHERE component = 'coordinator'")
    return int(store.db.read_one(sql)[0])  # type: ignore[index]


def _submit_all(e: Any, who: list[Identity], round_id: int) -> None:
    for m in who:
        e.submit(m.instance_id, ContributionRequest(round_id=round_id, patterns=[PatternSubmission(
            slot=2, confidence=0.9, phrases=[PhraseSubmission(token="ab" * 32, ciphertext="Y3Q=")])]))


def _post(e: Any, round_id: int, kind: str, clients: dict[str, SecAggClient], members: list[str],
          xs: dict[str, Any] | None = None) -> None:
    """``members`` post their ``kind`` message of ``round_id`` to engine ``e`` (inputs ``xs``)."""
    for m in members:
        c = clients[m]
        if kind == "advertise":
            msg = c.advertise_keys()
        elif kind == "share_keys":
            msg = c.share_keys(e.key_roster(round_id, m))
        elif kind == "masked_input":
            msg = c.masked_input(e.inbox(round_id, m), xs[m])  # type: ignore[index]
        else:
            msg = c.unmask(e.survivors(round_id, m))
        e.receive(round_id, kind, m, msg)


def test_an_old_store_drops_ended_attempts_logs_keeps_the_running_one_and_the_round_completes(
        tmp_path: Path, backend: str | None) -> None:
    who = [Identity.generate() for _ in range(4)]
    e = founded(tmp_path, who)
    # round 0 runs to its last message; its log as it stood then is what the old code kept for ever
    e.close_round()
    p0 = e.current_params()
    assert p0 is not None
    c0 = {m.instance_id: SecAggClient(m, p0) for m in who}
    x0 = dict(zip(sorted(c0), inputs(p0, 4), strict=True))
    *first, last = sorted(c0)
    for kind in ("advertise", "share_keys", "masked_input"):
        _post(e, 0, kind, c0, sorted(c0), x0)
    _post(e, 0, "unmask", c0, first)
    ended_log = _rows(e.store, _ROWS)
    _post(e, 0, "unmask", c0, [last])
    assert e.state(None, 0).phase == "released" and _rows(e.store, _ROWS) == []  # the new code pruned it

    # round 1 is running when the coordinator stops: keys advertised, two of four shares in (other
    # members: round 0 spent its members' window budget)
    who = [Identity.generate() for _ in range(4)]
    for m in who:
        e.store.admit(m.instance_id, m.public_key, "standard", "open", None, private=False, now=e.now())
    _submit_all(e, who, 1)
    e.close_round()
    p1 = e.current_params()
    assert p1 is not None and p1.session_id == f"{FED}/r1/a0"
    c1 = {m.instance_id: SecAggClient(m, p1) for m in who}
    x1 = dict(zip(sorted(c1), inputs(p1, 4), strict=True))
    _post(e, 1, "advertise", c1, sorted(c1))
    _post(e, 1, "share_keys", c1, sorted(c1)[:2])
    running_log = _rows(e.store, _ROWS)
    assert {r[0] for r in running_log} == {p1.session_id} and len(running_log) == 8

    # what else the old code left: session rounds' logs and pre-log messages
    sp, sq = session_label(FED, "P"), session_label(FED, "Q")
    kept_sessions = [f"{sp}/r2/a0", f"{sp}/r2/a1", f"{sq}/r1/a0"]  # P runs round 2 attempt 1 after a retry;
    ended_sessions = [f"{sp}/r1/a0", f"{sq}/r1/a1"]  # Q's round 1 was retried, and Q is between rounds
    with e.store.transaction() as conn:
        gsql.ensure_schema(conn)
        for pid, finished, in_round in (("P", 1, 2), ("Q", 1, 0)):
            conn.execute("INSERT INTO gov_proposals (proposal_id, kind, title, proposer, deadline, rounds, phase, "
                         "finished_rounds, in_round, signed_json, created_at) VALUES (?, 'usage-statistics', 't', "
                         "'x', 0, 3, 'running', ?, ?, '{}', 0)", (pid, finished, in_round))
        for sid in kept_sessions + ended_sessions:
            for seq, kind, who_ in ((0, "open", None), (1, "advertise", who[0].instance_id)):
                conn.execute("INSERT INTO secagg_log (session_id, seq, kind, instance_id, body, at) "
                             "VALUES (?, ?, ?, ?, '{}', 1)", (sid, seq, kind, who_))
        conn.executemany(f"INSERT INTO secagg_log (session_id, seq, kind, instance_id, body, at) VALUES "
                         f"({', '.join('?' * 6)})", ended_log)
        for r, a, m in ((0, 0, who[0]), (0, 0, who[1]), (1, 0, who[0])):
            conn.execute("INSERT INTO secagg_messages VALUES (?, ?, 'advertise', ?, '{}', 1)", (r, a, m.instance_id))
    e.store.close()  # the coordinator stops; the new release opens what the old one wrote
    _set_version(tmp_path, backend, 2)

    again = engine(tmp_path)
    assert _version(again.store) == SCHEMA_VERSION
    logs = _rows(again.store, _ROWS)
    assert {r[0] for r in logs} == {p1.session_id, *kept_sessions}
    assert [r for r in logs if r[0] == p1.session_id] == running_log  # the running attempt untouched
    assert _rows(again.store, "SELECT round_id, attempt FROM secagg_messages") == [(1, 0)]

    # restart recovery continues round 1 from its log, and it completes
    st = again.state(None)
    assert (st.round_id, st.phase, st.attempt) == (1, "share_keys", 0)
    _post(again, 1, "share_keys", c1, sorted(c1)[2:])
    for kind in ("masked_input", "unmask"):
        _post(again, 1, kind, c1, sorted(c1), x1)
    assert again.state(None, 1).phase == "released"
    assert {r[0] for r in _rows(again.store, _ROWS)} == set(kept_sessions)
    again.store.close()


def test_opening_a_store_at_the_current_version_deletes_nothing(tmp_path: Path, backend: str | None) -> None:
    """The migration runs once: a log row of no running attempt that a current store holds stays."""
    store = CoordinatorStore(tmp_path, database=backend)
    store.ensure_federation(FED)
    with store.transaction() as conn:
        conn.execute("INSERT INTO secagg_log VALUES (?, 0, 'open', NULL, '{}', 1)", (f"{FED}/r7/a0",))
    store.close()
    again = CoordinatorStore(tmp_path, database=backend)
    assert _rows(again, "SELECT session_id FROM secagg_log") == [(f"{FED}/r7/a0",)]
    again.close()


def _migrated_statements(path: Path, rows_per_attempt: int) -> list[str]:
    """The statements the migration runs on a schema-2 SQLite store of 2,000 released attempts."""
    conn = sqlite3.connect(path, isolation_level=None)
    for stmt in split_sql(SCHEMA):
        conn.execute(stmt)
    with conn:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO meta VALUES ('federation_id', ?)", (FED,))
        conn.executemany("INSERT INTO secagg_log VALUES (?, ?, 'advertise', ?, ?, 1)",
                         [(f"{FED}/r{r}/a0", s, f"m{s}", "x" * 200) for r in range(2000)
                          for s in range(rows_per_attempt)])
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    conn.execute("BEGIN IMMEDIATE")
    assert drop_ended_logs(conn) == 2000 * rows_per_attempt
    conn.execute("COMMIT")
    conn.set_trace_callback(None)
    assert conn.execute("SELECT COUNT(*) FROM secagg_log").fetchone()[0] == 0
    conn.close()
    return statements


@pytest.mark.sqlite_only
def test_a_big_log_goes_in_a_few_statements(tmp_path: Path) -> None:
    """Thousands of ended attempts: the migration's statements do not grow with the log's rows (one
    DELETE per 500 attempts), so it holds the database for a pass over the log, not a loop per row."""
    few, many = _migrated_statements(tmp_path / "few.db", 1), _migrated_statements(tmp_path / "many.db", 40)
    assert few == many and len(many) <= 12, many[:6]
