"""Replay guards: remember (instance id, nonce) pairs until the messages carrying them expire.

The durable guard is a file of the project's one SQLite helper (:class:`continuum_mcp._sqlite.Database`:
WAL, ``synchronous=FULL``, IMMEDIATE transactions, schema version), so a restart does not reopen the
replay window and a crash cannot lose a recorded nonce. The same guard runs on any database of the
interface (:class:`DatabaseReplayGuard`), e.g. the coordinator's PostgreSQL, where every coordinator
process shares one table: the primary key decides, so one nonce is accepted once across them all.
"""

from __future__ import annotations

import heapq
import os
import threading
from pathlib import Path
from typing import Protocol

from continuum_mcp._db import SqlDatabase

from continuum_mcp._sqlite import Database
from continuum_mcp.errors import ReplayError

_REPLAYED = "this message was already received (replayed nonce)"

REPLAY_SCHEMA_VERSION = 1
REPLAY_SCHEMA = _SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_nonces (
    instance_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (instance_id, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_nonces_expiry ON seen_nonces(expires_at);
"""


class ReplayGuard(Protocol):
    """Remembers (instance_id, nonce) pairs until the messages that carried them expire."""

    def check_and_record(self, instance_id: str, nonce: str, expires_at: int, now: int) -> None:
        """Raise ``ReplayError`` if the pair was seen and has not expired; else remember it."""
        ...


class MemoryReplayGuard:
    """In-memory replay guard with bounded memory.

    An accepted message has ``|timestamp - now| <= window``, so its nonce only needs remembering
    until ``timestamp + window``; older entries are expired on every call. ``max_entries`` is a hard
    cap: when it is full of live nonces the guard refuses (fails closed) rather than forget.
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self._expiry: list[tuple[int, str, str]] = []
        self._max = max_entries
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: int) -> None:
        while self._expiry and self._expiry[0][0] < now:
            expires_at, instance_id, nonce = heapq.heappop(self._expiry)
            if self._seen.get((instance_id, nonce)) == expires_at:
                del self._seen[(instance_id, nonce)]

    def check_and_record(self, instance_id: str, nonce: str, expires_at: int, now: int) -> None:
        with self._lock:
            self._expire(now)
            key = (instance_id, nonce)
            if key in self._seen:
                raise ReplayError(_REPLAYED)
            if len(self._seen) >= self._max:
                raise ReplayError("too many messages in the replay window; try again later")
            self._seen[key] = expires_at
            heapq.heappush(self._expiry, (expires_at, instance_id, nonce))


class DatabaseReplayGuard:
    """Replay guard persisted in a database (schema :data:`REPLAY_SCHEMA`), so that a restart does not
    reopen the replay window and several processes on one database share it.

    Uniqueness is the database's: one statement inserts the pair, or takes over an expired row of
    it, and a row count of 0 means a live row exists (a replay). No read-then-write, no lock."""

    def __init__(self, db: SqlDatabase, purge_every: int = 256, *, owned: bool = False) -> None:
        self._db = db
        self._owned = owned
        self._purge_every = purge_every
        self._calls = 0

    def close(self) -> None:
        if self._owned:
            self._db.close()

    def __len__(self) -> int:
        row = self._db.read_one("SELECT COUNT(*) FROM seen_nonces")
        return int(row[0]) if row else 0

    def purge(self, now: int) -> None:
        """Drop nonces whose messages can no longer be accepted (bounds the table's size)."""
        self._db.execute("DELETE FROM seen_nonces WHERE expires_at < ?", (now,))

    def check_and_record(self, instance_id: str, nonce: str, expires_at: int, now: int) -> None:
        self._calls += 1
        if self._calls % self._purge_every == 0:
            self.purge(now)
        taken = self._db.execute(
            "INSERT INTO seen_nonces (instance_id, nonce, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (instance_id, nonce) DO UPDATE SET expires_at = excluded.expires_at "
            "WHERE seen_nonces.expires_at < ?",
            (instance_id, nonce, expires_at, now),
        ).rowcount
        if taken != 1:
            raise ReplayError(_REPLAYED)


class SQLiteReplayGuard(DatabaseReplayGuard):
    """The replay guard on its own SQLite file (``path``)."""

    def __init__(self, path: str | os.PathLike[str], purge_every: int = 256) -> None:
        super().__init__(Database(Path(path), REPLAY_SCHEMA, version=REPLAY_SCHEMA_VERSION, what="replay guard"),
                         purge_every, owned=True)
