"""Recall's pure parts: the FTS5 query, SQL filters, fusion of the two rankings, version order.

Fusion is semantic-led and score-aware: ``SEMANTIC_WEIGHT * cosine + (1 - SEMANTIC_WEIGHT) *
bm25 / best_bm25``. The cosine is used as it is, not rescaled over the candidate pool: it is
already on a fixed scale (the relevance floor and ``min_score`` read it the same way), and
min-max rescaling stretched a pool whose cosines all lie within 0.1 of each other to 0..1, so the
semantic side swamped real keyword evidence. BM25 has no fixed scale, so it is divided by the
query's best BM25: the best keyword match adds ``1 - SEMANTIC_WEIGHT``, weaker ones in proportion.
The weight, 0.75, is the documented default of relative-score hybrid fusion in common vector
databases, kept from the previous release; a 2-fold cross-validation over LoCoMo conversations
picks 0.6 and 0.7, and Recall@10 stays within 0.011 of its best from 0.6 to 0.8 on each half
(``docs/memory.md``); assistant-style data prefers the higher weight. A keyword match only adds
to a memory that has some semantic support (cosine at or above the relevance floor), so a memory
that merely shares a word with the query cannot push out a semantically good one, while a rare
exact term (a ticket id, a name) still lifts a memory the model half-recognises.

The keyword query leaves out stop words and question words ("what", "when", "how"): a question
asks with them, a memory rarely states them, so they only match memories that are questions too.
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
#: Words that make a sentence a question; left out of recall's keyword query with the stop words.
QUESTION_WORDS = frozenset("what whats when where who whom whose which why how".split())
QUERY_STOP_WORDS = STOP_WORDS | QUESTION_WORDS
_WORD_RE = re.compile(r"\w+", re.UNICODE)

Ranked = list[tuple[int, float]]


def fts_query(text: str, *, max_terms: int = 64, drop_stop_words: bool = False) -> str | None:
    """Free text as a safe FTS5 query: every word quoted, OR-ed (BM25 ranks by matches).

    ``drop_stop_words`` (recall, both keyword and hybrid) leaves out :data:`QUERY_STOP_WORDS`:
    stop words match nearly every memory, each costing a posting-list scan as long as the store in
    ``bm25()`` (keyword mode took 111 ms at 100k with them) for next to no ranking signal (IDF
    about 0); question words match only other questions. A query of such words only keeps them."""
    words = list(dict.fromkeys(w.lower() for w in _WORD_RE.findall(text)))
    if drop_stop_words:
        words = [w for w in words if w not in QUERY_STOP_WORDS] or words
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


def fuse(semantic: Ranked, keyword: Ranked, cos: dict[int, float], floor: float,
         semantic_weight: float = SEMANTIC_WEIGHT) -> Ranked:
    """Semantic-led score fusion (see the module docstring): ``w * cosine + (1 - w) * bm25 / best``.

    ``cos`` covers every candidate (one without a cosine is dropped); ties go to the higher cosine."""
    best = max((s for _, s in keyword), default=0.0)
    boost = {mid: s / best for mid, s in keyword if best > 0 and cos.get(mid, -1.0) >= floor}
    candidates = dict.fromkeys([mid for mid, _ in semantic] + [mid for mid, _ in keyword])
    fused = {mid: semantic_weight * cos[mid] + (1 - semantic_weight) * boost.get(mid, 0.0)
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


__all__ = ["MAX_QUERY_TERMS", "QUERY_STOP_WORDS", "QUESTION_WORDS", "SEMANTIC_WEIGHT", "cosines", "current_first",
           "embeddings", "filter_sql", "fts_query", "fuse", "keyword_hits", "keyword_search"]
