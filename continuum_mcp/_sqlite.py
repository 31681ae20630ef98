"""The one SQLite helper under every database file of the project, and atomic file writes.

One place decides what "written" means: SQLite in WAL mode with ``synchronous=FULL`` (a committed
transaction survives a crash), write transactions taken with ``BEGIN IMMEDIATE`` (concurrent
writers queue on the busy timeout instead of failing half-way), schemas applied once with a
version recorded in ``PRAGMA user_version`` (a file from a newer release is refused, an older one
is migrated by the owner's ``migrate`` step), private files created 0600, and other files replaced
atomically (temp file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from continuum_mcp.errors import StoreCorrupt

Migration = Callable[[sqlite3.Connection, int], None]


def connect(path: str | os.PathLike[str], *, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=FULL."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


@contextmanager
def immediate(conn: sqlite3.Connection, lock: threading.Lock | threading.RLock | None = None
              ) -> Iterator[sqlite3.Connection]:
    """One write transaction: the write lock is taken before the first read, so a check and the
    write that depends on it are atomic across threads (``lock``) and processes (SQLite)."""
    with lock if lock is not None else nullcontext():
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLite itself rolls back the whole transaction on some errors (SQLITE_FULL)
                conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")


def split_sql(script: str) -> list[str]:
    """Split a schema into statements; SQLite itself says when one is complete (triggers hold
    ``;`` inside BEGIN...END)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip().strip(";").strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip().strip(";").strip():
        out.append(buf.strip())
    return out


class Rows:
    """A finished statement's rows and row count (the lock or connection was released)."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


class Database:
    """One SQLite file: a shared connection, a lock for threads, schema applied under a version.

    ``schema`` holds idempotent ``CREATE ... IF NOT EXISTS`` statements of the current
    ``version``. A file whose ``user_version`` is newer is refused (written by a newer release);
    an older non-zero one is handed to ``migrate(conn, old_version)`` inside the same
    transaction before the schema is applied. ``private`` files are made 0600.
    """

    def __init__(self, path: Path, schema: str, *, version: int = 1, migrate: Migration | None = None,
                 private: bool = False, timeout: float = 30.0, what: str = "database") -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._timeout = timeout
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        existed = self.path.exists()
        if private and not existed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            self._conn = connect(self.path, timeout=timeout)
            with self.tx() as c:
                found = int(c.execute("PRAGMA user_version").fetchone()[0])
                if found > version:
                    raise StoreCorrupt(f"{what} {self.path} has schema version {found}, newer than this "
                                       f"release understands ({version}); upgrade continuum-mcp to open it")
                if 0 < found < version and migrate is not None:
                    migrate(c, found)
                for stmt in split_sql(schema):
                    c.execute(stmt)
                if found != version:
                    c.execute(f"PRAGMA user_version = {int(version)}")
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(f"{what} {self.path} cannot be opened ({exc}); nothing was changed. "
                               "Move it aside to start afresh, or restore it from a backup") from exc
        if private:
            os.chmod(self.path, 0o600)

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn

    dialect = "sqlite"

    def tx(self, key: str = "") -> Any:
        """``with db.tx() as conn:`` one IMMEDIATE write transaction, serialised across threads and
        processes (``key`` narrows the lock on PostgreSQL; SQLite has one write lock per file)."""
        return immediate(self._conn, self._lock)

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection. Why: WAL lets readers run beside the writer and each
        other, so reads need not queue on the lock of the one writing connection (under load that
        queue, not SQLite, was where a coordinator's queries spent their time)."""
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            conn = connect(self.path, timeout=self._timeout)
            conn.execute("PRAGMA query_only = ON")
            with self._lock:
                self._reader_conns.append(conn)
            self._readers.conn = conn
        return conn

    def _in_own_tx(self) -> bool:
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]  # this thread holds the writer

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A consistent read (one deferred transaction) that does not take the write lock, on this
        thread's own connection; inside this thread's own write transaction it reads that one."""
        if self._in_own_tx():
            yield self._conn
            return
        conn = self._reader()
        if conn.in_transaction:  # nested in this thread's reading()
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        """One statement on its own (autocommit, or inside the open transaction), rows fetched. A
        SELECT outside this thread's write transaction runs on this thread's reader."""
        if not self._in_own_tx() and sql.lstrip()[:6].upper() == "SELECT":
            cur = self._reader().execute(sql, args)
            return Rows(list(cur.fetchall()), cur.rowcount)
        with self._lock:
            cur = self._conn.execute(sql, args)
            return Rows(list(cur.fetchall()) if cur.description is not None else [], cur.rowcount)

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.execute(sql, args).fetchall()

    def read_one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.execute(sql, args).fetchone()
        return tuple(row) if row is not None else None

    def tables(self) -> list[str]:
        """The file's tables, sorted."""
        return [str(r[0]) for r in self.read("SELECT name FROM sqlite_master WHERE type='table' "
                                             "AND name NOT LIKE 'sqlite_%' ORDER BY name")]

    def close(self) -> None:
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
            self._conn.close()


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data``: readers see the old or the new content, never a mix.
    With ``mode`` (e.g. 0o600 for keys) the file never exists with looser permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


__all__ = ["Database", "Rows", "atomic_write", "connect", "immediate", "split_sql"]
