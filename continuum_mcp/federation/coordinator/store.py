"""Durable SQLite storage of the federation coordinator (every SQL statement of the coordinator
lives in this module and its two parts, ``_release_sql`` and ``_credit_sql``).

Why SQLite with WAL, ``synchronous=FULL`` and ``BEGIN IMMEDIATE`` (via ``continuum_mcp._sqlite``):
the coordinator acknowledges a contribution (HTTP 202) only after its transaction has committed to
disk, so a ``kill -9`` loses nothing it acknowledged; and every check-then-write (admission tokens,
credit balances, votes) runs in one IMMEDIATE transaction, so concurrent requests can neither
double-spend nor reuse a token.

Why refuse rather than repair: the database *is* the federation (members, rounds, credits). A file
that cannot be read, or one that is empty although it exists, means state was lost or damaged;
silently starting a new federation over it would forget every member and spend. ``StoreCorrupt``
says so and the coordinator does not start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from continuum_mcp._sqlite import Database, connect
from continuum_mcp.errors import BadInvite, Conflict, InvalidInput, StoreCorrupt, TooLarge
from continuum_mcp.federation.coordinator._schema import SCHEMA, SCHEMA_VERSION, migrate
from continuum_mcp.federation.protocol import PatternSubmission

DB_NAME = "coordinator.db"
REPLAY_DB_NAME = "replay.db"
LEDGER_DB_NAME = "ledger.db"



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


class CoordinatorStore:
    """One SQLite database (``coordinator.db``) in the storage directory.

    A single connection guarded by a re-entrant lock serves all threads; every write is one
    ``BEGIN IMMEDIATE`` transaction so other processes (e.g. ``coordinator invite``) are safe too.
    """

    def __init__(self, storage_path: str | Path, busy_timeout_s: float = 30.0) -> None:
        self.dir = Path(storage_path)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / DB_NAME
        refuse_lost_state(self.dir)
        self._db = Database(self.path, SCHEMA, version=SCHEMA_VERSION, migrate=migrate, timeout=busy_timeout_s,
                            private=True,
                            what="coordinator database")
        self._lock = self._db.lock
        self._conn = self._db.conn
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._timeout = busy_timeout_s
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []

    def close(self) -> None:
        with self._lock:
            for c in self._reader_conns:
                c.close()
            self._reader_conns.clear()
        self._db.close()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection: WAL readers do not wait for the writer or each other."""
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = connect(self.path, timeout=self._timeout)
            conn.execute("PRAGMA query_only = ON")
            with self._lock:
                self._reader_conns.append(conn)
            self._readers.conn = conn
        return conn

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """An IMMEDIATE transaction (write lock taken before any read), committed on success."""
        return self._db.tx()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A consistent read (deferred transaction) without taking the write lock, on this thread's
        own connection, so reads run beside each other and beside a write. Inside this thread's
        own write transaction it reads that transaction (its uncommitted writes included)."""
        if self._lock._is_owned():  # type: ignore[attr-defined]
            yield self._conn
            return
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

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
        tokens = [secrets.token_urlsafe(24) for _ in range(n)]
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
        with self._lock:
            rows = self._conn.execute("SELECT at, count, via FROM invite_journal ORDER BY id").fetchall()
        return [(float(a), int(c), str(v)) for a, c, v in rows]

    def get_member(self, instance_id: str, conn: sqlite3.Connection | None = None) -> Member | None:
        with self.reading() if conn is None else contextlib.nullcontext(conn) as c:
            row = c.execute(
                "SELECT instance_id, public_key, level, mode, joined_at FROM members WHERE instance_id=?",
                (instance_id,),
            ).fetchone()
        return None if row is None else Member(row[0], bytes(row[1]), row[2], row[3], float(row[4]))

    def member_keys(self, ids: Sequence[str], conn: sqlite3.Connection | None = None) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for i in ids:
            m = self.get_member(i, conn)
            if m is not None:
                out[i] = m.public_key
        return out

    @staticmethod
    def remove_member(conn: sqlite3.Connection, instance_id: str) -> None:
        """End a membership: its votes and verifications go too (submissions are deleted first)."""
        for table in ("votes", "verifications", "members"):
            conn.execute(f"DELETE FROM {table} WHERE instance_id=?", (instance_id,))

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
            return Member(instance_id, public_key, level, mode, now), True

    # ----------------------------------------------------------------------------- rounds

    def current_round(self, conn: sqlite3.Connection | None = None) -> RoundRow | None:
        c = conn or self._conn
        with self._lock:
            row = c.execute(
                "SELECT round_id, attempt, phase, phase_deadline, params_json, opened_at, next_close_at,"
                " finished_at, epsilon FROM rounds ORDER BY round_id DESC LIMIT 1"
            ).fetchone()
        return None if row is None else RoundRow(*row)

    def get_round(self, round_id: int) -> RoundRow | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT round_id, attempt, phase, phase_deadline, params_json, opened_at, next_close_at,"
                " finished_at, epsilon FROM rounds WHERE round_id=?",
                (round_id,),
            ).fetchone()
        return None if row is None else RoundRow(*row)

    @staticmethod
    def open_round(conn: sqlite3.Connection, round_id: int, now: float, interval: float) -> None:
        conn.execute(
            "INSERT INTO rounds (round_id, attempt, phase, opened_at, next_close_at) VALUES (?, 0, 'collecting', ?, ?)",
            (round_id, now, now + interval),
        )

    @staticmethod
    def set_round(conn: sqlite3.Connection, round_id: int, **fields: Any) -> None:
        allowed = {"attempt", "phase", "phase_deadline", "params_json", "next_close_at", "finished_at", "epsilon"}
        if not fields or not set(fields) <= allowed:
            raise InvalidInput(f"bad round fields {sorted(fields)}")
        cols = ", ".join(f"{k}=?" for k in fields)
        conn.execute(f"UPDATE rounds SET {cols} WHERE round_id=?", (*fields.values(), round_id))

    # ----------------------------------------------------------------------------- submissions

    def replace_submission(
        self, conn: sqlite3.Connection, instance_id: str, round_id: int, patterns: Sequence[PatternSubmission],
        now: float,
    ) -> None:
        """Replace the member's pending submission of ``round_id`` (re-posting replaces)."""
        conn.execute(
            "DELETE FROM submissions WHERE instance_id=? AND round_id=? AND status='pending'",
            (instance_id, round_id),
        )
        for p in patterns:
            cur = conn.execute(
                "INSERT INTO submissions (instance_id, round_id, ct_round, slot, confidence, statement_ct,"
                " statement_token, submitted_at) VALUES (?,?,?,?,?,?,?,?)",
                (instance_id, round_id, round_id, p.slot, p.confidence, p.statement_ciphertext, p.statement_token,
                 now),
            )
            sid = cur.lastrowid
            conn.executemany(
                "INSERT INTO phrases (submission_id, position, token, ciphertext) VALUES (?,?,?,?)",
                [(sid, k, ph.token, ph.ciphertext) for k, ph in enumerate(p.phrases)],
            )

    @staticmethod
    def pending_submitters(conn: sqlite3.Connection, round_id: int) -> dict[str, int]:
        """Members with a pending submission in ``round_id`` -> number of patterns."""
        rows = conn.execute(
            "SELECT instance_id, COUNT(*) FROM submissions WHERE round_id=? AND status='pending' GROUP BY instance_id",
            (round_id,),
        ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def pending_snapshot(self, instance_id: str) -> list[tuple[int, int, int]]:
        """(round_id, ct_round, slot) of a member's pending submissions (tests, status)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT round_id, ct_round, slot FROM submissions WHERE instance_id=? AND status='pending' ORDER BY slot",
                (instance_id,),
            ).fetchall()
        return [(int(a), int(b), int(c)) for a, b, c in rows]

    @staticmethod
    def carry_over(conn: sqlite3.Connection, from_round: int, to_round: int, members: Sequence[str] | None = None) -> int:
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
    def mark_released(conn: sqlite3.Connection, round_id: int, members: Sequence[str], now: float) -> None:
        for m in members:
            conn.execute(
                "UPDATE submissions SET status='released', released_round=?, released_at=? "
                "WHERE round_id=? AND status='pending' AND instance_id=?",
                (round_id, now, round_id, m),
            )

    @staticmethod
    def delete_member_submissions(conn: sqlite3.Connection, instance_id: str) -> tuple[int, set[int]]:
        """Delete every submission of a member; returns (count, slots touched). What is released
        from them is withdrawn at the next scheduled release, not here (see ``RoundEngine.withdraw``)."""
        rows = conn.execute("SELECT id, slot FROM submissions WHERE instance_id=?", (instance_id,)).fetchall()
        conn.execute("DELETE FROM submissions WHERE instance_id=?", (instance_id,))
        return len(rows), {int(r[1]) for r in rows}

    # ----------------------------------------------------------------------------- secagg log

    @staticmethod
    def record_secagg(conn: sqlite3.Connection, round_id: int, attempt: int, kind: str, instance_id: str,
                      message_json: str, now: float) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO secagg_messages VALUES (?,?,?,?,?,?)",
            (round_id, attempt, kind, instance_id, message_json, now),
        )

    # ----------------------------------------------------------------------------- misc

    def storage_files(self) -> list[Path]:
        """Every file of the storage directory (tests search them for plaintext)."""
        return sorted(p for p in self.dir.rglob("*") if p.is_file())

    @staticmethod
    def params_dump(params: Any) -> str:
        return json.dumps(params.model_dump(mode="json"), sort_keys=True)
