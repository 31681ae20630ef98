"""Recall: run the searches a mode needs, fuse them, put current versions first, flag no match."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from continuum_mcp.errors import InvalidInput
from continuum_mcp.memory import search
from continuum_mcp.memory._validate import clean_filters, clean_text
from continuum_mcp.memory.models import MAX_K, Filters, RecallHit, RecallResult, SearchMode

if TYPE_CHECKING:
    from continuum_mcp.memory.store import MemoryStore



class _Job(threading.Thread):
    """``fn(*args)`` in a thread of its own; ``result()`` waits for it and re-raises its error."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        super().__init__(daemon=True)
        self._fn, self._args = fn, args
        self._value: Any = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._value = self._fn(*self._args)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def _newer(store: "MemoryStore", ids: list[int], where: str, args: list[object]) -> dict[int, int]:
    """old id -> newest id that supersedes it (within the filters), for these ids and their successors."""
    newer: dict[int, int] = {}
    frontier = ids
    for _ in range(16):
        if not frontier:
            break
        q = ",".join("?" * len(frontier))
        rows = store._conn.execute(f"SELECT supersedes, MAX(id) FROM memories WHERE supersedes IN ({q}) "
                                   f"AND {where} GROUP BY supersedes", (*frontier, *args)).fetchall()
        fresh = {int(a): int(b) for a, b in rows}
        newer.update(fresh)
        frontier = [b for b in fresh.values() if b not in newer]
    return newer


def recall(store: "MemoryStore", query: str, *, k: int = 5, mode: SearchMode = "hybrid",
           filters: Filters | None = None, min_score: float | None = None) -> RecallResult:
    """The memories most relevant to ``query``.

    ``min_score`` is a floor on cosine similarity in semantic and hybrid modes (so it means the
    same in both) and on the BM25 score in keyword mode. Keyword mode never embeds the query.
    """
    q = clean_text(query, store.settings, "query")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be an integer from 1 to {MAX_K}")
    if mode not in ("semantic", "keyword", "hybrid"):
        raise InvalidInput(f"mode must be 'semantic', 'keyword' or 'hybrid', not {mode!r}")
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))
                                  or not math.isfinite(min_score)):
        raise InvalidInput("min_score must be a finite number")
    f = clean_filters(filters, store.settings)
    floor = store.settings.relevance_floor
    with store._lock:
        conn = store._conn
        where, args = search.filter_sql(f)
        pool = k if mode == "semantic" else max(50, 4 * k)
        cos: dict[int, float] = {}
        semantic: search.Ranked = []
        keyword: search.Ranked = []
        vecs: dict[int, np.ndarray] = {}
        qvec = np.zeros(0, dtype=np.float32)
        match = search.fts_query(q, max_terms=search.MAX_QUERY_TERMS, drop_stop_words=True) \
            if mode != "semantic" else None
        if mode != "keyword":
            # Hybrid: SQLite releases the GIL, so the keyword search and its hits' embeddings are
            # read while the model embeds the query (the connection is ours: the lock is held,
            # and nothing else here touches it until the job is done).
            job = _Job(search.keyword_hits, conn, match, pool, where, args) if mode == "hybrid" else None
            try:
                qvec = store._embed([q])[0]
            finally:
                if job is not None:
                    keyword, vecs = job.result()
            index = store._vectors()
            allowed = None
            if where != "1":
                allowed = np.fromiter((r[0] for r in conn.execute(f"SELECT id FROM memories WHERE {where}", args)),
                                      dtype=np.int64)
            semantic = index.search(qvec, pool, allowed)
            cos = dict(semantic)
        if mode == "keyword":
            keyword = search.keyword_search(conn, match, pool, where, args)
        if mode == "hybrid":
            cos.update({mid: float(vecs[mid] @ qvec) for mid, _ in keyword if mid not in cos and mid in vecs})
            ranked = search.fuse(semantic, keyword, cos, floor)
        else:
            ranked = semantic if mode == "semantic" else keyword
        ranked = search.current_first(ranked, _newer(store, [mid for mid, _ in ranked], where, args))
        if mode != "keyword":
            cos.update(search.cosines(conn, qvec, [mid for mid, _ in ranked if mid not in cos]))
        chosen = [(mid, score, cos.get(mid) if mode != "keyword" else None) for mid, score in ranked]
        if min_score is not None:
            chosen = [(mid, score, sim) for mid, score, sim in chosen if (score if sim is None else sim) >= min_score]
        # Only the memories returned are read and built (the fused pool is up to 4k long); a hit
        # the index still holds but SQLite no longer does is skipped and the next one read.
        hits: list[RecallHit] = []
        start = 0
        while len(hits) < k and start < len(chosen):
            part = chosen[start:start + k - len(hits)]
            start += len(part)
            mems = store._fetch([mid for mid, _, _ in part])
            hits += [RecallHit(memory=mems[mid], score=round(score, 6), similarity=None if sim is None else round(sim, 6))
                     for mid, score, sim in part if mid in mems]
    if mode == "keyword":
        no_good = not hits
    else:
        no_good = not any(h.similarity is not None and h.similarity >= floor for h in hits)
    return RecallResult(query=q, mode=mode, hits=hits, no_good_match=no_good)
