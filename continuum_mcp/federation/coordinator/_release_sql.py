"""SQL of releases: a window's member tokens in, its release decisions written, released patterns read.

Part of the coordinator store (every function takes the connection of a store transaction); the
decisions themselves come from the pure :mod:`release` module.
"""

from __future__ import annotations

from continuum_mcp._db import Connection
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from continuum_mcp.federation.coordinator.release import PhraseDecision
from continuum_mcp.privacy.codebook import SLOT_INDEX_BITS


@dataclass(frozen=True)
class ReleasedSlot:
    true_count: int
    noisy_count: int
    vector: bytes | None
    released_at_round: int


@dataclass(frozen=True)
class ReleasedPhraseRow:
    slot: int
    ciphertext: str
    true_count: int
    noisy_count: int
    released_at_round: int


@dataclass(frozen=True)
class SlotVector:
    slot: int
    vector: list[float]
    noisy_count: int
    released_at_round: int


# ----------------------------------------------------------------------------- window counts

def window_member_tokens(conn: Connection, round_id: int) -> list[tuple[str, list[str]]]:
    """Each member of the window's release (round ``round_id``) with its tokens in the order it sent
    them (pattern by pattern): ``release.window_counts`` keeps the first C distinct per member."""
    rows = conn.execute(
        "SELECT s.instance_id, p.token FROM submissions s JOIN phrases p ON p.submission_id = s.id "
        "WHERE s.released_round=? AND s.status='released' ORDER BY s.instance_id, s.id, p.position",
        (round_id,)).fetchall()
    out: dict[str, list[str]] = {}
    for member, token in rows:
        out.setdefault(str(member), []).append(str(token))
    return list(out.items())


def remaining_counts(conn: Connection, tokens: Sequence[str]) -> dict[str, int]:
    """Distinct contributors that each token still has over every released submission (the
    deletion floor check at a scheduled release)."""
    out: dict[str, int] = {}
    for t in tokens:
        row = conn.execute(
            "SELECT COUNT(DISTINCT s.instance_id) FROM submissions s JOIN phrases p ON p.submission_id = s.id "
            "WHERE p.token=? AND s.status='released'", (t,)).fetchone()
        out[t] = int(row[0])
    return out


#: every slot id (no codebook version's range in particular)
ALL_SLOTS = (0, 1 << 32)


def version_range(slot: int) -> tuple[int, int]:
    """The slot ids of the codebook version ``slot`` belongs to (its tag's 2^12 ids)."""
    first = slot >> SLOT_INDEX_BITS << SLOT_INDEX_BITS
    return first, first + (1 << SLOT_INDEX_BITS)


def _token_source(conn: Connection, token: str, slot: int | None = None,
                  within: tuple[int, int] = ALL_SLOTS) -> tuple[int, str, int] | None:
    """(slot, ciphertext, ct_round) to serve for a token: its slot (among the slot ids in
    [``within``), one codebook version's) is the one most of its contributors put it in (ties: the
    lower slot), or ``slot`` while that still holds it."""
    if slot is None or conn.execute(
            "SELECT 1 FROM submissions s JOIN phrases p ON p.submission_id = s.id WHERE p.token=? AND s.slot=? "
            "AND s.status='released' LIMIT 1", (token, slot)).fetchone() is None:
        row = conn.execute(
            "SELECT s.slot FROM submissions s JOIN phrases p ON p.submission_id = s.id WHERE p.token=? "
            "AND s.status='released' AND s.slot>=? AND s.slot<? GROUP BY s.slot "
            "ORDER BY COUNT(DISTINCT s.instance_id) DESC, s.slot LIMIT 1", (token, *within)).fetchone()
        if row is None:
            return None
        slot = int(row[0])
    # protocol v2 ciphertexts are deterministic and slot-free: honest contributors of a phrase send
    # the same one, so the ciphertext with the most distinct contributors (over every slot) is served
    # (a member's substituted text under a popular token is outvoted here, and dropped by every
    # reader's token check anyway)
    row = conn.execute(
        "SELECT p.ciphertext, MAX(s.ct_round) FROM submissions s JOIN phrases p ON p.submission_id = s.id "
        "WHERE p.token=? AND s.status='released' GROUP BY p.ciphertext "
        "ORDER BY COUNT(DISTINCT s.instance_id) DESC, MIN(s.id) ASC LIMIT 1", (token,)).fetchone()
    return None if row is None else (slot, str(row[0]), int(row[1]))


def slot_contributors(conn: Connection, slot: int, window_start: float | None = None) -> set[str]:
    if window_start is None:
        rows = conn.execute("SELECT DISTINCT instance_id FROM submissions WHERE slot=?", (slot,)).fetchall()
    else:
        rows = conn.execute("SELECT DISTINCT instance_id FROM submissions WHERE slot=? AND status='released' "
                            "AND released_at > ?", (slot, window_start)).fetchall()
    return {r[0] for r in rows}


def slots_released_in(conn: Connection, round_id: int) -> set[int]:
    rows = conn.execute("SELECT DISTINCT slot FROM submissions WHERE released_round=?", (round_id,)).fetchall()
    return {int(r[0]) for r in rows}


def released_submitters(conn: Connection, round_id: int) -> set[str]:
    rows = conn.execute("SELECT DISTINCT instance_id FROM submissions WHERE released_round=?", (round_id,)).fetchall()
    return {r[0] for r in rows}


def last_released_round(conn: Connection) -> int | None:
    row = conn.execute("SELECT MAX(round_id) FROM rounds WHERE phase='released'").fetchone()
    return None if row[0] is None else int(row[0])


# ----------------------------------------------------------------------------- released rows

def released_slots(conn: Connection) -> dict[int, ReleasedSlot]:
    rows = conn.execute("SELECT slot, true_count, noisy_count, vector, released_at_round FROM released_slots").fetchall()
    return {int(r[0]): ReleasedSlot(int(r[1]), int(r[2]), None if r[3] is None else bytes(r[3]), int(r[4]))
            for r in rows}


def released_phrases(conn: Connection, within: tuple[int, int] = ALL_SLOTS) -> dict[str, ReleasedPhraseRow]:
    """Released phrases by token, of the slot ids in [``within``) (one codebook version's: a
    phrase token is slot-free, so the same phrase is released once per version it was sent under)."""
    rows = conn.execute("SELECT token, slot, ciphertext, true_count, noisy_count, released_at_round "
                        "FROM released_phrases WHERE slot>=? AND slot<?", within).fetchall()
    return {str(r[0]): ReleasedPhraseRow(int(r[1]), str(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows}


def pattern_slots(conn: Connection) -> set[int]:
    """Slots that currently show a released pattern (a released phrase or statement)."""
    rows = conn.execute("SELECT slot FROM released_phrases UNION SELECT slot FROM released_statements").fetchall()
    return {int(r[0]) for r in rows}


def write_window(conn: Connection, *, round_id: int, decisions: Mapping[str, PhraseDecision],
                 withdrawn: set[str], centroids: dict[int, np.ndarray] | None, statements: bool,
                 within: tuple[int, int] = ALL_SLOTS) -> set[int]:
    """Write one window's release; return the pattern slots it withdrew. New phrases go to slot
    ids in [``within``) (the round's codebook version); withdrawals and the ciphertext upkeep
    apply to every version's releases.

    Withdrawn tokens go; every other released token keeps its noisy count (sticky) but is served
    from a ciphertext that a remaining contributor sent (a deleted member's copy is dropped here, at
    the scheduled release). Kept decisions are added with their integer noisy count. A slot is
    released exactly when one of its phrases is (no separate slot selection); its count is the
    largest of its phrases' and its DP centroid the window's, where the window has one.
    Statements (open mode only): candidates are the scrubbed statements of slots with a released
    phrase; the caller then applies the per-statement floor."""
    before = pattern_slots(conn)
    for token in sorted(withdrawn):  # under every version it was released under
        conn.execute("DELETE FROM released_phrases WHERE token=?", (token,))
    for token, slot, ciphertext in conn.execute("SELECT token, slot, ciphertext FROM released_phrases").fetchall():
        if conn.execute("SELECT 1 FROM phrases WHERE token=? AND ciphertext=? LIMIT 1",
                        (token, ciphertext)).fetchone() is not None:
            continue
        src = _token_source(conn, token, int(slot), version_range(int(slot)))
        if src is None:
            conn.execute("DELETE FROM released_phrases WHERE token=? AND slot=?", (token, slot))
        else:
            conn.execute("UPDATE released_phrases SET slot=?, ciphertext=?, ct_round=? WHERE token=? AND slot=?",
                         (src[0], src[1], src[2], token, slot))
    for token, d in sorted(decisions.items()):
        src = _token_source(conn, token, within=within) if d.keep else None
        if src is None:
            continue
        conn.execute("INSERT INTO released_phrases (slot, token, ciphertext, ct_round, true_count,"
                     " noisy_count, released_at_round) VALUES (?,?,?,?,?,?,?) ON CONFLICT (slot, token) DO UPDATE SET"
                     " ciphertext=excluded.ciphertext, ct_round=excluded.ct_round, true_count=excluded.true_count,"
                     " noisy_count=excluded.noisy_count, released_at_round=excluded.released_at_round",
                     (src[0], token, src[1], src[2], d.true_count, int(d.noisy_count), round_id))
    old_slots = released_slots(conn)
    conn.execute("DELETE FROM released_slots")
    for slot, true_count, noisy in conn.execute(
            "SELECT slot, MAX(true_count), MAX(noisy_count) FROM released_phrases GROUP BY slot").fetchall():
        old = old_slots.get(int(slot))
        vec = centroids.get(int(slot)) if centroids else None
        blob = vec.tobytes() if vec is not None else (old.vector if old is not None else None)
        conn.execute("INSERT INTO released_slots (slot, true_count, noisy_count, vector, released_at_round)"
                     " VALUES (?,?,?,?,?)", (int(slot), int(true_count), int(noisy), blob,
                                            old.released_at_round if old is not None else round_id))
    conn.execute("DELETE FROM released_statements WHERE submission_id NOT IN (SELECT id FROM submissions) "
                 "OR slot NOT IN (SELECT slot FROM released_phrases)")
    if statements:
        # candidates only: the engine then keeps a statement only where that statement itself has
        # min_contributors contributors (``_integrity_sql.enforce_statement_floor``), once per slot
        conn.execute(
            "INSERT INTO released_statements (submission_id, slot, ciphertext, ct_round, released_at_round) "
            "SELECT id, slot, statement_ct, ct_round, ? FROM submissions WHERE status='released' AND "
            "statement_ct IS NOT NULL AND statement_token IS NOT NULL AND slot IN (SELECT slot FROM released_phrases) "
            "ON CONFLICT (submission_id) DO NOTHING",
            (round_id,))
    after = pattern_slots(conn)
    for slot in after - before:
        conn.execute("INSERT INTO patterns (slot, released_at_round) VALUES (?, ?) "
                     "ON CONFLICT(slot) DO UPDATE SET released_at_round=excluded.released_at_round", (slot, round_id))
    return before - after


def slot_vectors(conn: Connection) -> list[SlotVector]:
    rows = conn.execute("SELECT slot, vector, noisy_count, released_at_round FROM released_slots "
                        "WHERE vector IS NOT NULL ORDER BY slot").fetchall()
    return [SlotVector(int(r[0]), np.frombuffer(bytes(r[1]), dtype="<f4").astype(float).tolist(), int(r[2]),
                       int(r[3])) for r in rows]


def released_patterns(conn: Connection, slots: Sequence[int] | None) -> list[dict[str, Any]]:
    """Released patterns (as ReleasedPattern-shaped dicts) for ``slots`` (None: all).

    Three set queries for all the slots (the slots with their counts, verifications and votes;
    their phrases; their statements), not several per slot: on PostgreSQL every statement is a
    round trip and a parse on the server, and per-slot reads made a query cost 9 ms of coordinator CPU."""
    if slots is not None and not slots:
        return []
    wanted = sorted(set(slots)) if slots is not None else []
    facts = conn.execute(
        "SELECT p.slot, (SELECT noisy_count FROM released_slots r WHERE r.slot = p.slot),"
        " (SELECT released_at_round FROM patterns a WHERE a.slot = p.slot),"
        " (SELECT COUNT(*) FROM verifications v WHERE v.slot = p.slot),"
        " (SELECT COALESCE(SUM(up), 0) FROM votes w WHERE w.slot = p.slot),"
        " (SELECT COALESCE(SUM(1 - up), 0) FROM votes w WHERE w.slot = p.slot)"
        " FROM (SELECT slot FROM released_phrases UNION SELECT slot FROM released_statements) p"
        + (f" WHERE p.slot IN ({','.join('?' * len(wanted))})" if slots is not None else "") + " ORDER BY p.slot",
        wanted).fetchall()
    if not facts:
        return []
    present = [int(f[0]) for f in facts]
    within = f"IN ({','.join('?' * len(present))})"

    def by_slot(sql: str) -> dict[int, list[tuple[Any, ...]]]:
        out: dict[int, list[tuple[Any, ...]]] = {}
        for row in conn.execute(sql, present).fetchall():
            out.setdefault(int(row[0]), []).append(tuple(row[1:]))
        return out

    phrases = by_slot(f"SELECT slot, token, ciphertext, ct_round, noisy_count FROM released_phrases WHERE slot {within} "
                      "ORDER BY slot, token")
    statements = by_slot(f"SELECT r.slot, r.ciphertext, s.statement_token FROM released_statements r JOIN submissions s "
                         f"ON s.id = r.submission_id WHERE r.slot {within} AND s.statement_token IS NOT NULL "
                         "ORDER BY r.slot, r.submission_id")
    out: list[dict[str, Any]] = []
    for slot, slot_count, released_at, verified, up, down in facts:
        slot = int(slot)
        ph = phrases.get(slot, [])
        noisy = int(slot_count) if slot_count is not None else max((int(p[3]) for p in ph), default=0)
        out.append({
            "pattern_id": f"p-{slot}", "slot": slot,
            "phrases": [{"token": p[0], "ciphertext": p[1], "noisy_contributors": int(p[3])} for p in ph],
            "statements": [{"token": st[1], "ciphertext": st[0]} for st in statements.get(slot, [])],
            "noisy_contributors": noisy, "verifications": int(verified), "votes_up": int(up),
            "votes_down": int(down), "released_at_round": int(released_at or 0),
        })
    return out


# ----------------------------------------------------------------------------- verify and vote

def record_verification(conn: Connection, slot: int, instance_id: str, now: float) -> bool:
    """False if this member already verified this slot."""
    cur = conn.execute("INSERT INTO verifications VALUES (?,?,?) ON CONFLICT (slot, instance_id) DO NOTHING",
                       (slot, instance_id, now))
    return cur.rowcount == 1


def record_vote(conn: Connection, slot: int, instance_id: str, up: bool, now: float) -> None:
    conn.execute("INSERT INTO votes VALUES (?,?,?,?) ON CONFLICT (slot, instance_id) DO UPDATE SET up=excluded.up, "
                 "at=excluded.at", (slot, instance_id, int(up), now))


def vote_counts(conn: Connection, slot: int) -> tuple[int, int]:
    row = conn.execute("SELECT COALESCE(SUM(up), 0), COALESCE(SUM(1 - up), 0) FROM votes WHERE slot=?",
                       (slot,)).fetchone()
    return int(row[0]), int(row[1])


def claim_quality_credit(conn: Connection, slot: int) -> bool:
    """Mark the slot's quality credit as paid; False if it was paid already (or no pattern)."""
    cur = conn.execute("UPDATE patterns SET quality_credited=1 WHERE slot=? AND quality_credited=0", (slot,))
    return cur.rowcount == 1
