"""SQL of the credit journal (append-only; the balance is its sum). Part of the coordinator store."""

from __future__ import annotations

from continuum_mcp._db import Connection


def journal(conn: Connection, instance_id: str, amount: float, kind: str, ref: str, now: float) -> bool:
    """Append a credit entry; False if (member, kind, ref) was already journalled (idempotent)."""
    cur = conn.execute(
        "INSERT INTO credit_journal (instance_id, amount, kind, ref, at) VALUES (?,?,?,?,?) "
        "ON CONFLICT (instance_id, kind, ref) DO NOTHING",
        (instance_id, amount, kind, ref, now))
    return cur.rowcount == 1


def balance(conn: Connection, instance_id: str) -> float:
    row = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM credit_journal WHERE instance_id=?",
                       (instance_id,)).fetchone()
    return float(row[0])


def sum_kind_since(conn: Connection, instance_id: str, kind: str, since: float) -> float:
    row = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM credit_journal WHERE instance_id=? AND kind=? "
                       "AND at >= ?", (instance_id, kind, since)).fetchone()
    return float(row[0])


def count_kind_since(conn: Connection, instance_id: str, kind: str, since: float) -> int:
    row = conn.execute("SELECT COUNT(*) FROM credit_journal WHERE instance_id=? AND kind=? AND at >= ?",
                       (instance_id, kind, since)).fetchone()
    return int(row[0])


def totals_since(conn: Connection, instance_id: str, since: float) -> tuple[float, float]:
    """(earned, spent) since ``since``."""
    row = conn.execute(
        "SELECT COALESCE(SUM(CASE WHEN amount > 0 THEN amount END), 0),"
        " COALESCE(-SUM(CASE WHEN amount < 0 THEN amount END), 0)"
        " FROM credit_journal WHERE instance_id=? AND at >= ?", (instance_id, since)).fetchone()
    return float(row[0]), float(row[1])


def pending_patterns(conn: Connection, instance_id: str) -> int:
    row = conn.execute("SELECT COUNT(*) FROM submissions WHERE instance_id=? AND status='pending'",
                       (instance_id,)).fetchone()
    return int(row[0])
