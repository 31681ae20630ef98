"""Recall's pure parts: the FTS5 query, SQL filters, fusion of the two rankings, version order.

Fusion is semantic-led. Each candidate (from either list) gets its exact cosine; cosine and BM25
are min-max normalised over the candidate pool and combined convexly with weight
``SEMANTIC_WEIGHT`` on the semantic side (0.75: the documented default of relative-score hybrid
fusion in common vector databases, chosen before measuring and not tuned to any data set). A
keyword match only adds to a memory that has some semantic support (cosine at or above the
relevance floor), so a memory that merely shares a common word with the query cannot push out a
semantically good one, while a rare exact term (a ticket id, a name) still lifts a memory the
model half-recognises.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np

from continuum_mcp.memory._validate import ts
from continuum_mcp.memory.facts import STOP_WORDS
from continuum_mcp.memory.models import Filters

SEMANTIC_WEIGHT = 0.75
MAX_QUERY_TERMS = 16
_WORD_RE = re.compile(r"\w+", re.UNICODE)

Ranked = list[tuple[int, float]]


def fts_query(text: str, *, max_terms: int = 64, drop_stop_words: bool = False) -> str | None:
    """Free text as a safe FTS5 query: every word quoted, OR-ed (BM25 ranks by matches).

    ``drop_stop_words`` (recall, both keyword and hybrid) leaves out words that match nearly every
    memory: each costs a posting-list scan as long as the store in ``bm25()`` (keyword mode took
    111 ms at 100k with them) and adds next to nothing to the ranking (its IDF is about 0). A
    query of stop words only keeps them."""
    words = list(dict.fromkeys(w.lower() for w in _WORD_RE.findall(text)))
    if drop_stop_words:
        words = [w for w in words if w not in STOP_WORDS] or words
    words = words[:max_terms]
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def filter_sql(f: Filters) -> tuple[str, list[Any]]:
    """A WHERE clause over ``memories`` for the filters ('1' when there are none)."""
    clauses: list[str] = []
    args: list[Any] = []
    if f.tags_any:
        clauses.append(f"id IN (SELECT memory_id FROM memory_tags WHERE tag IN ({','.join('?' * len(f.tags_any))}))")
        args += f.tags_any
    for tag in f.tags_all:
        clauses.append("id IN (SELECT memory_id FROM memory_tags WHERE tag = ?)")
        args.append(tag)
    if f.since:
        clauses.append("created_at >= ?")
        args.append(ts(f.since))
    if f.until:
        clauses.append("created_at <= ?")
        args.append(ts(f.until))
    return (" AND ".join(clauses) or "1"), args


def keyword_search(conn: sqlite3.Connection, match: str | None, limit: int, where: str,
                   args: Sequence[Any]) -> Ranked:
    if match is None:
        return []
    # ``rank`` is bm25() with default weights, computed once per row inside FTS5 (``ORDER BY
    # bm25(...)`` next to ``SELECT bm25(...)`` made SQLite evaluate it twice per matching row).
    sql = ("SELECT rowid, -rank FROM memories_fts WHERE memories_fts MATCH ? "
           + ("" if where == "1" else f"AND rowid IN (SELECT id FROM memories WHERE {where}) ")
           + "ORDER BY rank LIMIT ?")
    return [(int(r[0]), float(r[1])) for r in conn.execute(sql, (match, *args, limit))]


def embeddings(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, np.ndarray]:
    """The stored embedding of each of these memories (those that still exist)."""
    out: dict[int, np.ndarray] = {}
    for start in range(0, len(ids), 900):
        part = list(ids[start:start + 900])
        q = ",".join("?" * len(part))
        for mid, blob in conn.execute(f"SELECT id, embedding FROM memories WHERE id IN ({q})", part):
            out[mid] = np.frombuffer(blob, dtype=np.float32)
    return out


def cosines(conn: sqlite3.Connection, qvec: np.ndarray, ids: Sequence[int]) -> dict[int, float]:
    """Exact cosine of the query to each memory, from the embeddings in SQLite."""
    return {mid: float(vec @ qvec) for mid, vec in embeddings(conn, ids).items()}


def keyword_hits(conn: sqlite3.Connection, match: str | None, limit: int, where: str,
                 args: Sequence[Any]) -> tuple[Ranked, dict[int, np.ndarray]]:
    """The keyword ranking and its hits' embeddings: everything hybrid recall needs from SQLite
    before it has the query's vector, so that it can run while the query is being embedded."""
    ranked = keyword_search(conn, match, limit, where, args)
    return ranked, embeddings(conn, [mid for mid, _ in ranked])


def _normalise(values: dict[int, float]) -> dict[int, float]:
    if not values:
        return {}
    lo, hi = min(values.values()), max(values.values())
    span = hi - lo
    return {k: (v - lo) / span if span > 0 else 1.0 for k, v in values.items()}


def fuse(semantic: Ranked, keyword: Ranked, cos: dict[int, float], floor: float,
         semantic_weight: float = SEMANTIC_WEIGHT) -> Ranked:
    """Semantic-led relative-score fusion (see the module docstring). ``cos`` covers every candidate."""
    candidates = {mid for mid, _ in semantic} | {mid for mid, _ in keyword}
    sem = _normalise({mid: cos[mid] for mid in candidates if mid in cos})
    kw = _normalise({mid: s for mid, s in keyword if cos.get(mid, -1.0) >= floor})
    fused = {mid: semantic_weight * sem.get(mid, 0.0) + (1 - semantic_weight) * kw.get(mid, 0.0)
             for mid in candidates if mid in cos}
    return sorted(fused.items(), key=lambda kv: (-kv[1], -cos[kv[0]]))


def current_first(ranked: Ranked, newer: dict[int, int]) -> Ranked:
    """Put each memory's newer version just above it (pulled in if it was not ranked at all).

    ``newer`` maps an id to the id of the memory that supersedes it. The old version stays in
    the results, one place below the version that replaced it, so "what is Jo's number now?"
    sees the current number first and the history right after."""
    out: Ranked = []
    seen: set[int] = set()

    def emit(mid: int, score: float, depth: int = 0) -> None:
        succ = newer.get(mid)
        if succ is not None and succ not in seen and depth < 16:
            emit(succ, score, depth + 1)
        if mid not in seen:
            seen.add(mid)
            out.append((mid, score))

    for mid, score in ranked:
        emit(mid, score)
    return out


__all__ = ["MAX_QUERY_TERMS", "SEMANTIC_WEIGHT", "cosines", "current_first", "embeddings", "filter_sql", "fts_query",
           "fuse", "keyword_hits", "keyword_search"]
