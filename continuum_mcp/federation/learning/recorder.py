"""The local usage record: privacy-safe usage signals, kept ONLY while the user takes part in a
session that asks for them (DESIGN.md section 4, "Usage statistics").

Why it is gated by its caller's opt-in state: nothing may be recorded for a member who did not
opt in, so :meth:`UsageRecorder.record` asks ``opted_in()`` (governance's answer: is this member
opted in to a running session of kind ``usage_statistics``?) on every event, and the file
``usage.db`` (0600, in the data directory) is not even created until the first recorded event.
The record is the user's: :meth:`view` shows every event and the counts a session would derive,
:meth:`delete` removes the file. Events older than ``retention`` are dropped as new ones arrive.
What is kept per event: its time (the instance's local clock), its kind, the tool name, a
recall's result count and the memory ids involved (local only, for "was a recalled memory later
updated or forgotten"); never a text or a query.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field

from continuum_mcp._sqlite import Database
from continuum_mcp.errors import ContinuumError, InvalidInput
from continuum_mcp.federation.learning.usage_statistics import SIGNALS, EventKind, UsageEvent, usage_counts

logger = logging.getLogger(__name__)

USAGE_DB = "usage.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    tool TEXT,
    result_count INTEGER,
    memory_ids TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS usage_events_at ON usage_events (at);
"""
_MAX_IDS = 100  # a recall returns at most this many; more ids are never needed


def _local_now() -> datetime:
    return datetime.now().astimezone()


class UsageRecord(BaseModel):
    """What is recorded, for the user to read (``usage_record``)."""

    recording: bool = Field(description="Whether events are being recorded now (opted in to a usage session).")
    path: str
    events: list[UsageEvent]
    counts: dict[str, dict[str, int]] = Field(description="Per signal and bin, the counts a session derives.")
    message: str


class UsageDeletion(BaseModel):
    deleted: int = Field(description="Events removed (the record file is deleted too).")


class UsageRecorder:
    """``usage.db`` under ``data_dir``; records only while ``opted_in()`` is true."""

    def __init__(self, data_dir: Path, *, opted_in: Callable[[], bool],
                 clock: Callable[[], datetime] = _local_now, retention: timedelta = timedelta(days=90)) -> None:
        self.path = Path(data_dir) / USAGE_DB
        self._opted_in, self._clock, self._retention = opted_in, clock, retention
        self._db: Database | None = None
        self._lock = threading.RLock()

    def _open(self, create: bool) -> Database | None:
        with self._lock:
            if self._db is None and (create or self.path.exists()):
                self._db = Database(self.path, _SCHEMA, private=True, what="usage record")
            return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def record(self, kind: EventKind, *, tool: str | None = None, result_count: int | None = None,
               memory_ids: Sequence[int] = ()) -> bool:
        """Record one event if the user is opted in; True if it was recorded. Never raises for a
        storage problem (the user's operation has already succeeded; it is logged instead)."""
        if not self._opted_in():
            return False
        now = self._clock()
        if now.tzinfo is None:
            raise InvalidInput("the usage recorder's clock must return timezone-aware datetimes")
        event = UsageEvent(at=now, kind=kind, tool=tool, result_count=result_count,
                           memory_ids=[int(i) for i in list(memory_ids)[:_MAX_IDS]])
        try:
            db = self._open(create=True)
            assert db is not None
            with db.tx() as c:
                c.execute("INSERT INTO usage_events (at, kind, tool, result_count, memory_ids) VALUES (?, ?, ?, ?, ?)",
                          (event.at.isoformat(), event.kind, event.tool, event.result_count,
                           json.dumps(event.memory_ids)))
                c.execute("DELETE FROM usage_events WHERE at < ?", ((now - self._retention).isoformat(),))
        except (ContinuumError, OSError) as exc:
            logger.warning("usage event not recorded: %s", exc)
            return False
        return True

    def events(self) -> list[UsageEvent]:
        """Every recorded event, oldest first (a session's local input: ``UsageInputs(events=...)``)."""
        db = self._open(create=False)
        if db is None:
            return []
        rows = db.read("SELECT at, kind, tool, result_count, memory_ids FROM usage_events ORDER BY at, id")
        return [UsageEvent(at=datetime.fromisoformat(r[0]), kind=r[1], tool=r[2], result_count=r[3],
                           memory_ids=json.loads(r[4])) for r in rows]

    def view(self) -> UsageRecord:
        events = self.events()
        counts = {name: dict(zip(bins, (int(x) for x in c)))
                  for (name, bins), c in zip(SIGNALS.items(), usage_counts(events).values())}
        recording = self._opted_in()
        message = (f"{len(events)} usage event(s) recorded on this machine only; "
                   + ("recording, because you opted in to a usage-statistics session" if recording
                      else "not recording (you are not opted in to a usage-statistics session)"))
        return UsageRecord(recording=recording, path=str(self.path), events=events, counts=counts, message=message)

    def delete(self) -> UsageDeletion:
        """Remove every recorded event and the record file itself."""
        with self._lock:
            n = len(self.events())
            self.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        return UsageDeletion(deleted=n)
