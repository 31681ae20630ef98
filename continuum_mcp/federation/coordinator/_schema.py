"""The coordinator database's schema (version 4): what is stored, and why nothing more.

What is stored is exactly what instances sent (slot, confidence, opaque phrase and statement
tokens, ciphertexts they encrypted with a key the coordinator never sees) plus what the
coordinator derived (noisy counts, DP centroids, credits) and its own journal of minted invites.
No plaintext pattern text, phrase or single embedding exists here.

Version 2 (protocol v2): ``submissions.statement_token``, the ``invite_journal`` table. A version 1
database is migrated by :func:`migrate`: members, admission tokens, rounds, credits and ledgers
are kept; every ciphertext-bearing row is dropped, because protocol v1 ciphertexts (random nonce,
bound to a round, no token) cannot be opened by v2 members, who would silently drop them all.

Version 3 (no new table): the secure-aggregation log of an attempt is deleted in the transaction
that ends it (:func:`._attempt_sql.prune`). A version 2 database, written before that, still holds
the log of every attempt that ever ran, most of its size; :func:`migrate` deletes, once, exactly
the logs the new code would have deleted (:func:`._attempt_sql.ended_sessions` says which).

Version 4: the ``address_buckets`` table, the per-address token buckets of callers that are not
members, shared by every coordinator process on the database (so N processes hold one limit, not
N). A row is a client address as the coordinator saw it, kept only while its bucket refills (rows
untouched for a minute are pruned). Nothing to migrate: the schema's ``CREATE TABLE IF NOT
EXISTS`` adds it to a version 3 database, and a missing row is a full bucket.
"""

import json
import logging
from typing import Any

from continuum_mcp.federation.coordinator import _attempt_sql as asql
from continuum_mcp.federation.coordinator._attempt_sql import ATTEMPT_SCHEMA
from continuum_mcp.federation.governance.guarantee import session_label
from continuum_mcp.federation.protocol import SECAGG_PHASES

SCHEMA_VERSION = 4

logger = logging.getLogger(__name__)

#: the store's component name on PostgreSQL (``store.DB_NAME`` without ``.db``): its write lock
_COMPONENT = "coordinator"

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
CREATE TABLE IF NOT EXISTS address_buckets (
    address TEXT PRIMARY KEY,           -- a client address with its route class, e.g. admin:203.0.113.7
    tokens REAL NOT NULL,               -- what was left at updated_at (refilled by the next take)
    updated_at REAL NOT NULL            -- wall time of the last take (the engine's clock)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS address_buckets_updated ON address_buckets (updated_at);
""" + ATTEMPT_SCHEMA  # the durable secure-aggregation attempts (their own module)


def migrate(conn: Any, found: int) -> None:
    """Bring a database of schema ``found`` to SCHEMA_VERSION (inside the opening transaction;
    the schema's CREATE ... IF NOT EXISTS statements run afterwards and add new tables)."""
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        # the opening holds only the schema lock while processes of the old release may still be
        # writing: the store's own lock keeps an attempt one of them opens now from being read as over
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (_COMPONENT,))
    if found == 1:
        for table in _V1_CIPHERTEXT_TABLES:
            conn.execute(f"DELETE FROM {table}")
        conn.execute("ALTER TABLE submissions ADD COLUMN statement_token TEXT")
        conn.execute("INSERT INTO meta VALUES ('migrated_from_v1', "
                     "'protocol v1 ciphertexts dropped: v2 members cannot open them') "
                     "ON CONFLICT (key) DO UPDATE SET value=excluded.value")
    if found <= 2:
        drop_ended_logs(conn)
    # 3 -> 4 adds only a table (address_buckets), which the schema's CREATE ... IF NOT EXISTS makes


def drop_ended_logs(conn: Any) -> int:
    """Delete the secure-aggregation logs of the attempts that are over (what the coordinator now
    deletes when it ends an attempt); returns the rows deleted.

    What "over" means, from the stored state: an attempt runs only if restart recovery would
    replay it, i.e. the release attempt the newest ``rounds`` row names while that row is in a
    secure-aggregation phase (the session id in its ``params_json``, as ``RoundEngine._sync``
    reads it), and, for each proposal with ``gov_proposals.in_round`` > 0, attempt ``in_round - 1``
    of its round ``finished_rounds + 1`` (as ``SessionRounds.current`` reads it). Every other
    attempt was released, aborted or superseded. :func:`._attempt_sql.ended_sessions` applies this
    to the logged session ids, keeping as the session code does a retried session attempt's
    (keys-only) log. The older ``secagg_messages`` table (coordinators before the log) is read
    only for the newest round's current attempt (to charge a lost attempt's masked inputs), so
    every other row of it goes too.

    Cost: a few statements whatever the log's size (one ``DELETE ... IN`` per 500 ended attempts;
    no loop per row): 3.3 s for a 432 MB log of 300,000 rows on SQLite, 1.2 s on PostgreSQL. The
    space is reused by the store's next writes; the file does not shrink (SQLite: ``VACUUM`` with
    the coordinator stopped; PostgreSQL: ``VACUUM FULL``), as rewriting the whole database is what
    must not happen while members wait."""
    tables = _tables(conn)
    cur = conn.execute("SELECT round_id, attempt, phase, params_json FROM rounds ORDER BY round_id DESC LIMIT 1"
                       ).fetchone()
    aggregating = cur is not None and cur[2] in SECAGG_PHASES
    deleted = 0
    if "secagg_messages" in tables:
        if aggregating:
            deleted += int(conn.execute("DELETE FROM secagg_messages WHERE round_id <> ? OR attempt <> ?",
                                        (cur[0], cur[1])).rowcount)
        else:
            deleted += int(conn.execute("DELETE FROM secagg_messages").rowcount)
    fed = conn.execute("SELECT value FROM meta WHERE key='federation_id'").fetchone()
    if "secagg_log" not in tables or fed is None:  # no log yet; or no node ever ran rounds here
        return deleted
    federation = str(fed[0])
    running: set[str] = set()
    if aggregating and cur[3] is not None:  # what RoundEngine._sync replays
        try:
            sid = json.loads(cur[3]).get("session_id")
        except (ValueError, AttributeError):
            sid = None
        if not isinstance(sid, str):  # which log is running cannot be told: keep every log (only space is lost)
            logger.warning("round %s's parameters name no secure-aggregation session: old logs kept", cur[0])
            return deleted
        running.add(sid)
    if "gov_proposals" in tables:  # what SessionRounds.current replays: in_round = the running attempt + 1
        rows = conn.execute("SELECT proposal_id, finished_rounds, in_round FROM gov_proposals WHERE in_round > 0")
        running |= {f"{session_label(federation, str(p))}/r{int(r) + 1}/a{int(a) - 1}" for p, r, a in rows.fetchall()}
    logged = [str(r[0]) for r in conn.execute("SELECT DISTINCT session_id FROM secagg_log").fetchall()]
    ended = asql.ended_sessions(logged, federation, running)
    for start in range(0, len(ended), 500):
        batch = ended[start:start + 500]
        deleted += int(conn.execute(f"DELETE FROM secagg_log WHERE session_id IN ({', '.join('?' * len(batch))})",
                                    batch).rowcount)
    return deleted


def _tables(conn: Any) -> set[str]:
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
    else:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {str(r[0]) for r in rows.fetchall()}
