"""Replay guards: remember (instance id, nonce) pairs until the messages carrying them expire.

The durable guard is a file of the project's one SQLite helper (:class:`continuum_mcp._sqlite.Database`:
WAL, ``synchronous=FULL``, IMMEDIATE transactions, schema version), so a restart does not reopen the
replay window and a crash cannot lose a recorded nonce.
"""

from __future__ import annotations

import heapq
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from continuum_mcp._sqlite import Database
from continuum_mcp.errors import ReplayError

_REPLAYED = "this message was already received (replayed nonce)"

_SCHEMA = """
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


@dataclass
class _Pending:
    """One caller's nonce waiting for the group commit, and its outcome."""

    instance_id: str
    nonce: str
    expires_at: int
    now: int
    done: bool = False
    error: BaseException | None = None

    def result(self) -> None:
        if self.error is not None:
            raise self.error


class SQLiteReplayGuard:
    """Replay guard persisted in SQLite so that a restart does not reopen the replay window."""

    def __init__(self, path: str | os.PathLike[str], purge_every: int = 256) -> None:
        self._db = Database(Path(path), _SCHEMA, version=1, what="replay guard")
        self._purge_every = purge_every
        self._calls = 0
        self._cv = threading.Condition()
        self._pending: list[_Pending] = []
        self._committing = False

    def close(self) -> None:
        self._db.close()

    def __len__(self) -> int:
        row = self._db.read_one("SELECT COUNT(*) FROM seen_nonces")
        return int(row[0]) if row else 0

    def purge(self, now: int) -> None:
        """Drop nonces whose messages can no longer be accepted (bounds the table's size)."""
        with self._db.tx() as conn:
            conn.execute("DELETE FROM seen_nonces WHERE expires_at < ?", (now,))

    def check_and_record(self, instance_id: str, nonce: str, expires_at: int, now: int) -> None:
        """Group commit: concurrent callers share one durable transaction (one fsync) instead of
        queueing for one each. The first caller commits every nonce pending at that moment;
        callers that arrive meanwhile wait and the next one commits theirs. Each returns (or
        raises ``ReplayError``) only after its own nonce is on disk."""
        item = _Pending(instance_id, nonce, expires_at, now)
        with self._cv:
            self._pending.append(item)
            while not item.done and self._committing:
                self._cv.wait()
            if item.done:
                return item.result()
            self._committing = True
            batch, self._pending = self._pending, []
        try:
            self._commit(batch)
        finally:
            with self._cv:
                self._committing = False
                self._cv.notify_all()
        item.result()

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            self._calls += len(batch)
            if self._calls >= self._purge_every:
                self._calls = 0
                self.purge(max(p.now for p in batch))
            with self._db.tx() as conn:
                taken: set[tuple[str, str]] = set()
                for p in batch:
                    instance_id, nonce, expires_at, now = p.instance_id, p.nonce, p.expires_at, p.now
                    row = conn.execute(
                        "SELECT expires_at FROM seen_nonces WHERE instance_id = ? AND nonce = ?",
                        (instance_id, nonce),
                    ).fetchone()
                    if (row is not None and int(row[0]) >= now) or (instance_id, nonce) in taken:
                        p.error = ReplayError(_REPLAYED)
                        continue
                    taken.add((instance_id, nonce))
                    conn.execute(
                        "INSERT OR REPLACE INTO seen_nonces(instance_id, nonce, expires_at) VALUES (?, ?, ?)",
                        (instance_id, nonce, expires_at),
                    )
        except BaseException as exc:  # nothing of the batch was recorded: every caller fails
            for p in batch:
                p.error = exc if isinstance(exc, Exception) else RuntimeError("replay guard interrupted")
            raise
        finally:
            for p in batch:
                p.done = True
