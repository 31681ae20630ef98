"""The coordinator database's schema (version 2): what is stored, and why nothing more.

What is stored is exactly what instances sent (slot, confidence, opaque phrase and statement
tokens, ciphertexts they encrypted with a key the coordinator never sees) plus what the
coordinator derived (noisy counts, DP centroids, credits) and its own journal of minted invites.
No plaintext pattern text, phrase or single embedding exists here.

Version 2 (protocol v2): ``submissions.statement_token``, the ``invite_journal`` table. A version 1
database is migrated by :func:`migrate`: members, admission tokens, rounds, credits and ledgers
are kept; every ciphertext-bearing row is dropped, because protocol v1 ciphertexts (random nonce,
bound to a round, no token) cannot be opened by v2 members, who would silently drop them all.
"""

from typing import Any

from continuum_mcp.federation.coordinator._attempt_sql import ATTEMPT_SCHEMA

SCHEMA_VERSION = 2

#: tables whose rows hold or derive from protocol v1 ciphertexts (children before parents)
_V1_CIPHERTEXT_TABLES = ("released_statements", "released_phrases", "released_slots", "patterns", "verifications",
                         "votes", "phrases", "submissions")

SCHEMA = """
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
    statement_token TEXT,               -- protocol v2: open mode counts contributors per statement
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
CREATE TABLE IF NOT EXISTS invite_journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    count INTEGER NOT NULL,
    via TEXT NOT NULL                   -- admin-http | local (the coordinator CLI / Python API)
);
CREATE INDEX IF NOT EXISTS invite_journal_at ON invite_journal (at);
CREATE TRIGGER IF NOT EXISTS invite_journal_no_update BEFORE UPDATE ON invite_journal
BEGIN SELECT RAISE(ABORT, 'the invite journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS invite_journal_no_delete BEFORE DELETE ON invite_journal
BEGIN SELECT RAISE(ABORT, 'the invite journal is append-only'); END;
""" + ATTEMPT_SCHEMA  # the durable secure-aggregation attempts (their own module)


def migrate(conn: Any, found: int) -> None:
    """Bring a database of schema ``found`` to SCHEMA_VERSION (inside the opening transaction;
    the schema's CREATE ... IF NOT EXISTS statements run afterwards and add new tables)."""
    if found == 1:
        for table in _V1_CIPHERTEXT_TABLES:
            conn.execute(f"DELETE FROM {table}")
        conn.execute("ALTER TABLE submissions ADD COLUMN statement_token TEXT")
        conn.execute("INSERT INTO meta VALUES ('migrated_from_v1', "
                     "'protocol v1 ciphertexts dropped: v2 members cannot open them') "
                     "ON CONFLICT (key) DO UPDATE SET value=excluded.value")

