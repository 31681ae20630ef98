"""The memory database's schema (version 3) and the in-place upgrades from versions 1 and 2.

Version 1 (releases up to 0.x) recorded its version only in ``meta.schema_version`` and left
``PRAGMA user_version`` at 0; :func:`stamp_legacy` makes such a file say 1 so that the shared
:class:`~continuum_mcp._sqlite.Database` helper hands it to :func:`migrate`, which adds the new
columns inside the opening transaction. Rows, tags, times and embeddings are not touched, so the
derived vector index stays valid.

Version 3 drops the per-row insert trigger into ``memories_fts``: the write path fills FTS5 with
one ``INSERT ... SELECT`` per batch instead. Each trigger statement opened a savepoint, and FTS5
flushes its pending terms at every savepoint, so a batch of 1,000 made 1,000 one-row segments
to merge (a fifth of the insert rate). Delete and update triggers stay (one row each).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from continuum_mcp import _sqlite as durable
from continuum_mcp.errors import DiskFull, StoreCorrupt, StoreReadOnly

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3

SCHEMA = """
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
    model_id TEXT NOT NULL,
    supersedes INTEGER REFERENCES memories(id) ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS memories_hash ON memories(content_hash);
CREATE INDEX IF NOT EXISTS memories_created ON memories(created_at);
CREATE INDEX IF NOT EXISTS memories_supersedes ON memories(supersedes) WHERE supersedes IS NOT NULL;
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
CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text, tags) VALUES ('delete', old.id, old.text, old.tags);
END;
CREATE TRIGGER IF NOT EXISTS memories_au AFTER UPDATE OF text, tags ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text, tags) VALUES ('delete', old.id, old.text, old.tags);
    INSERT INTO memories_fts(rowid, text, tags) VALUES (new.id, new.text, new.tags);
END;
"""


def stamp_legacy(path: Path) -> None:
    """Give a version-1 file (user_version 0, a ``memories`` table) its real version number."""
    if not path.exists() or path.stat().st_size == 0:
        return
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] != 0:
            return
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='memories'").fetchone():
            return
        conn.execute("PRAGMA user_version = 1")
    finally:
        conn.close()


def migrate(conn: sqlite3.Connection, found: int) -> None:
    """Upgrade in place from ``found`` to :data:`SCHEMA_VERSION` (inside the opening transaction)."""
    if found < 2:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(memories)")}
        if "supersedes" not in cols:
            conn.execute("ALTER TABLE memories ADD COLUMN supersedes INTEGER "
                         "REFERENCES memories(id) ON DELETE SET NULL")
    if found < 3:
        conn.execute("DROP TRIGGER IF EXISTS memories_ai")  # see the module docstring: FTS is filled per batch
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def storage_error(exc: sqlite3.OperationalError, path: object) -> Exception:
    """The precise error for a failed write: read-only store, full disk, or the original."""
    msg = str(exc).lower()
    if "readonly" in msg or "read-only" in msg:
        return StoreReadOnly(f"{path} is read-only ({exc}); nothing was written. Memories can still be "
                             "read; make the file and its directory writable to store new ones.")
    if "disk is full" in msg or "disk full" in msg:
        return DiskFull(f"the disk holding {path} is full ({exc}); nothing was written. Free some space "
                        "and try again.")
    return exc


def _corrupt(path: Path, exc: Exception) -> StoreCorrupt:
    return StoreCorrupt(f"{path} is not a readable continuum-mcp database ({exc}). Nothing was "
                        "changed; restore it from a backup or an export, or move it aside to start afresh.")


def _is_read_only(exc: BaseException | None, path: Path) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and isinstance(storage_error(exc, path), StoreReadOnly)


def open_database(path: Path, *, read_only: bool) -> tuple[sqlite3.Connection, threading.RLock | None, bool]:
    """Open (creating or upgrading) the store's file: (connection, its lock, opened read-only?).

    A healthy file that cannot be written is opened read-only instead of being called corrupt."""
    if not read_only:
        try:
            stamp_legacy(path)
            db = durable.Database(path, SCHEMA, version=SCHEMA_VERSION, migrate=migrate, what="memory store")
            conn = db.conn
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreCorrupt(f"{path}: could not switch to WAL mode (got {mode})")
            conn.execute("PRAGMA foreign_keys = ON")
            return conn, db.lock, False
        except StoreCorrupt as exc:
            if not _is_read_only(exc.__cause__, path):
                raise _corrupt(path, exc.__cause__ or exc) from exc
        except sqlite3.DatabaseError as exc:
            if not _is_read_only(exc, path):
                raise _corrupt(path, exc) from exc
        log.info("memory store %s is read-only; opened for reading", path)
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False, timeout=30.0)
        found = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise _corrupt(path, exc) from exc
    if found != SCHEMA_VERSION:
        conn.close()
        raise StoreReadOnly(f"{path} is read-only and has schema version {found}; this release must upgrade "
                            f"it to {SCHEMA_VERSION} in place first: make it writable and open it once.")
    return conn, None, True
