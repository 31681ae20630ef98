"""SQL of integrity and participation checks: substituted ciphertexts, statement floors, per-slot
contributor counts, who sent what in an attempt.

Part of the coordinator store (every function takes the connection of a store transaction), kept
apart from the release SQL so each stays small: these answer "may this be stored / served / made a
centroid of", the release SQL answers "what is released".
"""

from __future__ import annotations

from continuum_mcp._db import Connection
from collections.abc import Sequence


def slot_submitters(conn: Connection, round_id: int) -> dict[int, int]:
    """Slot -> members with a pending submission for it in ``round_id`` (the per-slot norm bound)."""
    rows = conn.execute(
        "SELECT slot, COUNT(DISTINCT instance_id) FROM submissions WHERE round_id=? AND status='pending' "
        "GROUP BY slot", (round_id,)).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


def _by_token(conn: Connection, sql: str, tokens: Sequence[str]) -> dict[str, set[str]]:
    """token -> ciphertexts of ``sql`` (``... IN ({})``, selecting token and ciphertext), one
    statement per 500 tokens (not one per token: each is a round trip on PostgreSQL)."""
    out: dict[str, set[str]] = {}
    wanted = sorted(set(tokens))
    for start in range(0, len(wanted), 500):
        batch = wanted[start:start + 500]
        for token, ct in conn.execute(sql.format(", ".join("?" * len(batch))), batch).fetchall():
            out.setdefault(str(token), set()).add(str(ct))
    return out


def released_ciphertexts(conn: Connection, tokens: Sequence[str]) -> dict[str, set[str]]:
    """Phrase token -> the ciphertexts released for it (phrase ciphertexts are deterministic,
    so an honest contributor of a released phrase sends exactly one of these)."""
    return _by_token(conn, "SELECT token, ciphertext FROM released_phrases WHERE token IN ({})", tokens)


def released_statement_ciphertexts(conn: Connection, tokens: Sequence[str]) -> dict[str, set[str]]:
    """Statement token -> the statement ciphertexts released for it."""
    return _by_token(conn, "SELECT s.statement_token, r.ciphertext FROM released_statements r JOIN submissions s "
                           "ON s.id = r.submission_id WHERE s.statement_token IN ({})", tokens)


def enforce_statement_floor(conn: Connection, floor: int) -> set[int]:
    """Keep a released statement only if that statement itself (its token and ciphertext, which
    are deterministic) has at least ``floor`` distinct contributors over the released submissions
    that still exist (run at a scheduled release, so a deletion takes effect there), and only once
    per slot; returns the slots that lost their last statement (and with it, maybe, their pattern)."""
    before = {int(r[0]) for r in conn.execute("SELECT DISTINCT slot FROM released_statements")}
    conn.execute(
        "DELETE FROM released_statements WHERE submission_id NOT IN ("
        " SELECT MIN(r.submission_id) FROM released_statements r JOIN submissions s ON s.id = r.submission_id"
        " WHERE s.statement_token IS NOT NULL AND (s.statement_token, r.ciphertext) IN ("
        "  SELECT statement_token, statement_ct FROM submissions WHERE status='released'"
        "  AND statement_token IS NOT NULL GROUP BY statement_token, statement_ct"
        "  HAVING COUNT(DISTINCT instance_id) >= ?)"
        " GROUP BY r.slot, s.statement_token)", (floor,))
    after = {int(r[0]) for r in conn.execute("SELECT DISTINCT slot FROM released_statements")}
    shown = {int(r[0]) for r in conn.execute("SELECT slot FROM released_phrases UNION "
                                             "SELECT slot FROM released_statements")}
    return (before - after) - shown


def secagg_senders(conn: Connection, round_id: int, attempt: int, kind: str) -> set[str]:
    """Members whose ``kind`` message of this attempt was received (e.g. whose masked input)."""
    rows = conn.execute("SELECT instance_id FROM secagg_messages WHERE round_id=? AND attempt=? AND kind=?",
                        (round_id, attempt, kind)).fetchall()
    return {str(r[0]) for r in rows}



def without_substitutions(conn: Connection, round_id: int, patterns: dict[str, int]) -> dict[str, int]:
    """``patterns`` (member -> patterns released in ``round_id``) less each member's patterns that
    carry a phrase whose token is released with another ciphertext: honest contributors of a
    released phrase send exactly its (deterministic) ciphertext, so those are substituted texts,
    and substitution earns no credit."""
    rows = conn.execute(
        "SELECT s.instance_id, COUNT(DISTINCT s.id) FROM submissions s JOIN phrases p ON p.submission_id = s.id "
        "JOIN released_phrases r ON r.token = p.token "
        "WHERE s.released_round = ? AND r.ciphertext != p.ciphertext GROUP BY s.instance_id", (round_id,)).fetchall()
    out = dict(patterns)
    for member, n in rows:
        out[str(member)] = max(0, out.get(str(member), 0) - int(n))
    return out


__all__ = ["enforce_statement_floor", "released_ciphertexts", "released_statement_ciphertexts", "secagg_senders",
           "slot_submitters", "without_substitutions"]
