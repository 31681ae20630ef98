"""The local cache of released patterns, decrypted, with local embeddings (``cache.db``, 0600).

Why local: queries are ranked, verifications checked and ``search_cache`` answered on this
machine without credits or network; a slot the coordinator no longer releases is dropped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from continuum_mcp._sqlite import Database
from continuum_mcp.errors import NotFound

CACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS patterns (pattern_id TEXT PRIMARY KEY, slot INTEGER NOT NULL, summary TEXT NOT NULL,
    phrases TEXT NOT NULL, statements TEXT NOT NULL, contributors REAL NOT NULL, verifications INTEGER NOT NULL,
    votes_up INTEGER NOT NULL, votes_down INTEGER NOT NULL, released_at_round INTEGER NOT NULL,
    embedding BLOB NOT NULL, fetched_at REAL NOT NULL)
"""
_COLUMNS = ("pattern_id, slot, summary, phrases, statements, contributors, verifications, votes_up, votes_down, "
            "released_at_round, embedding")


@dataclass
class CachedPattern:
    """A released pattern as this machine knows it: decrypted text and a local embedding."""

    pattern_id: str
    slot: int
    summary: str
    phrases: list[str]
    statements: list[str]
    contributors: float
    verifications: int
    votes_up: int
    votes_down: int
    released_at_round: int
    embedding: np.ndarray


class PatternCache(Database):
    """cache.db: released patterns as this machine decrypted and embedded them."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, CACHE_SCHEMA, private=True, what="federation cache")

    def size(self) -> int:
        return int(self.read("SELECT COUNT(*) FROM patterns")[0][0])

    def rows(self) -> list[CachedPattern]:
        return [CachedPattern(pattern_id=r[0], slot=int(r[1]), summary=r[2], phrases=json.loads(r[3]),
                              statements=json.loads(r[4]), contributors=float(r[5]), verifications=int(r[6]),
                              votes_up=int(r[7]), votes_down=int(r[8]), released_at_round=int(r[9]),
                              embedding=np.frombuffer(r[10], dtype="<f4").astype(np.float32))
                for r in self.read(f"SELECT {_COLUMNS} FROM patterns")]

    def get(self, pattern_id: str) -> CachedPattern:
        for r in self.rows():
            if r.pattern_id == pattern_id:
                return r
        raise NotFound(f"pattern {pattern_id!r} is not in the local cache; query or download it first")

    def slots(self) -> set[int]:
        return {int(r[0]) for r in self.read("SELECT slot FROM patterns")}

    def put(self, patterns: Sequence[CachedPattern]) -> None:
        now = time.time()
        with self.tx() as c:
            c.executemany(
                "INSERT OR REPLACE INTO patterns VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(p.pattern_id, p.slot, p.summary, json.dumps(p.phrases), json.dumps(p.statements), p.contributors,
                  p.verifications, p.votes_up, p.votes_down, p.released_at_round,
                  np.asarray(p.embedding, dtype="<f4").tobytes(), now) for p in patterns])

    def drop_slots(self, slots: Iterable[int]) -> None:
        with self.tx() as c:
            c.executemany("DELETE FROM patterns WHERE slot = ?", [(int(s),) for s in slots])

    def clear(self) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM patterns")
