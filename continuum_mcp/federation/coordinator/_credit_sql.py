"""SQL of the credit journal (append-only; the balance is its sum). Part of the coordinator store."""

from __future__ import annotations

from typing import NamedTuple

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


class Summary(NamedTuple):
    """What a member's balance shows, from one statement."""

    available: float
    earned_since: float
    spent_since: float
    pattern_earned_today: float
    free_queries_today: int
    pending_patterns: int


def summary(conn: Connection, instance_id: str, month: float, day: float) -> Summary:
    """Balance, (earned, spent) since ``month``, pattern credits and free queries since ``day``,
    and pending patterns: one statement (one round trip on PostgreSQL, where it was five)."""
    row = conn.execute(
        "SELECT COALESCE(SUM(amount), 0),"
        " COALESCE(SUM(CASE WHEN at >= ? AND amount > 0 THEN amount END), 0),"
        " COALESCE(-SUM(CASE WHEN at >= ? AND amount < 0 THEN amount END), 0),"
        " COALESCE(SUM(CASE WHEN kind = 'pattern' AND at >= ? THEN amount END), 0),"
        " COUNT(CASE WHEN kind = 'free_query' AND at >= ? THEN 1 END),"
        " (SELECT COUNT(*) FROM submissions WHERE instance_id=? AND status='pending')"
        " FROM credit_journal WHERE instance_id=?",
        (month, month, day, day, instance_id, instance_id)).fetchone()
    return Summary(float(row[0]), float(row[1]), float(row[2]), float(row[3]), int(row[4]), int(row[5]))
