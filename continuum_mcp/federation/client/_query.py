"""Asking the federation: rank released slots locally, fetch them padded with decoys (or all of
them when there are few), decrypt, re-rank by local embeddings; and keep the local cache of released patterns in step.

Why locally: the coordinator only learns a padded set of slot numbers; which slots were wanted,
the query text and the decrypted patterns stay on this machine.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from continuum_mcp.crypto.cipher import FederationCipher
from continuum_mcp.crypto.identity import Identity, b64decode
from continuum_mcp.errors import CryptoError, InsufficientCredits, InvalidInput, VerificationRefused
from continuum_mcp.federation.api import TRANSIENT_ERRORS, CoordinatorAPI
from continuum_mcp.federation.client._cache import CachedPattern, PatternCache
from continuum_mcp.federation.client._models import FederatedPattern
from continuum_mcp.federation.protocol import QueryRequest, ReleasedPattern
from continuum_mcp.federation.submission import pattern_text
from continuum_mcp.memory.store import MemoryStore, RecallHit
from continuum_mcp.privacy.codebook import Codebook
from continuum_mcp.privacy.generalize import is_private
from embeddings import Embedder

logger = logging.getLogger(__name__)

#: Slots asked for per query: the QUERY_TOP_SLOTS best released slots, padded with random decoys
#: to QUERY_PADDED_SLOTS so the coordinator does not learn which ones were wanted.
QUERY_TOP_SLOTS = 4
QUERY_PADDED_SLOTS = 16
#: With at most this many released slots a query asks for all of them (one request's limit): the
#: coordinator learns nothing about the interest, and ranking all of them locally finds more.
QUERY_ALL_RELEASED_MAX = 64
#: Confidence of a federated pattern (documented in :func:`federated_confidence`).
RELEVANCE_FLOOR, RELEVANCE_SPAN = 0.2, 0.4


def federated_confidence(similarity: float, noisy_contributors: float, min_contributors: int) -> float:
    """Confidence of a federated pattern for a query, in [0, 1]::

        relevance = clip((cosine - 0.2) / 0.4, 0, 1)     # cosine 0.6 or more -> 1, 0.2 or less -> 0
        n         = max(noisy contributors, floor)       # floor = min_contributors
        support   = 1 - 2 ** (-3 * n / floor)
        confidence = relevance * support

    ``n`` is never below the floor because the coordinator releases nothing whose true count of
    distinct contributors is below it (the noisy count alone can be far off in a small
    federation). At the floor support is 0.875, at twice the floor 0.98: a pattern that only
    just passed the floor reaches the default ``min_confidence`` 0.8 only if its text closely
    matches the query (cosine >= 0.57).
    """
    relevance = min(1.0, max(0.0, (similarity - RELEVANCE_FLOOR) / RELEVANCE_SPAN))
    floor = max(1, min_contributors)
    support = 1.0 - 2.0 ** (-3.0 * max(noisy_contributors, float(floor)) / floor)
    return round(relevance * support, 4)


def decoy_secret(identity: Identity) -> bytes:
    """This instance's local decoy key: a hash of its (deterministic) Ed25519 signature over a fixed,
    domain-separated statement that is no valid request (timestamp 0 is outside any replay window).
    Stable across restarts, known to nobody else: other members hold the federation key, so a
    decoy key derived from it would let them recompute which slots were decoys."""
    env = identity.sign("LOCAL", "/continuum-mcp/query-decoys/v1", b"", timestamp=0, nonce=bytes(16))
    return hashlib.blake2b(env.signature.encode("ascii"), digest_size=32, person=b"continuum/decoys").digest()


def pad_with_decoys(wanted: Sequence[int], released: Sequence[int], slots: int | Sequence[int],
                    secret: bytes) -> list[int]:
    """Wanted slots plus decoys, QUERY_PADDED_SLOTS in all, sorted; ``slots``: every slot id of the
    codebook version in use (``Codebook.ids``; an int n: ids 0..n-1, codebook v0's), so decoys are
    ids of that version only, like the wanted ones. Decoys are fixed per interest:
    every candidate slot is ranked by a PRF of (local ``secret``, the wanted set, slot), so asking
    the same thing again asks for the identical set (fresh decoys per query would let repeated
    queries be intersected down to the wanted slots). Decoys come first from the other *released*
    slots (with few releases, all of them are asked for), then from the rest."""
    if len(secret) < 16:
        raise InvalidInput("the decoy secret has at least 16 bytes")
    want = sorted(set(wanted))
    context = ",".join(map(str, want)).encode("ascii")

    def rank(slot: int) -> bytes:
        return hashlib.blake2b(context + b"|" + str(slot).encode("ascii"), key=secret[:64], digest_size=16).digest()

    need = max(0, QUERY_PADDED_SLOTS - len(want))
    taken = set(want)
    rel_others = sorted((s for s in set(released) if s not in taken), key=rank)
    decoys = rel_others[:need]
    taken.update(decoys)
    candidates = range(slots) if isinstance(slots, int) else slots
    rest = sorted((s for s in candidates if s not in taken), key=rank)
    decoys += rest[: need - len(decoys)]
    return sorted(want + decoys)


def check_query(query: object) -> None:
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("query must be a non-empty string")


def supporting_memory(store: MemoryStore, pattern: CachedPattern, threshold: float) -> RecallHit:
    """The non-private local memory most similar to the pattern's text, if it is at least
    ``threshold`` similar; else ``VerificationRefused`` (and nobody was contacted)."""
    hits = store.recall(pattern_text(pattern.summary, pattern.phrases), k=10, mode="semantic").hits
    best = next((h for h in hits if not is_private(h.memory)), None)
    if best is None or best.similarity < threshold:
        sim = 0.0 if best is None else best.similarity
        raise VerificationRefused(
            f"your memory does not support pattern {pattern.pattern_id} (best non-private similarity {sim:.2f}, "
            f"needs {threshold}); only patterns your own memory confirms can be verified")
    return best


def open_released(cipher: FederationCipher, rp: ReleasedPattern) -> tuple[list[str], list[str]]:
    """The phrases (most contributors first) and statements of a released pattern that decrypt
    under their token *and* hash back to it; anything else (another key, tampering, a member's
    text substituted under a popular token) is dropped."""
    phrases: list[str] = []
    for p in sorted(rp.phrases, key=lambda p: -p.noisy_contributors):
        try:
            phrases.append(cipher.open_phrase(rp.slot, p.token, b64decode(p.ciphertext, what="phrase")))
        except (CryptoError, InvalidInput):
            logger.info("a released phrase in slot %d does not match its token; dropped", rp.slot)
    statements: list[str] = []
    for st in rp.statements:
        try:
            text = cipher.open_statement(st.token, b64decode(st.ciphertext, what="statement"))
        except (CryptoError, InvalidInput):
            logger.info("a released statement in slot %d does not match its token; dropped", rp.slot)
            continue
        statements.append(text[:1].upper() + text[1:])
    return phrases, statements


def _medoid(texts: list[str], vecs: np.ndarray) -> str:
    """The text most like the others (a robust summary of several statements)."""
    return texts[int(np.argmax((vecs @ vecs.T).sum(axis=1)))]


@dataclass
class FederatedQuery:
    """Queries and cache upkeep for one membership (built per use by the client)."""

    api: CoordinatorAPI
    cache: PatternCache
    cipher: FederationCipher
    embedder: Embedder
    codebook: Codebook
    min_contributors: int
    decoy_secret: bytes

    def released_slots(self) -> dict[int, np.ndarray]:
        """Released slot id -> unit vector (its DP centroid, or the codebook vector if that is
        unusable), for the slot ids of this client's codebook version only: what was released
        under another version is another slot space and never mixes in."""
        out: dict[int, np.ndarray] = {}
        cb = self.codebook
        for s in self.api.slots().slots:
            try:
                index = cb.index_of(s.slot)
            except InvalidInput:
                continue
            if s.released_at_round < 0:
                continue
            v = np.asarray(s.vector, dtype=np.float32) if s.vector else cb.vectors[index]
            if v.shape != (cb.dim,) or not np.all(np.isfinite(v)) or np.linalg.norm(v) == 0:
                v = cb.vectors[index]
            out[s.slot] = v / np.linalg.norm(v)
        return out

    def fetch(self, patterns: Sequence[ReleasedPattern]) -> list[CachedPattern]:
        """Decrypt, summarise and embed released patterns; write them to the cache."""
        decrypted: list[tuple[ReleasedPattern, list[str], list[str]]] = []
        for rp in patterns:
            phrases, statements = open_released(self.cipher, rp)
            if phrases or statements:
                decrypted.append((rp, list(dict.fromkeys(phrases)), statements))
        if not decrypted:
            return []
        # summary: the medoid statement (the one most like the others), else the phrases
        unique = [list(dict.fromkeys(sts)) for _, _, sts in decrypted]
        flat = [t for sts in unique for t in sts]
        vecs = self.embedder.encode(flat) if flat else np.zeros((0, 1))
        summaries: list[str] = []
        pos = 0
        for (_, phrases, _), sts in zip(decrypted, unique):
            summaries.append(_medoid(sts, vecs[pos:pos + len(sts)]) if sts else "; ".join(phrases))
            pos += len(sts)
        embs = self.embedder.encode([pattern_text(s, ph) for s, (_, ph, _) in zip(summaries, decrypted)])
        rows = [CachedPattern(pattern_id=rp.pattern_id, slot=rp.slot, summary=summary, phrases=phrases,
                              statements=statements, contributors=rp.noisy_contributors,
                              verifications=rp.verifications, votes_up=rp.votes_up, votes_down=rp.votes_down,
                              released_at_round=rp.released_at_round, embedding=np.asarray(e, dtype=np.float32))
                for (rp, phrases, statements), summary, e in zip(decrypted, summaries, embs)]
        self.cache.put(rows)
        return rows

    def to_federated(self, qvec: np.ndarray, row: CachedPattern) -> FederatedPattern:
        sim = float(np.dot(qvec, row.embedding))
        return FederatedPattern(
            pattern_id=row.pattern_id, slot=row.slot, summary=row.summary, phrases=row.phrases,
            statements=row.statements, similarity=round(sim, 4),
            confidence=federated_confidence(sim, row.contributors, self.min_contributors),
            contributor_count=round(max(row.contributors, float(self.min_contributors)), 2),
            verification_count=row.verifications, votes_up=row.votes_up, votes_down=row.votes_down,
            released_at_round=row.released_at_round)

    def _embed(self, query: str) -> np.ndarray:
        return np.asarray(self.embedder.encode([query])[0], dtype=np.float32)

    def query(self, query: str, min_confidence: float, max_results: int) -> list[FederatedPattern]:
        check_query(query)
        if not 0.0 <= min_confidence <= 1.0:
            raise InvalidInput("min_confidence must be in [0, 1]")
        if isinstance(max_results, bool) or not 1 <= int(max_results) <= 100:
            raise InvalidInput("max_results must be from 1 to 100")
        qvec = self._embed(query)
        released = self.released_slots()
        if not released:
            return []
        ids = sorted(released)
        # a DP centroid of few contributors is mostly noise; the public codebook vector of the
        # slot is the better guide then, so a slot scores the better of the two
        cb = self.codebook
        sims = np.asarray([max(float(np.dot(qvec, released[s])), float(np.dot(qvec, cb.vectors[cb.index_of(s)])))
                           for s in ids])
        # few releases: ask for all of them (the interest is then not in the request at all)
        wanted = ids if len(ids) <= QUERY_ALL_RELEASED_MAX else [ids[i] for i in np.argsort(-sims)[:QUERY_TOP_SLOTS]]
        resp = self.api.query(QueryRequest(slots=pad_with_decoys(wanted, ids, cb.ids, self.decoy_secret)))
        out = [p for p in (self.to_federated(qvec, r) for r in self.fetch(resp.patterns))
               if p.confidence >= min_confidence]
        out.sort(key=lambda p: (-p.confidence, -p.similarity))
        return out[: int(max_results)]

    def search_cache(self, query: str, k: int) -> list[FederatedPattern]:
        rows = self.cache.rows()
        if not rows:
            return []
        qvec = self._embed(query)
        out = [p for p in (self.to_federated(qvec, r) for r in rows) if p.similarity > RELEVANCE_FLOOR]
        out.sort(key=lambda p: (-p.similarity, -p.confidence))
        return out[:k]

    def refresh(self, fetch_new: bool) -> int:
        """Drop cached patterns whose slot is no longer released; optionally fetch new ones.
        Returns how many slots were dropped."""
        try:
            released = self.released_slots()
        except TRANSIENT_ERRORS:
            return 0
        cached = self.cache.slots()
        gone = cached - set(released)
        if gone:
            self.cache.drop_slots(gone)
        new = sorted(set(released) - cached)
        if fetch_new and new:
            try:
                self.fetch(self.api.query(QueryRequest(slots=new[:64])).patterns)
            except InsufficientCredits:
                logger.info("not enough credits to fetch newly released patterns into the cache")
        return len(gone)
