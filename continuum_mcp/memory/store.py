"""The memory store: the core API that the MCP server and the CLI adapt.

SQLite (WAL, synchronous=FULL) is the source of truth: a memory is acknowledged only once its
transaction has committed, so a crash loses nothing that was acknowledged. FAISS is a derived
index (see :mod:`continuum_mcp.memory.vector_index`) and FTS5 gives keyword search; hybrid recall fuses
both rankings by reciprocal rank.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import sqlite3
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import IO, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from continuum_mcp import _sqlite as durable
from continuum_mcp.config import Settings
from continuum_mcp.errors import InvalidInput, ModelMismatch, NotFound, StoreCorrupt
from continuum_mcp.memory.models import Memory, SearchMode
from continuum_mcp.memory.vector_index import VectorIndex, manifest_info
from embeddings import Embedder

log = logging.getLogger(__name__)

DB_FILE = "memory.db"
FORMAT = "continuum-mcp.memories"
FORMAT_VERSION = 1
SCHEMA_VERSION = 1
RRF_K = 60
MAX_K = 100
MAX_TAG_CHARS = 64
_TAG_RE = re.compile(r"^[\w][\w\-:./+#]*$", re.UNICODE)
_WORD_RE = re.compile(r"\w+", re.UNICODE)

Progress = Callable[[int, int], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL,
    tags TEXT NOT NULL,
    metadata TEXT NOT NULL,
    source TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    content_hash TEXT NOT NULL,
    embedding BLOB NOT NULL,
    model_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_hash ON memories(content_hash);
CREATE INDEX IF NOT EXISTS memories_created ON memories(created_at);
CREATE TABLE IF NOT EXISTS memory_tags (
    memory_id INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (memory_id, tag)
);
CREATE INDEX IF NOT EXISTS memory_tags_tag ON memory_tags(tag);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id INTEGER NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, tags, content='memories', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, text, tags) VALUES (new.id, new.text, new.tags);
END;
CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text, tags) VALUES ('delete', old.id, old.text, old.tags);
END;
CREATE TRIGGER IF NOT EXISTS memories_au AFTER UPDATE OF text, tags ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text, tags) VALUES ('delete', old.id, old.text, old.tags);
    INSERT INTO memories_fts(rowid, text, tags) VALUES (new.id, new.text, new.tags);
END;
"""


# --------------------------------------------------------------------------------------------
# Boundary models
# --------------------------------------------------------------------------------------------
class MemoryInput(BaseModel):
    """What a caller supplies to remember something."""

    text: str
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class RememberResult(BaseModel):
    status: Literal["created", "duplicate", "near_duplicate"] = Field(
        description="created: stored anew; duplicate: the same text was already stored; "
                    "near_duplicate: an existing memory says nearly the same (see similarity).")
    memory: Memory
    similarity: float | None = Field(default=None, description="Cosine to the existing memory, for near_duplicate.")


class RecallHit(BaseModel):
    memory: Memory
    score: float = Field(description="The mode's ranking score: cosine (semantic), BM25 (keyword), RRF (hybrid).")
    similarity: float = Field(description="Cosine similarity between the query and this memory.")


class RecallResult(BaseModel):
    query: str
    mode: SearchMode
    hits: list[RecallHit]


class MemoryPage(BaseModel):
    memories: list[Memory]
    total: int = Field(description="How many memories match the filters in all.")
    offset: int
    limit: int


class ForgetResult(BaseModel):
    deleted: list[int]


class StoreStats(BaseModel):
    count: int
    data_dir: str
    model_id: str
    dim: int
    model_loaded: bool
    oldest: datetime | None
    newest: datetime | None
    top_tags: dict[str, int]
    sources: dict[str, int]
    index_kind: str
    db_bytes: int


class ImportResult(BaseModel):
    read: int
    created: int
    duplicates: int
    reembedded: bool


class Filters(BaseModel):
    """Filters shared by list and recall."""

    tags_any: list[str] = Field(default_factory=list)
    tags_all: list[str] = Field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def normalize_text(text: str) -> str:
    """What counts as 'the same text' for exact de-duplication."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def content_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def _ts(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _now() -> float:
    return datetime.now(timezone.utc).timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def make_input(**fields: Any) -> MemoryInput:
    """Build a :class:`MemoryInput`, turning pydantic's complaints into :class:`InvalidInput`."""
    try:
        return MemoryInput.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "input"
        raise InvalidInput(f"{where}: {err['msg']}") from exc


def fts_query(text: str) -> str | None:
    """Turn free text into a safe FTS5 query: every word quoted, OR-ed (BM25 ranks by matches)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD_RE.findall(text)))[:64]
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


class MemoryStore:
    """A user's long-term memory in one data directory. Thread-safe; safe across processes."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self.settings = settings
        self.embedder = embedder
        self.data_dir = settings.data_dir
        self._lock = threading.RLock()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InvalidInput(f"cannot create data directory {self.data_dir}: {exc}") from exc
        self._conn = self._connect()
        self._closed = False
        self.store_model_id, self.store_dim = self._init_meta()
        self._index: VectorIndex | None = None

    # ----- opening --------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        path = self.data_dir / DB_FILE
        try:
            conn = durable.connect(path)
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreCorrupt(f"{path}: could not switch to WAL mode (got {mode})")
            conn.execute("PRAGMA foreign_keys = ON")
            with self._write(conn):
                for statement in _split_sql(_SCHEMA):
                    conn.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(
                f"{path} is not a readable continuum-mcp database ({exc}). Nothing was changed; "
                "restore it from a backup or an export, or move it aside to start afresh.") from exc
        return conn

    def _init_meta(self) -> tuple[str, int]:
        with self._write():
            rows = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
            if "model_id" not in rows:
                rows = {"model_id": self.embedder.model_id, "dim": str(self.embedder.dim),
                        "schema_version": str(SCHEMA_VERSION)}
                self._conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", rows.items())
        if int(rows.get("schema_version", SCHEMA_VERSION)) > SCHEMA_VERSION:
            raise StoreCorrupt(f"{self.data_dir} was written by a newer continuum-mcp (schema "
                               f"{rows['schema_version']}); upgrade continuum-mcp to open it.")
        return rows["model_id"], int(rows["dim"])

    def _write(self, conn: sqlite3.Connection | None = None) -> AbstractContextManager[sqlite3.Connection]:
        return durable.immediate(conn or self._conn)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._index is not None:
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

    def _require_model(self) -> None:
        problem = self.model_mismatch
        if problem:
            raise ModelMismatch(problem)

    def _vectors(self) -> VectorIndex:
        """The index, brought up to date with every committed change (from any process)."""
        self._require_model()
        if self._index is None:
            self._index = VectorIndex(self.data_dir, self.store_model_id, self.store_dim,
                                      ivf_threshold=self.settings.ivf_threshold)
            how = self._index.load_or_rebuild(self._conn)
            log.debug("vector index %s", how)
        else:
            self._index.sync(self._conn)
        return self._index

    def _maybe_save_index(self) -> None:
        idx = self._index
        if idx is not None and idx.seq - max(idx.saved_seq, 0) >= self.settings.index_save_every:
            idx.save()
            # Other processes whose index is older than what the log keeps will rebuild.
            self._conn.execute("DELETE FROM changes WHERE seq <= ?", (idx.seq - 10 * self.settings.index_save_every,))

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        vecs = self.embedder.encode(list(texts))
        if vecs.shape != (len(texts), self.store_dim):
            raise ModelMismatch(f"embedder returned shape {vecs.shape}, expected ({len(texts)}, {self.store_dim})")
        return vecs

    # ----- validation -----------------------------------------------------------------------
    def _clean_text(self, text: object, what: str = "text") -> str:
        if not isinstance(text, str):
            raise InvalidInput(f"{what} must be a string, got {type(text).__name__}")
        stripped = text.strip()
        if not stripped:
            raise InvalidInput(f"{what} is empty: give the thing to remember as non-blank text")
        if len(stripped) > self.settings.max_text_chars:
            raise InvalidInput(f"{what} is {len(stripped)} characters; the limit is "
                               f"{self.settings.max_text_chars}. Split it into smaller memories.")
        return stripped

    def _clean_tags(self, tags: object) -> list[str]:
        if tags is None:
            return []
        if isinstance(tags, str) or not isinstance(tags, (list, tuple)):
            raise InvalidInput("tags must be a list of strings")
        out: list[str] = []
        for tag in tags:
            if not isinstance(tag, str):
                raise InvalidInput(f"every tag must be a string, got {type(tag).__name__}")
            t = tag.strip().lower()
            if not t or len(t) > MAX_TAG_CHARS or not _TAG_RE.match(t):
                raise InvalidInput(f"invalid tag {tag!r}: use 1-{MAX_TAG_CHARS} letters, digits or "
                                   "- _ : . / + #, starting with a letter or digit, no spaces")
            if t not in out:
                out.append(t)
        if len(out) > self.settings.max_tags:
            raise InvalidInput(f"{len(out)} tags given; at most {self.settings.max_tags} are allowed")
        return out

    def _clean_metadata(self, metadata: object) -> str:
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise InvalidInput("metadata must be a JSON object (a dict)")
        try:
            blob = json.dumps(metadata, sort_keys=True, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"metadata must be JSON-serialisable: {exc}") from exc
        if len(blob.encode()) > self.settings.max_metadata_bytes:
            raise InvalidInput(f"metadata is {len(blob.encode())} bytes as JSON; the limit is "
                               f"{self.settings.max_metadata_bytes}")
        return blob

    def _clean_filters(self, filters: Filters | None) -> Filters:
        f = filters or Filters()
        f = Filters(tags_any=self._clean_tags(f.tags_any), tags_all=self._clean_tags(f.tags_all),
                    since=f.since, until=f.until)
        if f.since and f.until and _ts(f.since) > _ts(f.until):  # type: ignore[operator]
            raise InvalidInput("since is after until: the time range is empty")
        return f

    def _clean_input(self, item: MemoryInput) -> dict[str, Any]:
        text = self._clean_text(item.text)
        source = item.source
        if source is not None and (not isinstance(source, str) or len(source) > 200):
            raise InvalidInput("source must be a string of at most 200 characters")
        return {"text": text, "tags": self._clean_tags(item.tags), "metadata": self._clean_metadata(item.metadata),
                "source": source, "created_at": _ts(item.created_at), "updated_at": _ts(item.updated_at)}

    # ----- rows -----------------------------------------------------------------------------
    _COLS = "id, text, tags, metadata, source, created_at, updated_at, content_hash"

    @staticmethod
    def _row(r: Sequence[Any]) -> Memory:
        return Memory(id=r[0], text=r[1], tags=json.loads(r[2]), metadata=json.loads(r[3]), source=r[4],
                      created_at=_dt(r[5]), updated_at=_dt(r[6]), content_hash=r[7])

    def _fetch(self, ids: Sequence[int]) -> dict[int, Memory]:
        out: dict[int, Memory] = {}
        for start in range(0, len(ids), 900):
            part = list(ids[start:start + 900])
            q = ",".join("?" * len(part))
            for r in self._conn.execute(f"SELECT {self._COLS} FROM memories WHERE id IN ({q})", part):
                out[r[0]] = self._row(r)
        return out

    def _check_id(self, memory_id: object) -> int:
        if isinstance(memory_id, bool) or not isinstance(memory_id, int):
            raise InvalidInput(f"memory id must be an integer, got {type(memory_id).__name__}")
        return memory_id

    # ----- operations -----------------------------------------------------------------------
    def remember(self, text: str, tags: Sequence[str] | None = None, metadata: dict[str, Any] | None = None,
                 source: str | None = None) -> RememberResult:
        return self.remember_many([make_input(text=text, tags=tags, metadata=metadata, source=source)])[0]

    def remember_many(self, items: Sequence[MemoryInput], *, vectors: np.ndarray | None = None) -> list[RememberResult]:
        """Store a batch in one transaction: all acknowledged together once it commits.

        ``vectors`` may carry embeddings already made with this store's model (an import).
        """
        clean = [self._clean_input(i) for i in items]
        if not clean:
            return []
        with self._lock:
            # Embedding is the slow part: done before the write lock is taken.
            vecs = vectors if vectors is not None and vectors.shape == (len(clean), self.store_dim) \
                else self._embed([c["text"] for c in clean])
            index = self._vectors()
            results: list[tuple[str, int, float | None]] = []
            batch_vecs: list[np.ndarray] = []
            batch_ids: list[int] = []
            with self._write():
                index.sync(self._conn)  # see writes that committed while we were embedding
                nearest_stored = index.nearest_batch(vecs)
                now = _now()
                for c, vec, stored in zip(clean, vecs, nearest_stored):
                    h = content_hash(c["text"])
                    row = self._conn.execute("SELECT id FROM memories WHERE content_hash = ? LIMIT 1", (h,)).fetchone()
                    if row:
                        results.append(("duplicate", row[0], 1.0))
                        continue
                    near = self._nearest(stored, vec, batch_vecs, batch_ids)
                    if near and near[1] >= self.settings.dedup_threshold:
                        results.append(("near_duplicate", near[0], near[1]))
                        continue
                    created = c["created_at"] or now
                    cur = self._conn.execute(
                        "INSERT INTO memories(text, tags, metadata, source, created_at, updated_at, content_hash,"
                        " embedding, model_id) VALUES (?,?,?,?,?,?,?,?,?)",
                        (c["text"], json.dumps(c["tags"], ensure_ascii=False), c["metadata"], c["source"], created,
                         c["updated_at"] or created, h, vec.astype(np.float32).tobytes(), self.store_model_id))
                    mid = int(cur.lastrowid)  # type: ignore[arg-type]
                    self._conn.executemany("INSERT INTO memory_tags(memory_id, tag) VALUES (?, ?)",
                                           [(mid, t) for t in c["tags"]])
                    self._conn.execute("INSERT INTO changes(memory_id) VALUES (?)", (mid,))
                    batch_vecs.append(vec)
                    batch_ids.append(mid)
                    results.append(("created", mid, None))
            index.sync(self._conn)
            self._maybe_save_index()
            mems = self._fetch([r[1] for r in results])
        return [RememberResult(status=s, memory=mems[i], similarity=None if s == "created" else sim)  # type: ignore[arg-type]
                for s, i, sim in results]

    @staticmethod
    def _nearest(best: tuple[int, float] | None, vec: np.ndarray, batch_vecs: list[np.ndarray],
                 batch_ids: list[int]) -> tuple[int, float] | None:
        """The closest of: the nearest stored memory, and the memories created earlier in this batch."""
        if batch_vecs:
            sims = np.stack(batch_vecs) @ vec
            j = int(np.argmax(sims))
            if best is None or sims[j] > best[1]:
                best = (batch_ids[j], float(sims[j]))
        return best

    def get(self, memory_id: int) -> Memory:
        mid = self._check_id(memory_id)
        with self._lock:
            found = self._fetch([mid])
        if mid not in found:
            raise NotFound(f"no memory with id {mid}")
        return found[mid]

    def update(self, memory_id: int, *, text: str | None = None, tags: Sequence[str] | None = None,
               metadata: dict[str, Any] | None = None) -> Memory:
        """Change a memory in place; a new text is re-embedded. Unset fields stay as they are."""
        mid = self._check_id(memory_id)
        if text is None and tags is None and metadata is None:
            raise InvalidInput("nothing to update: give a new text, tags or metadata")
        new_text = self._clean_text(text) if text is not None else None
        new_tags = self._clean_tags(tags) if tags is not None else None
        new_meta = self._clean_metadata(metadata) if metadata is not None else None
        with self._lock:
            self.get(mid)
            vec = self._embed([new_text])[0] if new_text is not None else None
            with self._write():
                if not self._conn.execute("SELECT 1 FROM memories WHERE id = ?", (mid,)).fetchone():
                    raise NotFound(f"no memory with id {mid}")  # deleted by another process meanwhile
                sets, args = ["updated_at = ?"], [_now()]
                if new_text is not None and vec is not None:
                    sets += ["text = ?", "content_hash = ?", "embedding = ?", "model_id = ?"]
                    args += [new_text, content_hash(new_text), vec.astype(np.float32).tobytes(), self.store_model_id]
                if new_tags is not None:
                    sets.append("tags = ?")
                    args.append(json.dumps(new_tags, ensure_ascii=False))
                    self._conn.execute("DELETE FROM memory_tags WHERE memory_id = ?", (mid,))
                    self._conn.executemany("INSERT INTO memory_tags(memory_id, tag) VALUES (?, ?)",
                                           [(mid, t) for t in new_tags])
                if new_meta is not None:
                    sets.append("metadata = ?")
                    args.append(new_meta)
                self._conn.execute(f"UPDATE memories SET {', '.join(sets)} WHERE id = ?", (*args, mid))
                self._conn.execute("INSERT INTO changes(memory_id) VALUES (?)", (mid,))
            if self._index is not None:
                self._index.sync(self._conn)
            return self.get(mid)

    def forget(self, memory_ids: Sequence[int]) -> ForgetResult:
        """Delete memories for good (row, keyword entry and vector). All or nothing."""
        if isinstance(memory_ids, (str, bytes)) or not isinstance(memory_ids, Sequence):
            raise InvalidInput("memory ids must be a list of integers")
        ids = list(dict.fromkeys(self._check_id(i) for i in memory_ids))
        if not ids:
            raise InvalidInput("no memory ids given")
        with self._lock, self._write():
            found = set(self._fetch(ids))
            missing = [i for i in ids if i not in found]
            if missing:
                raise NotFound(f"no memory with id {', '.join(map(str, missing))}; nothing was deleted")
            q = ",".join("?" * len(ids))
            self._conn.execute(f"DELETE FROM memories WHERE id IN ({q})", ids)
            self._conn.executemany("INSERT INTO changes(memory_id) VALUES (?)", [(i,) for i in ids])
        with self._lock:
            if self._index is not None:
                self._index.sync(self._conn)
        return ForgetResult(deleted=ids)

    def _filter_sql(self, f: Filters) -> tuple[str, list[Any]]:
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
            args.append(_ts(f.since))
        if f.until:
            clauses.append("created_at <= ?")
            args.append(_ts(f.until))
        return (" AND ".join(clauses) or "1"), args

    def list(self, filters: Filters | None = None, *, offset: int = 0, limit: int = 20,
             newest_first: bool = True) -> MemoryPage:
        f = self._clean_filters(filters)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInput("offset must be a non-negative integer")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInput("limit must be an integer from 1 to 1000")
        where, args = self._filter_sql(f)
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            total = self._conn.execute(f"SELECT COUNT(*) FROM memories WHERE {where}", args).fetchone()[0]
            rows = self._conn.execute(
                f"SELECT {self._COLS} FROM memories WHERE {where} ORDER BY created_at {order}, id {order} "
                "LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
        return MemoryPage(memories=[self._row(r) for r in rows], total=total, offset=offset, limit=limit)

    def recall(self, query: str, *, k: int = 5, mode: SearchMode = "hybrid", filters: Filters | None = None,
               min_score: float | None = None) -> RecallResult:
        """Find the memories most relevant to ``query``.

        ``min_score`` is a floor on cosine similarity in semantic and hybrid modes (so it means
        the same in both) and on the BM25 score in keyword mode.
        """
        q = self._clean_text(query, "query")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInput(f"k must be an integer from 1 to {MAX_K}")
        if mode not in ("semantic", "keyword", "hybrid"):
            raise InvalidInput(f"mode must be 'semantic', 'keyword' or 'hybrid', not {mode!r}")
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))):
            raise InvalidInput("min_score must be a number")
        f = self._clean_filters(filters)
        with self._lock:
            self._require_model()
            qvec = self._embed([q])[0]
            index = self._vectors()
            where, args = self._filter_sql(f)
            allowed = None
            if where != "1":
                allowed = np.fromiter((r[0] for r in self._conn.execute(f"SELECT id FROM memories WHERE {where}", args)),
                                      dtype=np.int64)
            pool = k if mode == "semantic" else max(50, 4 * k)
            semantic = index.search(qvec, pool, allowed) if mode != "keyword" else []
            keyword = self._keyword(q, pool, where, args) if mode != "semantic" else []
            if mode == "semantic":
                ranked = semantic
            elif mode == "keyword":
                ranked = keyword
            else:
                fused: dict[int, float] = {}
                for hits in (semantic, keyword):
                    for rank, (mid, _) in enumerate(hits):
                        fused[mid] = fused.get(mid, 0.0) + 1.0 / (RRF_K + rank + 1)
                ranked = sorted(fused.items(), key=lambda kv: -kv[1])
            ids = [mid for mid, _ in ranked]
            mems = self._fetch(ids)
            sims = self._cosines(qvec, ids)
        hits: list[RecallHit] = []
        for mid, score in ranked:
            if mid not in mems:
                continue
            sim = sims.get(mid, 0.0)
            if min_score is not None and (score if mode == "keyword" else sim) < min_score:
                continue
            hits.append(RecallHit(memory=mems[mid], score=round(score, 6), similarity=round(sim, 6)))
            if len(hits) == k:
                break
        return RecallResult(query=q, mode=mode, hits=hits)

    def _keyword(self, query: str, limit: int, where: str, args: list[Any]) -> list[tuple[int, float]]:
        match = fts_query(query)
        if match is None:
            return []
        sql = ("SELECT rowid, -bm25(memories_fts) FROM memories_fts WHERE memories_fts MATCH ? "
               + ("" if where == "1" else f"AND rowid IN (SELECT id FROM memories WHERE {where}) ")
               + "ORDER BY bm25(memories_fts) LIMIT ?")
        return [(int(r[0]), float(r[1])) for r in self._conn.execute(sql, (match, *args, limit))]

    def _cosines(self, qvec: np.ndarray, ids: Sequence[int]) -> dict[int, float]:
        out: dict[int, float] = {}
        for start in range(0, len(ids), 900):
            part = list(ids[start:start + 900])
            q = ",".join("?" * len(part))
            for mid, blob in self._conn.execute(f"SELECT id, embedding FROM memories WHERE id IN ({q})", part):
                out[mid] = float(np.frombuffer(blob, dtype=np.float32) @ qvec)
        return out

    def stats(self) -> StoreStats:
        with self._lock:
            c = self._conn
            count, oldest, newest = c.execute("SELECT COUNT(*), MIN(created_at), MAX(created_at) FROM memories").fetchone()
            tags = dict(c.execute("SELECT tag, COUNT(*) n FROM memory_tags GROUP BY tag ORDER BY n DESC, tag LIMIT 20").fetchall())
            sources = dict(c.execute("SELECT COALESCE(source, ''), COUNT(*) n FROM memories GROUP BY 1 ORDER BY n DESC LIMIT 20").fetchall())
            page_count = c.execute("PRAGMA page_count").fetchone()[0]
            page_size = c.execute("PRAGMA page_size").fetchone()[0]
        manifest = manifest_info(self.data_dir)
        kind = self._index.kind if self._index is not None else str((manifest or {}).get("kind", "flat"))
        loaded = bool(getattr(self.embedder, "loaded", True))
        return StoreStats(count=count, data_dir=str(self.data_dir), model_id=self.store_model_id, dim=self.store_dim,
                          model_loaded=loaded, oldest=_dt(oldest) if oldest else None,
                          newest=_dt(newest) if newest else None, top_tags=tags, sources=sources,
                          index_kind=kind, db_bytes=page_count * page_size)

    def all_memories(self) -> Iterator[Memory]:
        """Every memory, oldest first (for export and the pattern pipeline)."""
        last = 0
        while True:
            with self._lock:
                rows = self._conn.execute(f"SELECT {self._COLS} FROM memories WHERE id > ? ORDER BY id LIMIT 500",
                                          (last,)).fetchall()
            if not rows:
                return
            for r in rows:
                yield self._row(r)
            last = rows[-1][0]

    # ----- export / import / re-embed -------------------------------------------------------
    def export_jsonl(self, out: IO[str]) -> int:
        """Write a header line, then one memory per line, embeddings included (base64 float32)."""
        with self._lock:
            count = self._conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
            out.write(json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "model_id": self.store_model_id,
                                  "dim": self.store_dim, "count": count}) + "\n")
            n = 0
            for r in self._conn.execute(f"SELECT {self._COLS}, embedding FROM memories ORDER BY id"):
                m = self._row(r)
                rec = m.model_dump(mode="json", exclude={"id", "content_hash"})
                rec["embedding"] = base64.b64encode(r[8]).decode("ascii")
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
        return n

    def import_jsonl(self, lines: Iterable[str], *, progress: Progress | None = None,
                     batch_size: int = 256) -> ImportResult:
        """Import an export. The whole file is validated before anything is written."""
        it = iter(lines)
        try:
            header = json.loads(next(it))
        except StopIteration:
            raise InvalidInput("import file is empty") from None
        except ValueError as exc:
            raise InvalidInput(f"line 1: not JSON ({exc})") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise InvalidInput(f"line 1: not a continuum-mcp export (expected format '{FORMAT}')")
        if header.get("version") != FORMAT_VERSION:
            raise InvalidInput(f"export format version {header.get('version')} is not supported (expected {FORMAT_VERSION})")
        same_model = header.get("model_id") == self.store_model_id and header.get("dim") == self.store_dim
        items: list[tuple[MemoryInput, bytes | None]] = []
        for lineno, line in enumerate(it, start=2):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                emb = rec.pop("embedding", None) if isinstance(rec, dict) else None
                item = MemoryInput.model_validate(rec)
                self._clean_input(item)
            except (ValueError, ValidationError, InvalidInput) as exc:
                msg = exc.message if isinstance(exc, InvalidInput) else str(exc).splitlines()[0]
                raise InvalidInput(f"line {lineno}: {msg}; nothing was imported") from exc
            blob = None
            if same_model and isinstance(emb, str):
                try:
                    blob = base64.b64decode(emb, validate=True)
                except ValueError:
                    blob = None
                if blob is not None and len(blob) != 4 * self.store_dim:
                    blob = None
            items.append((item, blob))
        created = dups = 0
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            vectors = None
            if all(b is not None for _, b in chunk):
                vectors = np.frombuffer(b"".join(b for _, b in chunk), dtype=np.float32).reshape(len(chunk), self.store_dim)  # type: ignore[misc]
            for r in self.remember_many([i for i, _ in chunk], vectors=vectors):
                created += r.status == "created"
                dups += r.status != "created"
            if progress:
                progress(min(start + batch_size, len(items)), len(items))
        return ImportResult(read=len(items), created=created, duplicates=dups, reembedded=not same_model)

    def reembed(self, *, progress: Progress | None = None, batch_size: int = 128) -> int:
        """Re-embed every memory with the configured model and adopt it as the store's model."""
        with self._lock:
            total = self._conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
            done, last = 0, 0
            while True:
                rows = self._conn.execute("SELECT id, text FROM memories WHERE id > ? ORDER BY id LIMIT ?",
                                          (last, batch_size)).fetchall()
                if not rows:
                    break
                vecs = self.embedder.encode([r[1] for r in rows])
                with self._write():
                    self._conn.executemany(
                        "UPDATE memories SET embedding = ?, model_id = ? WHERE id = ?",
                        [(v.astype(np.float32).tobytes(), self.embedder.model_id, r[0]) for r, v in zip(rows, vecs)])
                    self._conn.executemany("INSERT INTO changes(memory_id) VALUES (?)", [(r[0],) for r in rows])
                done += len(rows)
                last = rows[-1][0]
                if progress:
                    progress(done, total)
            with self._write():
                self._conn.execute("UPDATE meta SET value = ? WHERE key = 'model_id'", (self.embedder.model_id,))
                self._conn.execute("UPDATE meta SET value = ? WHERE key = 'dim'", (str(self.embedder.dim),))
            self.store_model_id, self.store_dim = self.embedder.model_id, self.embedder.dim
            self._index = None
            self._vectors().save()
        return done


def _split_sql(script: str) -> list[str]:
    """Split the schema into statements (triggers contain ';' inside BEGIN...END)."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined.endswith(";") and (not joined.upper().startswith("CREATE TRIGGER") or joined.upper().endswith("END;")):
            out.append(joined)
            buf = []
    return out


def open_store(settings: Settings, embedder: Embedder | None = None, *, load_delay: float | None = 0.0) -> MemoryStore:
    """Open the store with the configured (or given) embedder; the model loads in the background.

    ``load_delay`` postpones the background load a little, so that a server answers its
    handshake before the model import competes with it for the interpreter; ``None`` loads the
    model only when something first needs it (a CLI listing never does).
    """
    from embeddings import SentenceTransformerEmbedder

    if embedder is None:
        st = SentenceTransformerEmbedder(settings.model_path)
        if load_delay is None:
            pass
        elif load_delay > 0:
            timer = threading.Timer(load_delay, st.start)
            timer.daemon = True
            timer.start()
        else:
            st.start()
        embedder = st
    return MemoryStore(settings, embedder)
