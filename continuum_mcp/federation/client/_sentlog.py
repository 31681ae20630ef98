"""The local sent-log: what each contribution that reached the coordinator carried (``sent.db``, 0600).

Why: the outbox forgets a submission once its round is re-sent, released or the member leaves,
so nothing else could later answer "what exactly left this machine, and when?". Each accepted
contribution is recorded here as its preview shows it (``OutgoingPattern``): the plain text of
what was sent encrypted (phrases always, the statement only in a mode that sends statements),
slot and confidence, and which local memories it came from (ids only, never sent). Never a
memory's text or the embedding (which left only inside secure aggregation). Local only,
kept after leaving (like the privacy ledger: what was sent was sent).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from continuum_mcp._sqlite import Database
from continuum_mcp.federation.submission import OutgoingPattern, PlannedPattern, sends_statements, what_leaves

SENT_DB = "sent.db"
SENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (id INTEGER PRIMARY KEY AUTOINCREMENT, round_id INTEGER NOT NULL,
    sent_at REAL NOT NULL, federation_mode TEXT NOT NULL, patterns TEXT NOT NULL)
"""


class SentContribution(BaseModel):
    """One contribution the coordinator accepted."""

    id: int
    round_id: int
    sent_at: datetime
    federation_mode: str
    patterns: list[OutgoingPattern] = Field(description="What left, as the contribution preview shows it.")
    what_leaves: str = Field(description="The plain-language account of the wire content.")


class SentLog(Database):
    """sent.db: one row per accepted contribution, newest last."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, SENT_SCHEMA, private=True, what="federation sent-log")

    def record(self, round_id: int, patterns: Sequence[PlannedPattern], federation_mode: str) -> None:
        statements = sends_statements(federation_mode)
        rows = [OutgoingPattern(slot=p.slot, confidence=p.confidence, phrases=p.phrases, pattern_id=p.pattern_id,
                                statement=p.statement if statements else None,
                                source_memory_ids=p.source_memory_ids).model_dump() for p in patterns]
        with self.tx() as c:
            c.execute("INSERT INTO sent (round_id, sent_at, federation_mode, patterns) VALUES (?, ?, ?, ?)",
                      (int(round_id), time.time(), federation_mode, json.dumps(rows)))

    def entries(self, *, offset: int = 0, limit: int = 50) -> list[SentContribution]:
        """Newest first."""
        rows = self.read("SELECT id, round_id, sent_at, federation_mode, patterns FROM sent ORDER BY id DESC "
                         "LIMIT ? OFFSET ?", (int(limit), int(offset)))
        return [SentContribution(id=r[0], round_id=r[1], sent_at=datetime.fromtimestamp(r[2], tz=timezone.utc),
                                 federation_mode=r[3], what_leaves=what_leaves(r[3]),
                                 patterns=[OutgoingPattern.model_validate(d) for d in json.loads(r[4])]) for r in rows]

    def count(self) -> int:
        return int(self.read("SELECT COUNT(*) FROM sent")[0][0])


def record_sent(federation_dir: Path, round_id: int, patterns: Sequence[PlannedPattern], federation_mode: str) -> None:
    """The hook the outbox calls once the coordinator accepted a contribution (opens, writes, closes)."""
    log = SentLog(Path(federation_dir) / SENT_DB)
    try:
        log.record(round_id, patterns, federation_mode)
    finally:
        log.close()


__all__ = ["SENT_DB", "SentContribution", "SentLog", "record_sent"]
