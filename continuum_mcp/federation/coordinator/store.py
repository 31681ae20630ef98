"""Durable SQLite storage of the federation coordinator.

Why SQLite with WAL, ``synchronous=FULL`` and ``BEGIN IMMEDIATE``: the coordinator acknowledges a
contribution (HTTP 202) only after its transaction has committed to disk, so a ``kill -9`` loses
nothing it acknowledged; and every check-then-write (admission tokens, credit balances, votes) runs
in one IMMEDIATE transaction, so concurrent requests can neither double-spend nor reuse a token.

What is stored is exactly what instances sent (slot, confidence, opaque phrase tokens, ciphertexts
they encrypted with a key the coordinator never sees) plus what the coordinator derived (noisy
counts, DP centroids, credits). No plaintext pattern text, phrase or single embedding exists here.
"""

from __future__ import annotations

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

import numpy as np

from continuum_mcp import _sqlite as durable
from continuum_mcp.errors import BadInvite, Conflict, InvalidInput
from continuum_mcp.federation.protocol import PatternSubmission

DB_NAME = "coordinator.db"
REPLAY_DB_NAME = "replay.db"
LEDGER_DB_NAME = "ledger.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    instance_id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    level TEXT NOT NULL,
    mode TEXT NOT NULL,
    joined_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS admission_tokens (
    token_hash TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    used_by TEXT,
    used_at REAL
);
CREATE TABLE IF NOT EXISTS rounds (
    round_id INTEGER PRIMARY KEY,
    attempt INTEGER NOT NULL DEFAULT 0,
    phase TEXT NOT NULL,
    phase_deadline REAL,
    params_json TEXT,
    opened_at REAL NOT NULL,
    next_close_at REAL NOT NULL,
    finished_at REAL,
    epsilon REAL
);
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    round_id INTEGER NOT NULL,          -- the round it takes part in (moves on carry-over)
    ct_round INTEGER NOT NULL,          -- the round its ciphertexts are bound to (never changes)
    slot INTEGER NOT NULL,
    confidence REAL NOT NULL,
    statement_ct TEXT,
    status TEXT NOT NULL DEFAULT 'pending',   -- pending | released
    released_round INTEGER,
    released_at REAL,
    submitted_at REAL NOT NULL,
    UNIQUE (instance_id, round_id, slot)
);
CREATE INDEX IF NOT EXISTS submissions_round ON submissions (round_id, status);
CREATE INDEX IF NOT EXISTS submissions_slot ON submissions (slot, status, released_at);
CREATE TABLE IF NOT EXISTS phrases (
    submission_id INTEGER NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    token TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    PRIMARY KEY (submission_id, position)
);
CREATE INDEX IF NOT EXISTS phrases_token ON phrases (token);
CREATE TABLE IF NOT EXISTS secagg_messages (
    round_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    kind TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    message_json TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (round_id, attempt, kind, instance_id)
);
CREATE TABLE IF NOT EXISTS released_slots (
    slot INTEGER PRIMARY KEY,
    true_count INTEGER NOT NULL,
    noisy_count REAL NOT NULL,
    vector BLOB,
    released_at_round INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS released_phrases (
    slot INTEGER NOT NULL,
    token TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    ct_round INTEGER NOT NULL,
    true_count INTEGER NOT NULL,
    noisy_count REAL NOT NULL,
    released_at_round INTEGER NOT NULL,
    PRIMARY KEY (slot, token)
);
CREATE TABLE IF NOT EXISTS released_statements (
    submission_id INTEGER PRIMARY KEY,
    slot INTEGER NOT NULL,
    ciphertext TEXT NOT NULL,
    ct_round INTEGER NOT NULL,
    released_at_round INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS patterns (
    slot INTEGER PRIMARY KEY,
    released_at_round INTEGER NOT NULL,
    quality_credited INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS verifications (
    slot INTEGER NOT NULL,
    instance_id TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (slot, instance_id)
);
CREATE TABLE IF NOT EXISTS votes (
    slot INTEGER NOT NULL,
    instance_id TEXT NOT NULL,
    up INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (slot, instance_id)
);
CREATE TABLE IF NOT EXISTS credit_journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    amount REAL NOT NULL,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    at REAL NOT NULL,
    UNIQUE (instance_id, kind, ref)
);
CREATE INDEX IF NOT EXISTS credit_journal_member ON credit_journal (instance_id, at);
CREATE TRIGGER IF NOT EXISTS credit_journal_no_update BEFORE UPDATE ON credit_journal
BEGIN SELECT RAISE(ABORT, 'the credit journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS credit_journal_no_delete BEFORE DELETE ON credit_journal
BEGIN SELECT RAISE(ABORT, 'the credit journal is append-only'); END;
"""


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
        self._lock = threading.RLock()
        self._conn = durable.connect(self.path, timeout=busy_timeout_s)
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """An IMMEDIATE transaction (write lock taken before any read), committed on success."""
        return durable.immediate(self._conn, self._lock)

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A consistent read (deferred transaction) without taking the write lock."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

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

    def create_admission_tokens(self, n: int) -> list[str]:
        """Mint ``n`` single-use admission tokens; only their hashes are stored."""
        if not 1 <= n <= 10_000:
            raise InvalidInput("mint between 1 and 10000 admission tokens at a time")
        tokens = [secrets.token_urlsafe(24) for _ in range(n)]
        now = time.time()
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO admission_tokens (token_hash, created_at) VALUES (?, ?)",
                [(hash_token(t), now) for t in tokens],
            )
        return tokens

    def get_member(self, instance_id: str, conn: sqlite3.Connection | None = None) -> Member | None:
        c = conn or self._conn
        with self._lock:
            row = c.execute(
                "SELECT instance_id, public_key, level, mode, joined_at FROM members WHERE instance_id=?",
                (instance_id,),
            ).fetchone()
        return None if row is None else Member(row[0], bytes(row[1]), row[2], row[3], float(row[4]))

    def member_keys(self, ids: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for i in ids:
            m = self.get_member(i)
            if m is not None:
                out[i] = m.public_key
        return out

    def members(self) -> list[Member]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT instance_id, public_key, level, mode, joined_at FROM members"
            ).fetchall()
        return [Member(r[0], bytes(r[1]), r[2], r[3], float(r[4])) for r in rows]

    def admit(
        self, instance_id: str, public_key: bytes, level: str, mode: str, token: str | None, *, private: bool
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
                    (instance_id, time.time(), hash_token(token)),
                )
            now = time.time()
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
        self, conn: sqlite3.Connection, instance_id: str, round_id: int, patterns: Sequence[PatternSubmission]
    ) -> None:
        """Replace the member's pending submission of ``round_id`` (re-posting replaces)."""
        conn.execute(
            "DELETE FROM submissions WHERE instance_id=? AND round_id=? AND status='pending'",
            (instance_id, round_id),
        )
        now = time.time()
        for p in patterns:
            cur = conn.execute(
                "INSERT INTO submissions (instance_id, round_id, ct_round, slot, confidence, statement_ct,"
                " submitted_at) VALUES (?,?,?,?,?,?,?)",
                (instance_id, round_id, round_id, p.slot, p.confidence, p.statement_ciphertext, now),
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

    def count_pending(self, instance_id: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM submissions WHERE instance_id=? AND status='pending'", (instance_id,)
            ).fetchone()
        return int(row[0])

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
        """Delete every submission of a member; returns (count, slots touched)."""
        rows = conn.execute("SELECT id, slot FROM submissions WHERE instance_id=?", (instance_id,)).fetchall()
        ids = [r[0] for r in rows]
        for sid in ids:
            conn.execute("DELETE FROM released_statements WHERE submission_id=?", (sid,))
        conn.execute("DELETE FROM submissions WHERE instance_id=?", (instance_id,))
        return len(ids), {int(r[1]) for r in rows}

    # ----------------------------------------------------------------------------- secagg log

    @staticmethod
    def record_secagg(conn: sqlite3.Connection, round_id: int, attempt: int, kind: str, instance_id: str, message_json: str) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO secagg_messages VALUES (?,?,?,?,?,?)",
            (round_id, attempt, kind, instance_id, message_json, time.time()),
        )

    # ----------------------------------------------------------------------------- window counts

    @staticmethod
    def window_slot_counts(conn: sqlite3.Connection, window_start: float) -> dict[int, int]:
        rows = conn.execute(
            "SELECT slot, COUNT(DISTINCT instance_id) FROM submissions "
            "WHERE status='released' AND released_at > ? GROUP BY slot",
            (window_start,),
        ).fetchall()
        return {int(r[0]): int(r[1]) for r in rows}

    @staticmethod
    def window_phrase_counts(conn: sqlite3.Connection, window_start: float, max_phrases: int) -> dict[tuple[int, str], int]:
        """Distinct contributors per (slot, token), counting at most ``max_phrases`` per pattern
        (the per-user bound the DP calibration assumes)."""
        rows = conn.execute(
            "SELECT s.slot, p.token, COUNT(DISTINCT s.instance_id) FROM submissions s "
            "JOIN phrases p ON p.submission_id = s.id "
            "WHERE s.status='released' AND s.released_at > ? AND p.position < ? GROUP BY s.slot, p.token",
            (window_start, max_phrases),
        ).fetchall()
        return {(int(r[0]), str(r[1])): int(r[2]) for r in rows}

    @staticmethod
    def window_levels(conn: sqlite3.Connection, window_start: float) -> set[str]:
        rows = conn.execute(
            "SELECT DISTINCT m.level FROM submissions s JOIN members m ON m.instance_id = s.instance_id "
            "WHERE s.status='released' AND s.released_at > ?",
            (window_start,),
        ).fetchall()
        return {r[0] for r in rows}

    @staticmethod
    def latest_phrase_ciphertext(conn: sqlite3.Connection, window_start: float, slot: int, token: str) -> tuple[str, int] | None:
        row = conn.execute(
            "SELECT p.ciphertext, s.ct_round FROM submissions s JOIN phrases p ON p.submission_id = s.id "
            "WHERE s.status='released' AND s.released_at > ? AND s.slot=? AND p.token=? "
            "ORDER BY s.released_at DESC, s.id DESC LIMIT 1",
            (window_start, slot, token),
        ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    @staticmethod
    def window_statements(conn: sqlite3.Connection, window_start: float, slot: int) -> list[tuple[int, str, int]]:
        rows = conn.execute(
            "SELECT id, statement_ct, ct_round FROM submissions WHERE status='released' AND released_at > ? "
            "AND slot=? AND statement_ct IS NOT NULL ORDER BY id",
            (window_start, slot),
        ).fetchall()
        return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]

    @staticmethod
    def slot_contributors(conn: sqlite3.Connection, slot: int, window_start: float | None = None) -> set[str]:
        if window_start is None:
            rows = conn.execute("SELECT DISTINCT instance_id FROM submissions WHERE slot=?", (slot,)).fetchall()
        else:
            rows = conn.execute(
                "SELECT DISTINCT instance_id FROM submissions WHERE slot=? AND status='released' AND released_at > ?",
                (slot, window_start),
            ).fetchall()
        return {r[0] for r in rows}

    # ----------------------------------------------------------------------------- releases

    @staticmethod
    def released_slot_rows(conn: sqlite3.Connection) -> dict[int, tuple[int, float, bytes | None, int]]:
        rows = conn.execute("SELECT slot, true_count, noisy_count, vector, released_at_round FROM released_slots").fetchall()
        return {int(r[0]): (int(r[1]), float(r[2]), None if r[3] is None else bytes(r[3]), int(r[4])) for r in rows}

    @staticmethod
    def released_phrase_rows(conn: sqlite3.Connection) -> dict[tuple[int, str], tuple[int, float, int]]:
        rows = conn.execute("SELECT slot, token, true_count, noisy_count, released_at_round FROM released_phrases").fetchall()
        return {(int(r[0]), str(r[1])): (int(r[2]), float(r[3]), int(r[4])) for r in rows}

    @staticmethod
    def pattern_slots(conn: sqlite3.Connection) -> set[int]:
        """Slots that currently show a released pattern (a released phrase or statement)."""
        rows = conn.execute(
            "SELECT slot FROM released_phrases UNION SELECT slot FROM released_statements"
        ).fetchall()
        return {int(r[0]) for r in rows}

    def slot_vectors(self) -> list[tuple[int, list[float], float, int]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT slot, vector, noisy_count, released_at_round FROM released_slots WHERE vector IS NOT NULL ORDER BY slot"
            ).fetchall()
        return [
            (int(r[0]), np.frombuffer(bytes(r[1]), dtype="<f4").astype(float).tolist(), float(r[2]), int(r[3]))
            for r in rows
        ]

    def released_patterns(self, conn: sqlite3.Connection, slots: Sequence[int] | None) -> list[dict[str, Any]]:
        """Released patterns (as ReleasedPattern-shaped dicts) for ``slots`` (None: all)."""
        present = sorted(self.pattern_slots(conn))
        if slots is not None:
            wanted = set(slots)
            present = [s for s in present if s in wanted]
        out: list[dict[str, Any]] = []
        for slot in present:
            phrases = conn.execute(
                "SELECT token, ciphertext, ct_round, noisy_count FROM released_phrases WHERE slot=? ORDER BY token",
                (slot,),
            ).fetchall()
            statements = conn.execute(
                "SELECT ciphertext, ct_round FROM released_statements WHERE slot=? ORDER BY submission_id", (slot,)
            ).fetchall()
            srow = conn.execute("SELECT noisy_count FROM released_slots WHERE slot=?", (slot,)).fetchone()
            prow = conn.execute("SELECT released_at_round FROM patterns WHERE slot=?", (slot,)).fetchone()
            ver = conn.execute("SELECT COUNT(*) FROM verifications WHERE slot=?", (slot,)).fetchone()[0]
            up = conn.execute("SELECT COUNT(*) FROM votes WHERE slot=? AND up=1", (slot,)).fetchone()[0]
            down = conn.execute("SELECT COUNT(*) FROM votes WHERE slot=? AND up=0", (slot,)).fetchone()[0]
            noisy = float(srow[0]) if srow is not None else max((float(p[3]) for p in phrases), default=0.0)
            out.append(
                {
                    "pattern_id": f"p-{slot}",
                    "slot": slot,
                    "phrases": [
                        {"token": p[0], "ciphertext": p[1], "round_id": int(p[2]), "noisy_contributors": float(p[3])}
                        for p in phrases
                    ],
                    "statements": [{"ciphertext": s[0], "round_id": int(s[1])} for s in statements],
                    "noisy_contributors": noisy,
                    "verifications": int(ver),
                    "votes_up": int(up),
                    "votes_down": int(down),
                    "released_at_round": int(prow[0]) if prow is not None else 0,
                }
            )
        return out

    # ----------------------------------------------------------------------------- credits

    @staticmethod
    def journal(conn: sqlite3.Connection, instance_id: str, amount: float, kind: str, ref: str, now: float | None = None) -> bool:
        """Append a credit entry; False if (member, kind, ref) was already journalled (idempotent)."""
        cur = conn.execute(
            "INSERT OR IGNORE INTO credit_journal (instance_id, amount, kind, ref, at) VALUES (?,?,?,?,?)",
            (instance_id, amount, kind, ref, time.time() if now is None else now),
        )
        return cur.rowcount == 1

    @staticmethod
    def balance(conn: sqlite3.Connection, instance_id: str) -> float:
        row = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM credit_journal WHERE instance_id=?", (instance_id,)).fetchone()
        return float(row[0])

    @staticmethod
    def sum_kind_since(conn: sqlite3.Connection, instance_id: str, kind: str, since: float) -> float:
        row = conn.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM credit_journal WHERE instance_id=? AND kind=? AND at >= ?",
            (instance_id, kind, since),
        ).fetchone()
        return float(row[0])

    @staticmethod
    def count_kind_since(conn: sqlite3.Connection, instance_id: str, kind: str, since: float) -> int:
        row = conn.execute(
            "SELECT COUNT(*) FROM credit_journal WHERE instance_id=? AND kind=? AND at >= ?",
            (instance_id, kind, since),
        ).fetchone()
        return int(row[0])

    @staticmethod
    def month_totals(conn: sqlite3.Connection, instance_id: str, now: float) -> tuple[float, float]:
        since = month_start(now)
        row = conn.execute(
            "SELECT COALESCE(SUM(CASE WHEN amount > 0 THEN amount END), 0),"
            " COALESCE(-SUM(CASE WHEN amount < 0 THEN amount END), 0)"
            " FROM credit_journal WHERE instance_id=? AND at >= ?",
            (instance_id, since),
        ).fetchone()
        return float(row[0]), float(row[1])

    # ----------------------------------------------------------------------------- misc

    def storage_files(self) -> list[Path]:
        """Every file of the storage directory (tests search them for plaintext)."""
        return sorted(p for p in self.dir.rglob("*") if p.is_file())

    @staticmethod
    def params_dump(params: Any) -> str:
        return json.dumps(params.model_dump(mode="json"), sort_keys=True)
