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

import re
from collections.abc import Iterable
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


#: ``<label>/r<round>/a<attempt>``: a release round's session id (label = the federation id,
#: ``participant.round_params``) or a learning session round's (label = ``<federation>/<proposal>``)
_SESSION_ID = re.compile(r"^(?P<label>.+)/r(?P<round>[0-9]+)/a(?P<attempt>[0-9]+)$")


def ended_sessions(logged: Iterable[str], federation_id: str, running: set[str]) -> list[str]:
    """The session ids among ``logged`` whose attempt is over, i.e. whose log :func:`prune` would
    have deleted had it existed when the attempt ended (a store written before it still has them).

    Kept: every ``running`` attempt (the one restart recovery replays, of the release round and
    of each session), and a learning session's attempt that a later attempt of the same round
    follows (logged or running): the session code keeps a retried attempt's log, keys only, as the
    record of the retry. Over: every other release attempt (its round released or aborted, or the
    attempt superseded after a restart), the last attempt of a session round that is no longer
    running, and a session id of no known form (nothing replays it)."""
    parsed: dict[str, tuple[str, int, int]] = {}
    for sid in set(logged) | running:
        m = _SESSION_ID.match(sid)
        if m is not None:
            parsed[sid] = (m["label"], int(m["round"]), int(m["attempt"]))
    last: dict[tuple[str, int], int] = {}
    for label, r, a in parsed.values():
        last[(label, r)] = max(a, last.get((label, r), -1))

    def kept(sid: str) -> bool:
        if sid in running:
            return True
        if sid not in parsed or parsed[sid][0] == federation_id:
            return False
        label, r, a = parsed[sid]
        return a < last[(label, r)]

    return sorted(s for s in set(logged) if not kept(s))


__all__ = ["ATTEMPT_SCHEMA", "LogRecord", "append", "ended_sessions", "prune", "records_after", "senders"]
