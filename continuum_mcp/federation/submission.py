"""What a contribution carries: plan it, encrypt it for a round, and build the secagg input.

Pure functions over their inputs (memories, generalizer, codebook, policy, cipher): the
federation client, the preview, the tests and the benchmarks all build submissions here, so what
a preview shows is by construction what is sent.

- :func:`plan_contribution` generalises memories (private ones never enter), keeps patterns with
  an embedding and phrases, gives each the nearest codebook slot (the strongest pattern keeps a
  slot, weaker ones in a used slot are dropped), caps at the contribution level's slot count L,
  and keeps at most C phrases in all (:func:`choose_phrases`: the user's most frequent first,
  Carvalho et al. 2022), whatever the level: L caps patterns, C the DP phrase count.
- :func:`build_contribution` encrypts planned patterns for one round: phrases as tokens of the
  phrase itself (``FederationCipher.token``) plus AEAD ciphertexts, the statement only in modes
  that release statements.
- :func:`secagg_input` is a member's secure-aggregation vector (``slot_vector_layout``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, Field

from continuum_mcp.crypto.cipher import FederationCipher
from continuum_mcp.crypto.identity import b64encode
from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.protocol import (
    ContributionRequest,
    ModeName,
    PatternSubmission,
    PhraseSubmission,
    slot_vector_layout,
)
from continuum_mcp.memory.models import Memory
from continuum_mcp.privacy.codebook import Codebook, split_slot_id
from continuum_mcp.privacy.generalize import Generalizer
from continuum_mcp.privacy.modes import PrivacyPolicy
from continuum_mcp.privacy.preview import preview_patterns

#: modes whose rounds release statements (so members send them, encrypted). Only ``open``: it
#: releases a statement that itself has ``min_contributors`` contributors; ``balanced`` releases
#: none until whole-statement DP selection exists, so sending them would only expose them.
STATEMENT_MODES: frozenset[str] = frozenset({"open"})


class PlannedPattern(BaseModel):
    """A pattern ready to send: plaintext (local only) plus its embedding. Stored as JSON in the
    client's outbox, so its fields are a file format: add fields with defaults only."""

    slot: int
    confidence: float
    phrases: list[str]
    statement: str
    pattern_id: str
    source_memory_ids: list[int]
    embedding: list[float]


class OutgoingPattern(BaseModel):
    """One pattern as it would leave (or left) the machine, in plain text."""

    slot: int
    confidence: float
    phrases: list[str] = Field(description="Sent as opaque tokens plus ciphertexts (end-to-end encrypted).")
    statement: str | None = Field(description="Sent encrypted only in open federations; None = not sent.")
    pattern_id: str
    source_memory_ids: list[int] = Field(description="Local only: which memories it came from (never sent).")


class ContributionPlan(BaseModel):
    """Exactly what a contribution would carry, and what was left out and why."""

    planned: list[PlannedPattern]
    preview: list[OutgoingPattern]
    what_leaves: str
    held_back_private: int = 0
    below_confidence: int = 0
    dropped_same_slot: int = 0
    dropped_over_level: int = 0
    dropped_phrases: int = Field(default=0, description="Phrases left out by the per-window cap C.")


def sends_statements(federation_mode: ModeName | str) -> bool:
    return federation_mode in STATEMENT_MODES


def pattern_text(summary: str, phrases: Sequence[str]) -> str:
    """The text a pattern is embedded and matched by: its summary plus the phrases it lacks."""
    extra = [p for p in phrases if p.lower() not in summary.lower()]
    return summary if not extra else f"{summary} ({', '.join(extra)})"


def what_leaves(federation_mode: ModeName | str) -> str:
    """The plain-language account of a contribution's wire content, shown with every preview."""
    statements = (", and the statement as a ciphertext" if sends_statements(federation_mode)
                  else f" (statements are not sent in {federation_mode} mode)")
    return ("Per pattern: its slot number, its confidence, each phrase as an opaque token plus a ciphertext "
            "readable only by members holding the federation key" + statements
            + ". The pattern embeddings leave only inside the round's secure aggregation, summed with all "
            "other members' and noised; no single embedding, raw text or memory id leaves this machine.")


def filter_domain(memories: Iterable[Memory], domain: str | None) -> list[Memory]:
    """Memories tagged ``domain`` (case-insensitive); all of them for None."""
    mems = list(memories)
    if domain is None:
        return mems
    d = domain.strip().lower()
    if not d:
        raise InvalidInput("domain must be a non-empty tag")
    return [m for m in mems if d in {t.strip().lower() for t in m.tags}]


def choose_phrases(phrase_lists: Sequence[Sequence[str]], cap: int) -> list[list[str]]:
    """Keep at most ``cap`` distinct phrases over all patterns: the ones that occur in most of the
    user's patterns first (Carvalho et al. 2022: a user's own frequency is the best local guess of
    what many users share, so the per-user cap C costs little utility); among equally frequent
    ones, each pattern's best phrase before any pattern's second, so every pattern is represented.
    Each pattern keeps its own phrases of that set, in order; a phrase is sent once (first pattern)."""
    freq: dict[str, int] = {}
    rank: dict[str, tuple[int, int]] = {}
    for k, phrases in enumerate(phrase_lists):
        for pos, ph in enumerate(dict.fromkeys(p.strip().lower() for p in phrases)):
            freq[ph] = freq.get(ph, 0) + 1
            rank.setdefault(ph, (pos, k))
    keep = set(sorted(freq, key=lambda ph: (-freq[ph], rank[ph]))[:cap])
    out: list[list[str]] = []
    sent: set[str] = set()
    for phrases in phrase_lists:
        mine = []
        for p in phrases:
            key = p.strip().lower()
            if key in keep and key not in sent:
                sent.add(key)
                mine.append(p)
        out.append(mine)
    return out


def plan_contribution(
    memories: Iterable[Memory],
    generalizer: Generalizer,
    codebook: Codebook,
    policy: PrivacyPolicy,
    level: str,
    federation_mode: ModeName | str,
    *,
    min_confidence: float = 0.7,
    domain: str | None = None,
) -> ContributionPlan:
    """Generalise, filter, slot and cap: exactly what a contribution would carry."""
    if not 0.0 <= min_confidence <= 1.0:
        raise InvalidInput("min_confidence must be in [0, 1]")
    preview = preview_patterns(filter_domain(memories, domain), generalizer, min_confidence=min_confidence)
    cap = policy.level(level).max_slots
    patterns = [p for p in preview.patterns if p.embedding and p.phrases]
    planned: list[PlannedPattern] = []
    used: set[int] = set()
    same_slot = over = 0
    if patterns:
        slots = codebook.slot_ids(np.asarray([p.embedding for p in patterns], dtype=np.float32))
        for p, slot in zip(patterns, slots):  # strongest first: the best pattern keeps a slot
            s = int(slot)
            if s in used:
                same_slot += 1
                continue
            if len(planned) >= cap:
                over += 1
                continue
            used.add(s)
            planned.append(PlannedPattern(slot=s, confidence=p.confidence,
                                          phrases=p.phrases[: policy.max_phrases_per_pattern],
                                          statement=p.statement, pattern_id=p.pattern_id,
                                          source_memory_ids=p.source_memory_ids, embedding=p.embedding))
    cap_c = policy.mode(federation_mode).phrases_per_window if federation_mode in {m.name for m in policy.modes} \
        else min(m.phrases_per_window for m in policy.modes)
    before = sum(len(p.phrases) for p in planned)
    for p, phrases in zip(planned, choose_phrases([p.phrases for p in planned], cap_c)):
        p.phrases = phrases
    dropped_phrases = before - sum(len(p.phrases) for p in planned)
    statements = sends_statements(federation_mode)
    return ContributionPlan(
        planned=planned,
        preview=[OutgoingPattern(slot=p.slot, confidence=p.confidence, phrases=p.phrases,
                                 statement=p.statement if statements else None, pattern_id=p.pattern_id,
                                 source_memory_ids=p.source_memory_ids) for p in planned],
        what_leaves=what_leaves(federation_mode), held_back_private=len(preview.private_memory_ids),
        below_confidence=preview.below_confidence, dropped_same_slot=same_slot, dropped_over_level=over,
        dropped_phrases=dropped_phrases)


def build_submission(pattern: PlannedPattern, round_id: int, cipher: FederationCipher,
                     *, send_statement: bool) -> PatternSubmission:
    """One pattern sealed for the federation: each ciphertext is bound to its token (protocol v2;
    ``round_id`` no longer enters the ciphertexts, the request names the round); each phrase's token
    is the token of the phrase itself (no slot), so it counts with everybody's."""
    p = pattern
    phrases = [cipher.seal_phrase(p.slot, ph) for ph in p.phrases]
    statement = cipher.seal_statement(p.statement) if send_statement and p.statement.strip() else None
    return PatternSubmission(
        slot=p.slot, confidence=max(0.0, min(1.0, p.confidence)),
        phrases=[PhraseSubmission(token=t, ciphertext=b64encode(ct)) for t, ct in phrases],
        statement_token=statement[0] if statement else None,
        statement_ciphertext=b64encode(statement[1]) if statement else None)


def choose_for_round(patterns: Iterable[PlannedPattern], cap: int) -> list[PlannedPattern]:
    """One pattern per slot (later ones win), the ``cap`` most confident."""
    by_slot = {p.slot: p for p in patterns}
    return sorted(by_slot.values(), key=lambda p: (-p.confidence, p.slot))[:cap]


def build_contribution(patterns: Iterable[PlannedPattern], round_id: int, cipher: FederationCipher,
                       federation_mode: ModeName | str, *, cap: int | None = None) -> ContributionRequest:
    """The ContributionRequest of ``patterns`` for ``round_id`` (one per slot, at most ``cap``)."""
    chosen = choose_for_round(patterns, cap if cap is not None else 1 << 30)
    statements = sends_statements(federation_mode)
    return ContributionRequest(round_id=round_id, patterns=[
        build_submission(p, round_id, cipher, send_statement=statements) for p in chosen])


def reslot(patterns: Iterable[PlannedPattern], codebook: Codebook) -> list[PlannedPattern]:
    """The patterns slotted under ``codebook`` (a newly adopted version): each gets the versioned
    id of its nearest slot; where two now share a slot the more confident keeps it, as in
    :func:`plan_contribution`."""
    pats = sorted(patterns, key=lambda p: -p.confidence)
    if not pats:
        return []
    ids = codebook.slot_ids(np.asarray([p.embedding for p in pats], dtype=np.float32))
    out: dict[int, PlannedPattern] = {}
    for p, sid in zip(pats, ids):
        out.setdefault(int(sid), p.model_copy(update={"slot": int(sid)}))
    return list(out.values())


def secagg_input(patterns: Iterable[PlannedPattern], slots: int, dim: int, clip_norm: float) -> np.ndarray:
    """The slots*dim secagg input: each pattern's slot block (by the slot id's index; the version
    tag is the round's) holds its unit embedding (later patterns win a slot); the whole vector is
    scaled to ``clip_norm`` (the centroid share of the round's unit L2 contribution)."""
    total, block = slot_vector_layout(slots, dim)
    vec = np.zeros(total, dtype=np.float64)
    for p in {p.slot: p for p in patterns}.values():
        index = split_slot_id(p.slot)[1] if p.slot >= 0 else -1
        if not 0 <= index < slots:
            raise InvalidInput(f"slot {p.slot} is outside the codebook's {slots} slots")
        e = np.asarray(p.embedding, dtype=np.float64)
        if e.shape != (block,):
            raise InvalidInput(f"pattern embedding has {e.size} dimensions, the federation uses {block}")
        vec[index * block:(index + 1) * block] = e / max(np.linalg.norm(e), 1e-12)
    norm = float(np.linalg.norm(vec))
    if norm > 0:
        vec *= clip_norm / norm
    return vec


__all__ = [
    "STATEMENT_MODES", "ContributionPlan", "OutgoingPattern", "PlannedPattern", "build_contribution",
    "build_submission", "choose_for_round", "choose_phrases", "filter_domain", "pattern_text", "plan_contribution", "reslot",
    "secagg_input",
    "sends_statements", "what_leaves",
]
