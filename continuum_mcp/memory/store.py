"""The memory store: the write path and lifecycle of a user's long-term memory.

SQLite (WAL, synchronous=FULL) is the source of truth: a memory is acknowledged only once its
transaction has committed, so a crash loses nothing that was acknowledged. FAISS is a derived
index (:mod:`.vector_index`), FTS5 gives keyword search, :mod:`.search` fuses the two.

Nothing the user said is lost: a new memory folds into an existing one only when it is the same
text, or restates it with the same facts (:mod:`.facts`). A new memory close to an existing one
but with other facts is stored as an update of it (``supersedes``); the old version stays and
ranks just below the new one.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from continuum_mcp import _sqlite as durable
from continuum_mcp.config import Settings
from continuum_mcp.errors import InvalidInput, ModelMismatch, NotFound, StoreReadOnly
from continuum_mcp.memory._schema import SCHEMA_VERSION, open_database, storage_error
from continuum_mcp.memory._validate import (
    check_id, clean_filters, clean_input, clean_metadata, clean_tags, clean_text, content_hash, dt, make_input,
    normalize_text, now,
)
from continuum_mcp.memory.models import (
    Filters, ForgetResult, ImportResult, Memory, MemoryInput, MemoryPage, OnDuplicate, Progress, RecallHit,
    RecallResult, RememberResult, SearchMode, StoreStats,
)
if TYPE_CHECKING:  # numpy and FAISS load on the first write or search, not when a server starts
    import numpy as np

    from embeddings import Embedder

    from continuum_mcp.memory.vector_index import VectorIndex

log = logging.getLogger(__name__)

DB_FILE = "memory.db"
WAL_CHECKPOINT_PAGES = 4_000  # 16 MB of 4 KB pages

_COLS = ("m.id, m.text, m.tags, m.metadata, m.source, m.created_at, m.updated_at, m.content_hash, m.supersedes, "
         "(SELECT MAX(s.id) FROM memories s WHERE s.supersedes = m.id)")


def _row(r: Sequence[Any]) -> Memory:
    return Memory(id=r[0], text=r[1], tags=json.loads(r[2]), metadata=json.loads(r[3]), source=r[4],
                  created_at=dt(r[5]), updated_at=dt(r[6]), content_hash=r[7], supersedes=r[8], superseded_by=r[9])


def _inserted(rows: Sequence[Sequence[Any]], clean: Sequence[dict[str, Any]], positions: Sequence[int]
              ) -> dict[int, Memory]:
    """The memories a batch has just inserted, built from the columns it wrote (already validated,
    so neither read back nor decoded again); a row updated by a later row of the same batch names it."""
    newer = {r[10]: r[0] for r in rows if r[10] is not None}
    return {r[0]: Memory(
        id=r[0], text=r[1], tags=list(clean[i]["tags"]), metadata={} if r[3] == "{}" else json.loads(r[3]),
        source=r[4], created_at=dt(r[5]), updated_at=dt(r[6]), content_hash=r[7], supersedes=r[10],
        superseded_by=newer.get(r[0])) for r, i in zip(rows, positions)}


class MemoryStore:
    """A user's long-term memory in one data directory. Thread-safe; safe across processes."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self.settings = settings
        self.embedder = embedder
        self.data_dir = settings.data_dir
        self.read_only = settings.read_only
        self._path = self.data_dir / DB_FILE
        self._lock = threading.RLock()
        self._index: VectorIndex | None = None
        self._closed = True
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InvalidInput(f"cannot create data directory {self.data_dir}: {exc}") from exc
        self._conn, lock, self.read_only = open_database(self._path, read_only=self.read_only)
        self._lock = lock or self._lock
        if not self.read_only:
            # Checkpoint the WAL every 16 MB, not SQLite's 4 MB: a 1,000-memory batch writes about
            # 3 MB, so the default copied (and fsynced) pages into the database after nearly every
            # batch, the hash index's pages again each time. Durability is the WAL's (synchronous=FULL)
            # either way. Measured on a 10k->100k fill: SQL and commit 90 -> 52 us per memory.
            self._conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        self._closed = False
        self.store_model_id, self.store_dim = self._init_meta()

    def _init_meta(self) -> tuple[str, int]:
        rows = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if "model_id" not in rows:
            rows = {"model_id": self.embedder.model_id, "dim": str(self.embedder.dim),
                    "schema_version": str(SCHEMA_VERSION)}
            with self._tx(check_model=False) as c:
                c.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", rows.items())
                rows = dict(c.execute("SELECT key, value FROM meta").fetchall())
        return rows["model_id"], int(rows["dim"])

    @contextmanager
    def _tx(self, *, check_model: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, refused for a read-only store or a store another process re-embedded."""
        if self.read_only:
            raise StoreReadOnly(f"{self._path} is open read-only; nothing was written.")
        try:
            with durable.immediate(self._conn, self._lock) as conn:
                if check_model:
                    current = conn.execute("SELECT value FROM meta WHERE key = 'model_id'").fetchone()
                    if current and current[0] != self.store_model_id:
                        raise ModelMismatch(
                            f"this memory store was re-embedded with '{current[0]}' by another process; this "
                            f"process still uses '{self.store_model_id}', so nothing was written. Restart it "
                            f"with that model, or re-embed again: `continuum-mcp reembed --data-dir {self.data_dir}`.")
                yield conn
        except sqlite3.OperationalError as exc:
            raise storage_error(exc, self._path) from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._index is not None and not self.read_only:
                try:
                    self._index.save()
                except OSError as exc:  # the index is a cache: losing it costs a rebuild
                    log.warning("could not save vector index: %s", exc)
            self._conn.close()
            self._closed = True

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- model checks and the index -------------------------------------------------------
    @property
    def model_mismatch(self) -> str | None:
        if self.store_model_id == self.embedder.model_id and self.store_dim == self.embedder.dim:
            return None
        return (f"this memory store was built with embedding model '{self.store_model_id}' "
                f"({self.store_dim}-d) but the configured model is '{self.embedder.model_id}' "
                f"({self.embedder.dim}-d). Either configure the original model again, or re-embed "
                f"the store with the new one: `continuum-mcp reembed --data-dir {self.data_dir}`.")

    def _vectors(self) -> VectorIndex:
        """The index, brought up to date with every committed change (from any process)."""
        problem = self.model_mismatch
        if problem:
            raise ModelMismatch(problem)
        if self._index is None:
            from continuum_mcp.memory.vector_index import VectorIndex

            self._index = VectorIndex(self.data_dir, self.store_model_id, self.store_dim,
                                      ivf_threshold=self.settings.ivf_threshold)
            log.debug("vector index %s", self._index.load_or_rebuild(self._conn))
        else:
            self._index.sync(self._conn)
        return self._index

    def _maybe_save_index(self) -> None:
        idx = self._index
        # Saving writes the whole index, so a big one is saved less often (once it has doubled):
        # a fixed period made a fill quadratic. Unsaved changes are replayed from the log on open.
        every = max(self.settings.index_save_every, idx.count // 2) if idx is not None else 0
        if idx is not None and idx.seq - max(idx.saved_seq, 0) >= every:
            idx.save()
            # Other processes whose index is older than what the log keeps will rebuild.
            with self._tx(check_model=False) as c:
                c.execute("DELETE FROM changes WHERE seq <= ?", (idx.seq - 10 * self.settings.index_save_every,))

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        from continuum_mcp.memory.vector_index import single_threaded

        # One text (a query, a single remember) is too small for two threads to share: on a busy
        # machine their spin-waits made it 20x slower (see single_threaded). Batches keep them.
        with single_threaded() if len(texts) == 1 else nullcontext():
            vecs = self.embedder.encode(list(texts))
        if vecs.shape != (len(texts), self.store_dim):
            raise ModelMismatch(f"embedder returned shape {vecs.shape}, expected ({len(texts)}, {self.store_dim})")
        return vecs

    def _fetch(self, ids: Sequence[int]) -> dict[int, Memory]:
        out: dict[int, Memory] = {}
        for start in range(0, len(ids), 900):
            part = list(ids[start:start + 900])
            q = ",".join("?" * len(part))
            for r in self._conn.execute(f"SELECT {_COLS} FROM memories m WHERE m.id IN ({q})", part):
                out[r[0]] = _row(r)
        return out

    # ----- writing ------------------------------------------------------------------------------
    def remember(self, text: str, tags: Sequence[str] | None = None, metadata: dict[str, Any] | None = None,
                 source: str | None = None, *, at: datetime | None = None,
                 on_duplicate: OnDuplicate = "merge") -> RememberResult:
        """Store one memory. ``at``: when it happened (default now). ``on_duplicate="store"`` keeps even
        an exact repeat as its own memory."""
        if at is not None and not isinstance(at, datetime):
            raise InvalidInput("at must be a datetime")
        item = make_input(text=text, tags=tags, metadata=metadata, source=source, created_at=at)
        return self.remember_many([item], on_duplicate=on_duplicate)[0]

    def remember_many(self, items: Sequence[MemoryInput], *, vectors: np.ndarray | None = None,
                      on_duplicate: OnDuplicate = "merge", near: bool = True) -> list[RememberResult]:
        """Store a batch in one transaction: all acknowledged together once it commits.

        ``vectors`` may carry embeddings already made with this store's model (an import).
        ``near=False`` skips the near-duplicate search (only exact repeats fold, no update links).
        """
        if on_duplicate not in ("merge", "store"):
            raise InvalidInput(f"on_duplicate must be 'merge' or 'store', not {on_duplicate!r}")
        clean = [clean_input(i, self.settings) for i in items]
        if not clean:
            return []
        import numpy as np

        from continuum_mcp.memory._write import plan_batch
        from continuum_mcp.memory.vector_index import single_threaded

        with self._lock:
            # Embedding is the slow part: done before the write lock is taken.
            vecs = vectors if vectors is not None and vectors.shape == (len(clean), self.store_dim) \
                else self._embed([c["text"] for c in clean])
            vecs = np.ascontiguousarray(vecs, dtype=np.float32)
            index = self._vectors()
            with self._tx() as conn, single_threaded():
                index.sync(conn)  # see writes that committed while we were embedding
                threshold = self.settings.dedup_threshold if near else 1.0
                plan = plan_batch(conn, index, clean, vecs, threshold=threshold, on_duplicate=on_duplicate,
                                  model_id=self.store_model_id, when=now())
            # Committed: only now does the index learn of the batch (a rolled-back one never reaches it).
            with single_threaded():
                index.add_committed(np.fromiter((r[0] for r in plan.rows), dtype=np.int64, count=len(plan.rows)),
                                    vecs[plan.positions], plan.seq, plan.probe)
            self._maybe_save_index()
            mems = _inserted(plan.rows, clean, plan.positions)
            mems.update(self._fetch([p.memory_id for p in plan.results if p.memory_id not in mems]))
        return [RememberResult(status=p.status, memory=mems[p.memory_id], similarity=p.similarity,
                               duplicate_of=p.duplicate_of, updates=p.updates) for p in plan.results]

    def get(self, memory_id: int) -> Memory:
        mid = check_id(memory_id)
        with self._lock:
            found = self._fetch([mid])
        if mid not in found:
            raise NotFound(f"no memory with id {mid}")
        return found[mid]

    def update(self, memory_id: int, *, text: str | None = None, tags: Sequence[str] | None = None,
               metadata: dict[str, Any] | None = None) -> Memory:
        """Change a memory in place; a new text is re-embedded. Unset fields stay as they are."""
        mid = check_id(memory_id)
        if text is None and tags is None and metadata is None:
            raise InvalidInput("nothing to update: give a new text, tags or metadata")
        new_text = clean_text(text, self.settings) if text is not None else None
        new_tags = clean_tags(tags, self.settings) if tags is not None else None
        new_meta = clean_metadata(metadata, self.settings) if metadata is not None else None
        import numpy as np

        with self._lock:
            self.get(mid)
            vec = self._embed([new_text])[0] if new_text is not None else None
            with self._tx() as conn:
                if not conn.execute("SELECT 1 FROM memories WHERE id = ?", (mid,)).fetchone():
                    raise NotFound(f"no memory with id {mid}")  # deleted by another process meanwhile
                sets, args = ["updated_at = ?"], [now()]
                if new_text is not None and vec is not None:
                    sets += ["text = ?", "content_hash = ?", "embedding = ?", "model_id = ?"]
                    args += [new_text, content_hash(new_text), vec.astype(np.float32).tobytes(), self.store_model_id]
                if new_tags is not None:
                    sets.append("tags = ?")
                    args.append(json.dumps(new_tags, ensure_ascii=False))
                    conn.execute("DELETE FROM memory_tags WHERE memory_id = ?", (mid,))
                    conn.executemany("INSERT INTO memory_tags(memory_id, tag) VALUES (?, ?)", [(mid, t) for t in new_tags])
                if new_meta is not None:
                    sets.append("metadata = ?")
                    args.append(new_meta)
                conn.execute(f"UPDATE memories SET {', '.join(sets)} WHERE id = ?", (*args, mid))
                conn.execute("INSERT INTO changes(memory_id) VALUES (?)", (mid,))
            if self._index is not None:
                self._index.sync(self._conn)
            return self.get(mid)

    def forget(self, memory_ids: Sequence[int]) -> ForgetResult:
        """Delete memories for good (row, keyword entry and vector). All or nothing."""
        if isinstance(memory_ids, (str, bytes)) or not isinstance(memory_ids, Sequence):
            raise InvalidInput("memory ids must be a list of integers")
        ids = list(dict.fromkeys(check_id(i) for i in memory_ids))
        if not ids:
            raise InvalidInput("no memory ids given")
        with self._lock, self._tx(check_model=False) as conn:
            found = set(self._fetch(ids))
            missing = [i for i in ids if i not in found]
            if missing:
                raise NotFound(f"no memory with id {', '.join(map(str, missing))}; nothing was deleted")
            conn.execute(f"DELETE FROM memories WHERE id IN ({','.join('?' * len(ids))})", ids)
            conn.executemany("INSERT INTO changes(memory_id) VALUES (?)", [(i,) for i in ids])
        with self._lock:
            if self._index is not None:
                self._index.sync(self._conn)
        return ForgetResult(deleted=ids)

    # ----- reading ------------------------------------------------------------------------------
    def list(self, filters: Filters | None = None, *, offset: int = 0, limit: int = 20,
             newest_first: bool = True) -> MemoryPage:
        f = clean_filters(filters, self.settings)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInput("offset must be a non-negative integer")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInput("limit must be an integer from 1 to 1000")
        from continuum_mcp.memory.search import filter_sql

        where, args = filter_sql(f)
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            total = self._conn.execute(f"SELECT COUNT(*) FROM memories WHERE {where}", args).fetchone()[0]
            rows = self._conn.execute(
                f"SELECT {_COLS} FROM memories m WHERE {where} ORDER BY m.created_at {order}, m.id {order} "
                "LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
        return MemoryPage(memories=[_row(r) for r in rows], total=total, offset=offset, limit=limit)

    def recall(self, query: str, *, k: int = 5, mode: SearchMode = "hybrid", filters: Filters | None = None,
               min_score: float | None = None) -> RecallResult:
        """Find the memories most relevant to ``query``; see :func:`continuum_mcp.memory.recall.recall`."""
        from continuum_mcp.memory.recall import recall

        return recall(self, query, k=k, mode=mode, filters=filters, min_score=min_score)

    def stats(self) -> StoreStats:
        with self._lock:
            c = self._conn
            count, oldest, newest = c.execute("SELECT COUNT(*), MIN(created_at), MAX(created_at) FROM memories").fetchone()
            tags = dict(c.execute("SELECT tag, COUNT(*) n FROM memory_tags GROUP BY tag ORDER BY n DESC, tag LIMIT 20").fetchall())
            sources = dict(c.execute("SELECT COALESCE(source, ''), COUNT(*) n FROM memories GROUP BY 1 ORDER BY n DESC LIMIT 20").fetchall())
            page_count = c.execute("PRAGMA page_count").fetchone()[0]
            page_size = c.execute("PRAGMA page_size").fetchone()[0]
        from continuum_mcp.memory.vector_index import manifest_info

        manifest = manifest_info(self.data_dir)
        kind = self._index.kind if self._index is not None else str((manifest or {}).get("kind", "flat"))
        loaded = bool(getattr(self.embedder, "loaded", True))
        return StoreStats(count=count, data_dir=str(self.data_dir), model_id=self.store_model_id, dim=self.store_dim,
                          model_loaded=loaded, oldest=dt(oldest) if oldest else None,
                          newest=dt(newest) if newest else None, top_tags=tags, sources=sources,
                          index_kind=kind, db_bytes=page_count * page_size)

    def iter_with_embeddings(self) -> Iterator[tuple[Memory, bytes]]:
        """Every memory with its stored embedding, oldest id first, read in pages."""
        last = 0
        while True:
            with self._lock:
                rows = self._conn.execute(f"SELECT {_COLS}, m.embedding FROM memories m WHERE m.id > ? "
                                          "ORDER BY m.id LIMIT 500", (last,)).fetchall()
            if not rows:
                return
            for r in rows:
                yield _row(r), r[10]
            last = rows[-1][0]

    def all_memories(self) -> Iterator[Memory]:
        """Every memory, oldest first (for export and the pattern pipeline)."""
        return (m for m, _ in self.iter_with_embeddings())

    # ----- export / import / re-embed -------------------------------------------------------
    def export_jsonl(self, out: IO[str]) -> int:
        from continuum_mcp.memory import io as jsonl

        return jsonl.export_jsonl(self, out)

    def import_jsonl(self, lines: Iterable[str], *, progress: Progress | None = None,
                     batch_size: int = 256) -> ImportResult:
        """Import an export. The whole file is validated before anything is written."""
        from continuum_mcp.memory import io as jsonl

        return jsonl.import_jsonl(self, lines, progress=progress, batch_size=batch_size)

    def reembed(self, *, progress: Progress | None = None, batch_size: int = 128) -> int:
        """Re-embed every memory with the configured model and adopt it as the store's model."""
        with self._lock:
            from continuum_mcp.memory._write import reembed_all

            done = reembed_all(self, progress=progress, batch_size=batch_size)
            self.store_model_id, self.store_dim = self.embedder.model_id, self.embedder.dim
            self._index = None
            self._vectors().save()
        return done


def open_store(settings: Settings, embedder: Embedder | None = None, *, load_delay: float | None = 0.0) -> MemoryStore:
    """Open the store with the configured (or given) embedder; the model loads in the background.

    ``load_delay`` postpones the background load a little, so that a server answers its
    handshake before the model import competes with it for the interpreter; ``None`` loads the
    model only when something first needs it (a CLI listing never does).
    """
    from embeddings import SentenceTransformerEmbedder

    if embedder is None:
        st = SentenceTransformerEmbedder(settings.model_path)
        if load_delay is not None and load_delay > 0:
            timer = threading.Timer(load_delay, st.start)
            timer.daemon = True
            timer.start()
        elif load_delay is not None:
            st.start()
        embedder = st
    return MemoryStore(settings, embedder)


__all__ = ["DB_FILE", "Filters", "ForgetResult", "ImportResult", "MemoryInput", "MemoryPage", "MemoryStore",
           "Progress", "RecallHit", "RecallResult", "RememberResult", "StoreStats", "content_hash", "make_input",
           "normalize_text", "open_store"]
