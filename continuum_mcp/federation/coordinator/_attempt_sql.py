"""SQL of the durable secure-aggregation attempt: its append-only log.

Why a log and nothing else: a ``SecAggServer`` is deterministic given the messages it accepted and
the points where each phase closed, so an attempt is fully described by the ordered list of its
accepted messages and phase closes. Every coordinator process appends to this log in the store
transaction that accepts a message or closes a phase, and any process rebuilds (or incrementally
catches up) its cached copy of the attempt by replaying the records after the last sequence number
it has seen. Nothing another process needs lives only in memory.

Keyed by the attempt's session id (``SecAggParams.session_id``, ``<federation>/r<round>/a<attempt>``
for a round, so unique per attempt and bound into every message it holds) and a sequence number:
another round purpose (a learning session) reuses the table with its own session ids. Portable SQL
(SQLite and PostgreSQL): plain INSERT, the primary key refuses a second writer of one sequence
number, the unique index one message per sender and phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ATTEMPT_SCHEMA = """
CREATE TABLE IF NOT EXISTS secagg_log (
    session_id TEXT NOT NULL,           -- SecAggParams.session_id: one secure-aggregation attempt
    seq INTEGER NOT NULL,               -- 0 = open, then messages and phase closes in acceptance order
    kind TEXT NOT NULL,                 -- open | advertise | share_keys | masked_input | unmask | close
    instance_id TEXT,                   -- the sender of a message (NULL for open and close)
    body TEXT NOT NULL,                 -- the signed message's JSON; open and close: their JSON record
    at REAL NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS secagg_log_sender ON secagg_log (session_id, kind, instance_id);
"""


@dataclass(frozen=True)
class LogRecord:
    """One entry of an attempt's log (what :class:`~._attempt.Attempt` emits and replays)."""

    seq: int
    kind: str
    instance_id: str | None
    body: str
    at: float


def append(conn: Any, session_id: str, record: LogRecord) -> None:
    """Write one record (in the transaction that accepted it)."""
    conn.execute("INSERT INTO secagg_log (session_id, seq, kind, instance_id, body, at) VALUES (?,?,?,?,?,?)",
                 (session_id, record.seq, record.kind, record.instance_id, record.body, record.at))


def records_after(conn: Any, session_id: str, seq: int) -> list[LogRecord]:
    """The attempt's records with a sequence number above ``seq``, in order (-1: all of them)."""
    rows = conn.execute("SELECT seq, kind, instance_id, body, at FROM secagg_log WHERE session_id=? AND seq>? "
                        "ORDER BY seq", (session_id, seq)).fetchall()
    return [LogRecord(int(r[0]), str(r[1]), None if r[2] is None else str(r[2]), str(r[3]), float(r[4]))
            for r in rows]


def senders(conn: Any, session_id: str, kind: str) -> set[str]:
    """Members whose ``kind`` message the attempt accepted (e.g. whose masked input)."""
    rows = conn.execute("SELECT instance_id FROM secagg_log WHERE session_id=? AND kind=?",
                        (session_id, kind)).fetchall()
    return {str(r[0]) for r in rows}


def prune(conn: Any, session_id: str) -> int:
    """Delete an attempt's log once the attempt is over (released, or aborted and superseded by
    the next round or attempt), in the transaction that ends it; returns the rows deleted.

    Why this is safe: only a running attempt is ever replayed (restart recovery and every
    process's cache catch up from the log of the attempt the round row names), and whatever an
    ended attempt decided (who is charged, what is released, what carries over) is written by
    that same transaction. Why it matters: the log holds every message of the round (key shares
    to every neighbour, masked vectors), most of a store's growth if kept."""
    return int(conn.execute("DELETE FROM secagg_log WHERE session_id=?", (session_id,)).rowcount)


__all__ = ["ATTEMPT_SCHEMA", "LogRecord", "append", "prune", "records_after", "senders"]
