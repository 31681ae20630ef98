"""Durable storage primitives shared by every SQLite file and state file of the project.

One place decides what "written" means: SQLite in WAL mode with ``synchronous=FULL`` (a committed
transaction survives a crash), write transactions taken with ``BEGIN IMMEDIATE`` (concurrent
writers queue on the busy timeout instead of failing half-way), and files replaced atomically
(temp file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path


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
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")


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
