"""Durable storage of the federation coordinator (every SQL statement of the coordinator lives in
this module and its parts, ``_release_sql``, ``_credit_sql``, ``_integrity_sql``), on SQLite or PostgreSQL.

Two implementations of one interface (:class:`continuum_mcp._db.SqlDatabase`), the same portable
SQL: by default one SQLite file in the storage directory (WAL, ``synchronous=FULL``, ``BEGIN
IMMEDIATE``, via ``continuum_mcp._sqlite``); with ``database="postgresql://..."`` a PostgreSQL
database that several coordinator processes share (``continuum_mcp._postgres``: a pool, every
write transaction under an advisory lock: the store's, or shared with one member's for what touches only
that member's rows, schema versions in a table). Either way the coordinator
acknowledges a contribution (HTTP 202) only after its transaction has committed, so a ``kill -9``
loses nothing it acknowledged; and every check-then-write (admission tokens, credit balances,
votes, round transitions) runs in one transaction that holds the write lock before its first read,
so concurrent requests, in one process or many, can neither double-spend nor reuse a token.
The privacy ledger and the replay guard live beside it (:meth:`CoordinatorStore.component`): files
of their own on SQLite, components of the same database on PostgreSQL, so no process keeps state
that another needs.

Why refuse rather than repair: the database *is* the federation (members, rounds, credits). A file
that cannot be read, or one that is empty although it exists, means state was lost or damaged;
silently starting a new federation over it would forget every member and spend. ``StoreCorrupt``
says so and the coordinator does not start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Self

from continuum_mcp._db import Connection, SqlDatabase, insert_rows, open_database
from continuum_mcp.errors import BadInvite, Conflict, CoordinatorUnavailable, InvalidInput, StoreCorrupt, TooLarge
from continuum_mcp.federation.coordinator._governance_sql import bump_members_version
from continuum_mcp.federation.coordinator._schema import SCHEMA, SCHEMA_VERSION, migrate
from continuum_mcp.federation.protocol import PatternSubmission

DB_NAME = "coordinator.db"
REPLAY_DB_NAME = "replay.db"
LEDGER_DB_NAME = "ledger.db"

logger = logging.getLogger(__name__)

#: one take from a shared token bucket, refill and all: inserted full minus one, or refilled (elapsed
#: time clamped at 0, so a clock behind the row's adds nothing; capped at capacity) and decremented
#: only WHERE a token is there, so a refusal returns no row and writes nothing
_REFILLED = ("address_buckets.tokens + (CASE WHEN excluded.updated_at > address_buckets.updated_at "
             "THEN excluded.updated_at - address_buckets.updated_at ELSE 0 END) * ?")
_TAKE_TOKEN = (
    "INSERT INTO address_buckets (address, tokens, updated_at) VALUES (?, ?, ?) "
    f"ON CONFLICT (address) DO UPDATE SET tokens = CASE WHEN {_REFILLED} > ? THEN ? ELSE {_REFILLED} END - 1, "
    "updated_at = CASE WHEN excluded.updated_at > address_buckets.updated_at THEN excluded.updated_at "
    f"ELSE address_buckets.updated_at END WHERE {_REFILLED} >= 1 RETURNING tokens")

def admission_token() -> str:
    """A fresh admission token (192 random bits, URL-safe base64) that never starts with ``-``:
    tokens are passed on command lines (``federation join --token T``), where one starting with
    ``-`` would be read as an option (1 in 64 of ``token_urlsafe``'s do)."""
    while (token := secrets.token_urlsafe(24)).startswith("-"):
        continue
    return token


def hash_token(token: str) -> str:
    """Admission tokens are stored hashed: a copy of the database admits nobody."""
    return hashlib.sha256(("continuum-mcp/admission-token/v1\n" + token).encode("utf-8")).hexdigest()


def day_start(now: float) -> float:
    """Start of the UTC day of ``now`` (daily limits and the free tier reset at UTC midnight)."""
    d = datetime.fromtimestamp(now, tz=timezone.utc)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def month_start(now: float) -> float:
    d = datetime.fromtimestamp(now, tz=timezone.utc)
    return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def refuse_lost_state(storage: Path) -> None:
    """Refuse a storage directory whose database is empty, or missing while other state remains."""
    db = storage / DB_NAME
    if db.exists() and db.stat().st_size == 0:
        raise StoreCorrupt(
            f"coordinator database {db} exists but is empty (0 bytes): the federation's state was lost. "
            "Refusing to start a new federation over it; restore it from a backup, or delete the storage "
            "directory to found a new federation")
    if not db.exists() and (storage / LEDGER_DB_NAME).exists():
        raise StoreCorrupt(
            f"{storage} holds privacy ledgers but no {DB_NAME}: the federation's state was lost. Refusing to "
            "start a new federation over it; restore the database from a backup, or use another directory")


@dataclass(frozen=True)
class Member:
    instance_id: str
    public_key: bytes
    level: str
    mode: str
    joined_at: float


@dataclass(frozen=True)
class RoundRow:
    round_id: int
    attempt: int
    phase: str
    phase_deadline: float | None
    params_json: str | None
    opened_at: float
    next_close_at: float
    finished_at: float | None
    epsilon: float | None


class _Storage:
    """Where the coordinator's state lives: ``coordinator.db`` (and the files of its components) in
    the storage directory, or the PostgreSQL database named by ``database`` (a ``postgresql://`` URL;
    its pool has ``pool_size`` connections), holding every component.

    Every write is one :meth:`transaction` that takes the store's write lock first (SQLite: ``BEGIN
    IMMEDIATE``; PostgreSQL: ``pg_advisory_xact_lock``), so other threads and processes (more
    coordinators, ``coordinator invite``) are safe; :meth:`reading` is a consistent snapshot.
    """

    def __init__(self, storage_path: str | Path, busy_timeout_s: float = 30.0, *, database: str | None = None,
                 pool_size: int = 16) -> None:
        self.dir = Path(storage_path)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._timeout = busy_timeout_s
        self._components: list[SqlDatabase] = []
        self._pool: Any = None
        if database:
            from continuum_mcp._postgres import PgPool, is_postgres_url, redact

            if not is_postgres_url(database):
                raise InvalidInput(f"--database {redact(database)}: give a postgresql:// URL, or leave it out for "
                                   f"SQLite in {self.dir}")
            self._pool = PgPool(database, max_size=pool_size, timeout=busy_timeout_s)
            self.path: Path | None = None
        else:
            self.path = self.dir / DB_NAME
            refuse_lost_state(self.dir)
        try:
            self._db = self._open(DB_NAME, SCHEMA, version=SCHEMA_VERSION, migrate=migrate,
                                  what="coordinator database", private=True)
            if self._pool is None:
                self._db.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_config(cls, config: Any) -> Self:
        """The store a :class:`CoordinatorConfig` names (its storage directory and ``database``)."""
        return cls(config.storage_path, database=config.database, pool_size=config.database_pool_size)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._db.dialect

    @property
    def db(self) -> SqlDatabase:
        return self._db

    def _open(self, file_name: str, schema: str, *, version: int, what: str, migrate: Any = None,
              private: bool = False) -> SqlDatabase:
        target: Any = self._pool if self._pool is not None else self.dir / file_name
        db = open_database(target, schema, name=file_name.removesuffix(".db"), version=version, migrate=migrate,
                           what=what, private=private, timeout=self._timeout)
        self._components.append(db)
        return db

    def component(self, file_name: str, schema: str, *, version: int = 1, what: str, migrate: Any = None
                  ) -> SqlDatabase:
        """Another part of the coordinator's state (the privacy ledger, the replay guard) beside the
        store: its own file ``file_name`` on SQLite, a component of the same database on PostgreSQL
        (``migrate(conn, old_version)`` brings an older one up to ``version``). Closed with the store."""
        return self._open(file_name, schema, version=version, what=what, migrate=migrate)

    def close(self) -> None:
        for db in reversed(self._components):
            db.close()
        self._components.clear()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def transaction(self, key: str = "") -> AbstractContextManager[Any]:
        """A write transaction (the store's write lock taken before any read), committed on success.

        ``key`` (PostgreSQL; SQLite has one lock per file) narrows the lock for a transaction that
        reads and writes only rows of that key, e.g. ``member:<id>`` for one member's credit charge:
        such transactions of different keys run side by side, and never beside an unkeyed one."""
        return self._db.tx(key)

    def reading(self) -> AbstractContextManager[Any]:
        """A consistent read without taking the write lock."""
        return self._db.reading()

    def storage_files(self) -> list[Path]:
        """Every file of the storage directory (tests search them for plaintext)."""
        return sorted(p for p in self.dir.rglob("*") if p.is_file())


class CoordinatorStore(_Storage):
    """Every SQL statement of the coordinator's members, admission, rounds and submissions (the
    release, credit and integrity SQL are in their modules), typed rows out."""

    # ----------------------------------------------------------------------------- meta

    def ensure_federation(self, federation_id: str) -> None:
        """Pin the federation id of this storage: one storage directory serves one federation."""
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key='federation_id'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('federation_id', ?)", (federation_id,))
            elif row[0] != federation_id:
                raise InvalidInput(
                    f"storage belongs to federation {row[0]!r}, not {federation_id!r}; "
                    "use another storage directory"
                )

    # ----------------------------------------------------------------------------- admission

    def create_admission_tokens(self, n: int, *, max_per_day: int | None = None, via: str = "local",
                                now: float | None = None) -> list[str]:
        """Mint ``n`` single-use admission tokens; only their hashes are stored, and every minting
        is journalled (when, how many, through which door). Each token is one identity, i.e. one
        possible sybil, so ``max_per_day`` caps what the last 24 hours may mint (``TooLarge`` past it)."""
        if not 1 <= n <= 10_000:
            raise InvalidInput("mint between 1 and 10000 admission tokens at a time")
        tokens = [admission_token() for _ in range(n)]
        now = time.time() if now is None else now
        with self.transaction() as conn:
            if max_per_day is not None:
                minted = int(conn.execute("SELECT COALESCE(SUM(count), 0) FROM invite_journal WHERE at > ?",
                                          (now - 86400.0,)).fetchone()[0])
                if minted + n > max_per_day:
                    raise TooLarge(f"invite minting is limited to {max_per_day} per 24 hours ({minted} minted); "
                                   "every admission token is a possible fake identity")
            conn.executemany(
                "INSERT INTO admission_tokens (token_hash, created_at) VALUES (?, ?)",
                [(hash_token(t), now) for t in tokens],
            )
            conn.execute("INSERT INTO invite_journal (at, count, via) VALUES (?, ?, ?)", (now, n, via))
        return tokens

    def invite_journal(self) -> list[tuple[float, int, str]]:
        """(at, count, via) of every minting, oldest first: the operator's sybil budget is auditable."""
        rows = self._db.read("SELECT at, count, via FROM invite_journal ORDER BY id")
        return [(float(a), int(c), str(v)) for a, c, v in rows]

    def get_member(self, instance_id: str, conn: Connection | None = None) -> Member | None:
        row = (conn or self._db).execute(
            "SELECT instance_id, public_key, level, mode, joined_at FROM members WHERE instance_id=?",
            (instance_id,),
        ).fetchone()
        return None if row is None else Member(row[0], bytes(row[1]), row[2], row[3], float(row[4]))

    def member_keys(self, ids: Sequence[str], conn: Connection | None = None) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for i in ids:
            m = self.get_member(i, conn)
            if m is not None:
                out[i] = m.public_key
        return out

    @staticmethod
    def remove_member(conn: Connection, instance_id: str) -> None:
        """End a membership: its votes and verifications go too (submissions are deleted first)."""
        for table in ("votes", "verifications", "members"):
            conn.execute(f"DELETE FROM {table} WHERE instance_id=?", (instance_id,))
        bump_members_version(conn)

    def admit(
        self, instance_id: str, public_key: bytes, level: str, mode: str, token: str | None, *, private: bool,
        now: float,
    ) -> tuple[Member, bool]:
        """Admit a member (consuming its token in the same transaction). Returns (member, created).

        Raises ``Conflict`` (already a member differently) or ``BadInvite``.
        """
        with self.transaction() as conn:
            existing = self.get_member(instance_id, conn)
            if existing is not None:
                if existing.level != level or existing.mode != mode:
                    raise Conflict(
                        f"{instance_id} is already a member with level {existing.level} and mode "
                        f"{existing.mode}; leave first to rejoin differently",
                    )
                return existing, False
            if private:
                if not token:
                    raise BadInvite("this federation is private: an admission token is required")
                row = conn.execute(
                    "SELECT used_by FROM admission_tokens WHERE token_hash=?", (hash_token(token),)
                ).fetchone()
                if row is None:
                    raise BadInvite("unknown admission token")
                if row[0] is not None:
                    raise BadInvite("this admission token was already used")
                conn.execute(
                    "UPDATE admission_tokens SET used_by=?, used_at=? WHERE token_hash=?",
                    (instance_id, now, hash_token(token)),
                )
            conn.execute(
                "INSERT INTO members (instance_id, public_key, level, mode, joined_at) VALUES (?,?,?,?,?)",
                (instance_id, public_key, level, mode, now),
            )
            bump_members_version(conn)
            return Member(instance_id, public_key, level, mode, now), True

    # ----------------------------------------------------------------------------- rounds

    def current_round(self, conn: Connection | None = None) -> RoundRow | None:
        row = (conn or self._db).execute(
            "SELECT round_id, attempt, phase, phase_deadline, params_json, opened_at, next_close_at,"
            " finished_at, epsilon FROM rounds ORDER BY round_id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else RoundRow(*row)

    def get_round(self, round_id: int) -> RoundRow | None:
        row = self._db.read_one(
            "SELECT round_id, attempt, phase, phase_deadline, params_json, opened_at, next_close_at,"
            " finished_at, epsilon FROM rounds WHERE round_id=?",
            (round_id,),
        )
        return None if row is None else RoundRow(*row)

    @staticmethod
    def open_round(conn: Connection, round_id: int, now: float, interval: float) -> None:
        conn.execute(
            "INSERT INTO rounds (round_id, attempt, phase, opened_at, next_close_at) VALUES (?, 0, 'collecting', ?, ?)",
            (round_id, now, now + interval),
        )

    @staticmethod
    def set_round(conn: Connection, round_id: int, **fields: Any) -> None:
        allowed = {"attempt", "phase", "phase_deadline", "params_json", "next_close_at", "finished_at", "epsilon"}
        if not fields or not set(fields) <= allowed:
            raise InvalidInput(f"bad round fields {sorted(fields)}")
        cols = ", ".join(f"{k}=?" for k in fields)
        conn.execute(f"UPDATE rounds SET {cols} WHERE round_id=?", (*fields.values(), round_id))

    # ----------------------------------------------------------------------------- submissions

    def replace_submission(
        self, conn: Connection, instance_id: str, round_id: int, patterns: Sequence[PatternSubmission],
        now: float,
    ) -> None:
        """Replace the member's pending submission of ``round_id`` (re-posting replaces): three
        statements whatever the number of patterns (slots are unique in one request, so the
        returned ids are matched to their patterns by slot)."""
        if len({p.slot for p in patterns}) != len(patterns):
            raise InvalidInput("patterns.slot: at most one pattern per slot per round")
        conn.execute(
            "DELETE FROM submissions WHERE instance_id=? AND round_id=? AND status='pending'",
            (instance_id, round_id),
        )
        if not patterns:
            return
        ids = dict(insert_rows(
            conn, "submissions", ("instance_id", "round_id", "ct_round", "slot", "confidence", "statement_ct",
                                  "statement_token", "submitted_at"),
            [(instance_id, round_id, round_id, p.slot, p.confidence, p.statement_ciphertext, p.statement_token, now)
             for p in patterns], returning="slot, id"))
        phrases = [(ids[p.slot], k, ph.token, ph.ciphertext) for p in patterns for k, ph in enumerate(p.phrases)]
        if phrases:
            insert_rows(conn, "phrases", ("submission_id", "position", "token", "ciphertext"), phrases)

    @staticmethod
    def pending_submitters(conn: Connection, round_id: int) -> dict[str, int]:
        """Members with a pending submission in ``round_id`` -> number of patterns."""
        rows = conn.execute(
            "SELECT instance_id, COUNT(*) FROM submissions WHERE round_id=? AND status='pending' GROUP BY instance_id",
            (round_id,),
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def pending_snapshot(self, instance_id: str) -> list[tuple[int, int, int]]:
        """(round_id, ct_round, slot) of a member's pending submissions (tests, status)."""
        rows = self._db.read(
            "SELECT round_id, ct_round, slot FROM submissions WHERE instance_id=? AND status='pending' ORDER BY slot",
            (instance_id,),
        )
        return [(int(a), int(b), int(c)) for a, b, c in rows]

    @staticmethod
    def carry_over(conn: Connection, from_round: int, to_round: int, members: Sequence[str] | None = None) -> int:
        """Move pending submissions to the next round (nothing acknowledged is ever lost)."""
        if members is None:
            cur = conn.execute(
                "UPDATE submissions SET round_id=? WHERE round_id=? AND status='pending'", (to_round, from_round)
            )
            return cur.rowcount
        total = 0
        for m in members:
            cur = conn.execute(
                "UPDATE submissions SET round_id=? WHERE round_id=? AND status='pending' AND instance_id=?",
                (to_round, from_round, m),
            )
            total += cur.rowcount
        return total

    @staticmethod
    def mark_released(conn: Connection, round_id: int, members: Sequence[str], now: float) -> None:
        for m in members:
            conn.execute(
                "UPDATE submissions SET status='released', released_round=?, released_at=? "
                "WHERE round_id=? AND status='pending' AND instance_id=?",
                (round_id, now, round_id, m),
            )

    @staticmethod
    def delete_member_submissions(conn: Connection, instance_id: str) -> tuple[int, set[int]]:
        """Delete every submission of a member; returns (count, slots touched). What is released
        from them is withdrawn at the next scheduled release, not here (see ``RoundEngine.withdraw``)."""
        rows = conn.execute("SELECT id, slot FROM submissions WHERE instance_id=?", (instance_id,)).fetchall()
        conn.execute("DELETE FROM submissions WHERE instance_id=?", (instance_id,))
        return len(rows), {int(r[1]) for r in rows}

    @staticmethod
    def drop_other_versions(conn: Connection, round_id: int, first: int, end: int) -> int:
        """Delete ``round_id``'s pending submissions whose slot id is outside [first, end) (another
        codebook version's: a round aggregates one version's slots, so releases never mix; their
        members re-slot under the adopted version and contribute again). Returns how many."""
        cur = conn.execute("DELETE FROM submissions WHERE round_id=? AND status='pending' AND (slot<? OR slot>=?)",
                           (round_id, first, end))
        return int(cur.rowcount)

    # ----------------------------------------------------------------------------- address limits

    def take_token(self, address: str, capacity: float, rate: float, now: float) -> bool:
        """Take one token from ``address``'s bucket (``capacity`` tokens, ``rate`` per second), shared
        by every process on this database; False if it has none. One statement (an UPSERT whose
        refill is computed by the database), atomic on its own: no transaction and no store lock,
        so it never queues behind (or blocks) the store's writers on PostgreSQL.

        A database failure is ``CoordinatorUnavailable`` (503, retried by clients), never a bare 500."""
        with self._unavailable_on_error("checking the address limit"):
            rows = self._db.execute(_TAKE_TOKEN, (address, float(capacity) - 1.0, float(now), float(rate),
                                                  float(capacity), float(capacity), float(rate), float(rate)))
            return rows.fetchone() is not None

    def prune_tokens(self, before: float) -> int:
        """Forget the buckets untouched since ``before`` (full again: a missing bucket is a full one),
        so the table holds only addresses seen lately. Returns how many went."""
        with self._unavailable_on_error("pruning the address limits"):
            return int(self._db.execute("DELETE FROM address_buckets WHERE updated_at < ?", (float(before),)).rowcount)

    @contextmanager
    def _unavailable_on_error(self, what: str) -> Iterator[None]:
        """The driver's errors as the taxonomy's 503, as the PostgreSQL pool already turns a lost server."""
        errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        if self.dialect == "postgresql":
            import psycopg

            errors = (psycopg.Error,)
        try:
            yield
        except errors as exc:
            first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            logger.warning("the coordinator's database failed while %s: %s", what, first)
            raise CoordinatorUnavailable(f"the coordinator's database failed while {what} ({first}); nothing "
                                         "was changed, retry later") from exc

    # ----------------------------------------------------------------------------- misc

    @staticmethod
    def params_dump(params: Any) -> str:
        return json.dumps(params.model_dump(mode="json"), sort_keys=True)
