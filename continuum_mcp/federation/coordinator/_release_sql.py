"""SQL of releases: window counts in, release decisions written, released patterns read.

Part of the coordinator store (every function takes the connection of a store transaction); the
decisions themselves come from the pure :mod:`release` module.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from continuum_mcp.federation.coordinator.release import ReleasePlan


@dataclass(frozen=True)
class ReleasedSlot:
    true_count: int
    noisy_count: float
    vector: bytes | None
    released_at_round: int


@dataclass(frozen=True)
class ReleasedPhraseRow:
    true_count: int
    noisy_count: float
    released_at_round: int


@dataclass(frozen=True)
class SlotVector:
    slot: int
    vector: list[float]
    noisy_count: float
    released_at_round: int


# ----------------------------------------------------------------------------- window counts

def window_slot_counts(conn: sqlite3.Connection, window_start: float) -> dict[int, int]:
    rows = conn.execute(
        "SELECT slot, COUNT(DISTINCT instance_id) FROM submissions "
        "WHERE status='released' AND released_at > ? GROUP BY slot", (window_start,)).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


def window_phrase_counts(conn: sqlite3.Connection, window_start: float, max_phrases: int) -> dict[tuple[int, str], int]:
    """Distinct contributors per (slot, token), counting at most ``max_phrases`` per pattern
    (the per-user bound the DP calibration assumes)."""
    rows = conn.execute(
        "SELECT s.slot, p.token, COUNT(DISTINCT s.instance_id) FROM submissions s "
        "JOIN phrases p ON p.submission_id = s.id "
        "WHERE s.status='released' AND s.released_at > ? AND p.position < ? GROUP BY s.slot, p.token",
        (window_start, max_phrases)).fetchall()
    return {(int(r[0]), str(r[1])): int(r[2]) for r in rows}


def window_levels(conn: sqlite3.Connection, window_start: float) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT m.level FROM submissions s JOIN members m ON m.instance_id = s.instance_id "
        "WHERE s.status='released' AND s.released_at > ?", (window_start,)).fetchall()
    return {r[0] for r in rows}


def slot_contributors(conn: sqlite3.Connection, slot: int, window_start: float | None = None) -> set[str]:
    if window_start is None:
        rows = conn.execute("SELECT DISTINCT instance_id FROM submissions WHERE slot=?", (slot,)).fetchall()
    else:
        rows = conn.execute("SELECT DISTINCT instance_id FROM submissions WHERE slot=? AND status='released' "
                            "AND released_at > ?", (slot, window_start)).fetchall()
    return {r[0] for r in rows}


def slots_released_in(conn: sqlite3.Connection, round_id: int) -> set[int]:
    rows = conn.execute("SELECT DISTINCT slot FROM submissions WHERE released_round=?", (round_id,)).fetchall()
    return {int(r[0]) for r in rows}


def released_submitters(conn: sqlite3.Connection, round_id: int) -> set[str]:
    rows = conn.execute("SELECT DISTINCT instance_id FROM submissions WHERE released_round=?", (round_id,)).fetchall()
    return {r[0] for r in rows}


def last_released_round(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT MAX(round_id) FROM rounds WHERE phase='released'").fetchone()
    return None if row[0] is None else int(row[0])


# ----------------------------------------------------------------------------- released rows

def released_slots(conn: sqlite3.Connection) -> dict[int, ReleasedSlot]:
    rows = conn.execute("SELECT slot, true_count, noisy_count, vector, released_at_round FROM released_slots").fetchall()
    return {int(r[0]): ReleasedSlot(int(r[1]), float(r[2]), None if r[3] is None else bytes(r[3]), int(r[4]))
            for r in rows}


def released_phrases(conn: sqlite3.Connection) -> dict[tuple[int, str], ReleasedPhraseRow]:
    rows = conn.execute("SELECT slot, token, true_count, noisy_count, released_at_round FROM released_phrases").fetchall()
    return {(int(r[0]), str(r[1])): ReleasedPhraseRow(int(r[2]), float(r[3]), int(r[4])) for r in rows}


def pattern_slots(conn: sqlite3.Connection) -> set[int]:
    """Slots that currently show a released pattern (a released phrase or statement)."""
    rows = conn.execute("SELECT slot FROM released_phrases UNION SELECT slot FROM released_statements").fetchall()
    return {int(r[0]) for r in rows}


def _latest_phrase_ciphertext(conn: sqlite3.Connection, window_start: float, slot: int, token: str
                              ) -> tuple[str, int] | None:
    # protocol v2 ciphertexts are deterministic: honest contributors of a phrase send the same one,
    # so the ciphertext with the most distinct contributors is served (a member's substituted text
    # under a popular token is outvoted here, and dropped by every reader's token check anyway)
    row = conn.execute(
        "SELECT p.ciphertext, MAX(s.ct_round) FROM submissions s JOIN phrases p ON p.submission_id = s.id "
        "WHERE s.status='released' AND s.released_at > ? AND s.slot=? AND p.token=? "
        "GROUP BY p.ciphertext ORDER BY COUNT(DISTINCT s.instance_id) DESC, MIN(s.id) ASC LIMIT 1",
        (window_start, slot, token)).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def _window_statements(conn: sqlite3.Connection, window_start: float, slot: int) -> list[tuple[int, str, int]]:
    rows = conn.execute(
        "SELECT id, statement_ct, ct_round FROM submissions WHERE status='released' AND released_at > ? "
        "AND slot=? AND statement_ct IS NOT NULL ORDER BY id", (window_start, slot)).fetchall()
    return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]


def apply_plan(conn: sqlite3.Connection, plan: ReleasePlan, *, round_id: int, window_start: float,
               prior_slots: dict[int, ReleasedSlot], prior_phrases: dict[tuple[int, str], ReleasedPhraseRow],
               centroids: dict[int, np.ndarray] | None, statements: bool, withdraw_only: bool) -> set[int]:
    """Write ``plan``; return the pattern slots it withdrew.

    Statements (open mode only): the contributors' encrypted scrubbed statements of selected
    slots. Balanced would need statement tokens to select a statement "as a whole"; protocol v1
    has none, so balanced releases no statements."""
    before = pattern_slots(conn)
    for slot, d in plan.slots.items():
        if not d.keep:
            conn.execute("DELETE FROM released_slots WHERE slot=?", (slot,))
            continue
        old = prior_slots.get(slot)
        vec = centroids.get(slot) if centroids else None
        blob = vec.tobytes() if vec is not None else (old.vector if old is not None else None)
        conn.execute("INSERT OR REPLACE INTO released_slots (slot, true_count, noisy_count, vector, released_at_round)"
                     " VALUES (?,?,?,?,?)", (slot, d.true_count, d.noisy_count, blob,
                                            old.released_at_round if old is not None else round_id))
    for (slot, token), d in plan.phrases.items():
        ct = _latest_phrase_ciphertext(conn, window_start, slot, token) if d.keep else None
        if ct is None:
            conn.execute("DELETE FROM released_phrases WHERE slot=? AND token=?", (slot, token))
            continue
        old_p = prior_phrases.get((slot, token))
        conn.execute("INSERT OR REPLACE INTO released_phrases (slot, token, ciphertext, ct_round, true_count,"
                     " noisy_count, released_at_round) VALUES (?,?,?,?,?,?,?)",
                     (slot, token, ct[0], ct[1], d.true_count, d.noisy_count,
                      old_p.released_at_round if old_p is not None else round_id))
    old_statements = {int(r[0]): int(r[1]) for r in
                      conn.execute("SELECT submission_id, released_at_round FROM released_statements")}
    conn.execute("DELETE FROM released_statements")
    if statements:
        for slot in sorted(plan.selected_slots):
            for sid, ct_text, ct_round in _window_statements(conn, window_start, slot):
                if withdraw_only and sid not in old_statements:
                    continue
                conn.execute("INSERT INTO released_statements (submission_id, slot, ciphertext, ct_round,"
                             " released_at_round) VALUES (?,?,?,?,?)",
                             (sid, slot, ct_text, ct_round, old_statements.get(sid, round_id)))
    after = pattern_slots(conn)
    for slot in after - before:
        conn.execute("INSERT INTO patterns (slot, released_at_round) VALUES (?, ?) "
                     "ON CONFLICT(slot) DO UPDATE SET released_at_round=excluded.released_at_round", (slot, round_id))
    return before - after


def slot_vectors(conn: sqlite3.Connection) -> list[SlotVector]:
    rows = conn.execute("SELECT slot, vector, noisy_count, released_at_round FROM released_slots "
                        "WHERE vector IS NOT NULL ORDER BY slot").fetchall()
    return [SlotVector(int(r[0]), np.frombuffer(bytes(r[1]), dtype="<f4").astype(float).tolist(), float(r[2]),
                       int(r[3])) for r in rows]


def released_patterns(conn: sqlite3.Connection, slots: Sequence[int] | None) -> list[dict[str, Any]]:
    """Released patterns (as ReleasedPattern-shaped dicts) for ``slots`` (None: all)."""
    present = sorted(pattern_slots(conn))
    if slots is not None:
        wanted = set(slots)
        present = [s for s in present if s in wanted]
    out: list[dict[str, Any]] = []
    for slot in present:
        phrases = conn.execute("SELECT token, ciphertext, ct_round, noisy_count FROM released_phrases WHERE slot=? "
                               "ORDER BY token", (slot,)).fetchall()
        statements = conn.execute("SELECT r.ciphertext, s.statement_token FROM released_statements r "
                                  "JOIN submissions s ON s.id = r.submission_id WHERE r.slot=? "
                                  "AND s.statement_token IS NOT NULL ORDER BY r.submission_id", (slot,)).fetchall()
        srow = conn.execute("SELECT noisy_count FROM released_slots WHERE slot=?", (slot,)).fetchone()
        prow = conn.execute("SELECT released_at_round FROM patterns WHERE slot=?", (slot,)).fetchone()
        ver = conn.execute("SELECT COUNT(*) FROM verifications WHERE slot=?", (slot,)).fetchone()[0]
        up, down = vote_counts(conn, slot)
        noisy = float(srow[0]) if srow is not None else max((float(p[3]) for p in phrases), default=0.0)
        out.append({
            "pattern_id": f"p-{slot}", "slot": slot,
            "phrases": [{"token": p[0], "ciphertext": p[1], "noisy_contributors": float(p[3])} for p in phrases],
            "statements": [{"token": s[1], "ciphertext": s[0]} for s in statements],
            "noisy_contributors": noisy, "verifications": int(ver), "votes_up": up, "votes_down": down,
            "released_at_round": int(prow[0]) if prow is not None else 0,
        })
    return out


# ----------------------------------------------------------------------------- verify and vote

def record_verification(conn: sqlite3.Connection, slot: int, instance_id: str, now: float) -> bool:
    """False if this member already verified this slot."""
    cur = conn.execute("INSERT OR IGNORE INTO verifications VALUES (?,?,?)", (slot, instance_id, now))
    return cur.rowcount == 1


def record_vote(conn: sqlite3.Connection, slot: int, instance_id: str, up: bool, now: float) -> None:
    conn.execute("INSERT OR REPLACE INTO votes VALUES (?,?,?,?)", (slot, instance_id, int(up), now))


def vote_counts(conn: sqlite3.Connection, slot: int) -> tuple[int, int]:
    row = conn.execute("SELECT COALESCE(SUM(up), 0), COALESCE(SUM(1 - up), 0) FROM votes WHERE slot=?",
                       (slot,)).fetchone()
    return int(row[0]), int(row[1])


def claim_quality_credit(conn: sqlite3.Connection, slot: int) -> bool:
    """Mark the slot's quality credit as paid; False if it was paid already (or no pattern)."""
    cur = conn.execute("UPDATE patterns SET quality_credited=1 WHERE slot=? AND quality_credited=0", (slot,))
    return cur.rowcount == 1
