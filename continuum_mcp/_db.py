"""The database interface shared by the SQLite file and the PostgreSQL component: what store code may use.

Why one interface: the coordinator's store, the privacy ledger and the replay guard are written once
against it, in portable SQL (``?`` placeholders, ``INSERT ... ON CONFLICT``, ``RETURNING``), and run on
a SQLite file (:class:`continuum_mcp._sqlite.Database`, the embedded default) or on a component of a
shared PostgreSQL database (:class:`continuum_mcp._postgres.PgDatabase`, several processes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol


class Connection(Protocol):
    """The connection of a transaction: ``conn.execute(sql, args).fetchall()`` / ``.rowcount``."""

    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any: ...


class SqlDatabase(Protocol):
    """One database (SQLite file or PostgreSQL component) with its schema applied."""

    dialect: str

    def tx(self, key: str = "") -> AbstractContextManager[Any]:
        """A write transaction whose lock is taken before its first read (check-then-write is atomic
        across threads and processes); ``key`` narrows the lock where the database can."""
        ...

    def reading(self) -> AbstractContextManager[Any]:
        """A consistent read-only snapshot that takes no write lock."""
        ...

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any: ...

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def read_one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

    def tables(self) -> list[str]: ...

    def close(self) -> None: ...


#: bound parameters per multi-row statement (SQLite allows 32,766, PostgreSQL 65,535)
_MAX_PARAMS = 2000


def insert_rows(conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                returning: str = "") -> list[tuple[Any, ...]]:
    """Insert ``rows`` with one multi-row ``INSERT`` per batch of parameters, returning what
    ``returning`` names (in no promised order: name a key column to match the rows up).

    Why: on PostgreSQL each statement is a network round trip, and a write transaction holds its
    locks across all of them; 20 patterns of 4 phrases each were 41 statements, they are now 2.
    Portable: both databases accept ``VALUES (...), (...)`` with ``RETURNING``."""
    per_row = len(columns)
    step = max(1, _MAX_PARAMS // max(1, per_row))
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    one = "(" + ", ".join("?" * per_row) + ")"
    out: list[tuple[Any, ...]] = []
    for start in range(0, len(rows), step):
        batch = rows[start:start + step]
        sql = head + ", ".join([one] * len(batch)) + (f" RETURNING {returning}" if returning else "")
        cur = conn.execute(sql, [v for r in batch for v in r])
        if returning:
            out += [tuple(r) for r in cur.fetchall()]
    return out


def open_database(target: Any, schema: str, *, name: str, version: int = 1,
                  migrate: Callable[[Any, int], None] | None = None, what: str = "database",
                  private: bool = False, timeout: float = 30.0) -> SqlDatabase:
    """``schema`` (SQLite dialect) opened on ``target``: a file path (SQLite) or a
    :class:`~continuum_mcp._postgres.PgPool` (component ``name`` of that PostgreSQL database)."""
    if isinstance(target, (str, Path)):
        from continuum_mcp._sqlite import Database

        return Database(Path(target), schema, version=version, migrate=migrate, private=private, timeout=timeout,
                        what=what)
    from continuum_mcp._postgres import PgDatabase

    return PgDatabase(target, schema, name=name, version=version, migrate=migrate, what=what)


__all__ = ["Connection", "SqlDatabase", "insert_rows", "open_database"]
