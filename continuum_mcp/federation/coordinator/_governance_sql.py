"""Every SQL statement of governance: proposals, the signed statements as received, session rounds.

Portable SQL (SQLite and PostgreSQL): ``?`` placeholders, ``ON CONFLICT``, no ``rowid``; the
statement sequence number is taken as ``MAX(seq) + 1`` inside the caller's write transaction.
The tables are created with ``IF NOT EXISTS`` when the governance service starts, so they need
no schema version of their own (the coordinator schema is untouched).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from continuum_mcp._sqlite import split_sql

SCHEMA = """
CREATE TABLE IF NOT EXISTS gov_proposals (
    proposal_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    proposer TEXT NOT NULL,
    deadline INTEGER NOT NULL,
    rounds INTEGER NOT NULL,
    phase TEXT NOT NULL,
    finished_rounds INTEGER NOT NULL DEFAULT 0,
    in_round INTEGER NOT NULL DEFAULT 0,  -- 0 between rounds, else the running attempt + 1
    signed_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    result_json TEXT,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS gov_statements (
    seq INTEGER PRIMARY KEY,
    proposal_id TEXT NOT NULL,
    type TEXT NOT NULL,
    signer TEXT NOT NULL,
    signed_json TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS gov_statements_by_proposal ON gov_statements (proposal_id, seq);
CREATE TABLE IF NOT EXISTS gov_rounds (
    proposal_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    noisy_participants REAL,
    epsilon REAL NOT NULL,
    participants_json TEXT NOT NULL,
    result_json TEXT,
    finished_at REAL NOT NULL,
    PRIMARY KEY (proposal_id, round)
);
"""


@dataclass(frozen=True)
class ProposalRow:
    proposal_id: str
    kind: str
    title: str
    proposer: str
    deadline: int
    rounds: int
    phase: str
    finished_rounds: int
    in_round: int
    signed_json: str
    result_json: str | None
    reason: str


@dataclass(frozen=True)
class RoundRecord:
    round: int
    outcome: str
    noisy_participants: float | None
    epsilon: float
    participants: list[str]
    finished_at: float
    result_json: str | None = None


_PROPOSAL_COLS = ("proposal_id, kind, title, proposer, deadline, rounds, phase, finished_rounds, in_round, signed_json, "
                  "result_json, reason")


def ensure_schema(conn: Any) -> None:
    for stmt in split_sql(SCHEMA):
        conn.execute(stmt)


def insert_proposal(conn: Any, row: ProposalRow, now: float) -> bool:
    """Store a new proposal; False if it exists already (a re-post of the same signed proposal)."""
    cur = conn.execute(
        f"INSERT INTO gov_proposals ({_PROPOSAL_COLS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (proposal_id) DO NOTHING",
        (row.proposal_id, row.kind, row.title, row.proposer, row.deadline, row.rounds, row.phase, row.finished_rounds,
         row.in_round, row.signed_json, row.result_json, row.reason, now))
    return cur.rowcount == 1


def proposals(conn: Any, proposal_id: str | None = None) -> list[ProposalRow]:
    where, args = ("WHERE proposal_id = ?", (proposal_id,)) if proposal_id else ("", ())
    rows = conn.execute(f"SELECT {_PROPOSAL_COLS} FROM gov_proposals {where} ORDER BY created_at, proposal_id",
                        args).fetchall()
    return [ProposalRow(*r) for r in rows]


def set_proposal(conn: Any, proposal_id: str, **fields: Any) -> None:
    allowed = {"phase", "finished_rounds", "in_round", "result_json", "reason"}
    if not fields or set(fields) - allowed:
        raise ValueError(f"unknown proposal fields {sorted(set(fields) - allowed)}")
    cols = ", ".join(f"{k} = ?" for k in fields)
    conn.execute(f"UPDATE gov_proposals SET {cols} WHERE proposal_id = ?", (*fields.values(), proposal_id))


def add_statement(conn: Any, proposal_id: str, type_: str, signer: str, signed_json: str, now: float) -> int:
    seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM gov_statements").fetchone()[0]
    conn.execute("INSERT INTO gov_statements (seq, proposal_id, type, signer, signed_json, received_at) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (seq, proposal_id, type_, signer, signed_json, now))
    return int(seq)


#: the ``meta`` row that every admission and departure moves on (``bump_members_version``)
MEMBERS_VERSION = "members_version"


def bump_members_version(conn: Any) -> None:
    """In the transaction that admits or removes a member: the adoption key's membership part."""
    conn.execute("INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key) DO UPDATE "
                 "SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT)", (MEMBERS_VERSION,))


def adoption_key(conn: Any) -> tuple[Any, ...]:
    """What an adoption count depends on, read from the database (so it is the same key in every
    coordinator process on it): the last statement's sequence number (any new ballot, vote or
    opt-out), the codebook sessions completed, and the membership's version (``MEMBERS_VERSION``,
    moved on by every admission and departure: a departed member's votes stop counting, a new
    member's count). One statement on every request, and none that reads the members table:
    counting a million members per request is what the key is there to avoid."""
    row = conn.execute(
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM gov_statements), "
        "(SELECT COUNT(*) FROM gov_proposals WHERE kind = ? AND phase = ?), "
        "(SELECT value FROM meta WHERE key = ?)",
        ("codebook_refinement", "completed", MEMBERS_VERSION)).fetchone()
    return int(row[0]), int(row[1]), row[2]


def statements(conn: Any, proposal_id: str) -> list[str]:
    """The signed statements of a proposal as received (JSON), in arrival order."""
    rows = conn.execute("SELECT signed_json FROM gov_statements WHERE proposal_id = ? ORDER BY seq",
                        (proposal_id,)).fetchall()
    return [r[0] for r in rows]


def record_round(conn: Any, proposal_id: str, rec: RoundRecord) -> None:
    conn.execute(
        "INSERT INTO gov_rounds (proposal_id, round, outcome, noisy_participants, epsilon, participants_json, "
        "result_json, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (proposal_id, round) DO NOTHING",
        (proposal_id, rec.round, rec.outcome, rec.noisy_participants, rec.epsilon, json.dumps(rec.participants),
         rec.result_json, rec.finished_at))


def rounds(conn: Any, proposal_id: str) -> list[RoundRecord]:
    rows = conn.execute("SELECT round, outcome, noisy_participants, epsilon, participants_json, finished_at, "
                        "result_json FROM gov_rounds WHERE proposal_id = ? ORDER BY round", (proposal_id,)).fetchall()
    return [RoundRecord(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]


__all__ = ["MEMBERS_VERSION", "SCHEMA", "ProposalRow", "RoundRecord", "add_statement", "adoption_key",
           "bump_members_version", "ensure_schema", "insert_proposal", "proposals",
           "record_round", "rounds", "set_proposal", "statements"]
