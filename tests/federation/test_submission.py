"""What a contribution carries, built by the pure functions of ``federation.submission`` from a
real store, the real generalizer (scrubber + embedding model) and the bundled codebook."""

from __future__ import annotations

import numpy as np
import pytest

from continuum_mcp.crypto.cipher import FederationCipher, generate_federation_key, normalise_phrase
from continuum_mcp.crypto.identity import b64decode
from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.submission import (
    PlannedPattern,
    build_contribution,
    filter_domain,
    pattern_text,
    plan_contribution,
    secagg_input,
)
from continuum_mcp.memory.store import MemoryStore
from continuum_mcp.privacy.codebook import Codebook
from continuum_mcp.privacy.generalize import Generalizer
from continuum_mcp.privacy.modes import default_policy
from continuum_mcp.privacy.scrub import Scrubber

SHARED = ["I prefer a dark theme in my code editor", "My code editor always runs a dark theme",
          "I switched my code editor back to a dark theme", "I drink green tea every morning before work",
          "Green tea in the morning helps me start work"]
SECRET = "My private diary: the vault combination is kept under the blue ceramic owl"


@pytest.fixture
def memories(store: MemoryStore) -> MemoryStore:
    for text in SHARED:
        store.remember(text, tags=["prefs"])
    store.remember(SECRET + " and a dark theme in my code editor", tags=["private", "prefs"])
    return store


def plan(store: MemoryStore, mode: str = "balanced", **kw: object):  # type: ignore[no-untyped-def]
    policy = default_policy()
    gen = Generalizer(store.embedder, Scrubber(), max_phrases=policy.max_phrases_per_pattern)
    return plan_contribution(store.all_memories(), gen, Codebook.load("v0"), policy, "standard", mode,
                             min_confidence=0.0, **kw)


def test_a_private_memory_never_enters_a_contribution(memories: MemoryStore) -> None:
    private_id = next(m.id for m in memories.all_memories() if "private" in m.tags)
    p = plan(memories)
    assert p.planned and p.held_back_private == 1
    for pat in p.planned:
        assert private_id not in pat.source_memory_ids
        text = " ".join([pat.statement, *pat.phrases]).lower()
        assert "vault" not in text and "owl" not in text and "diary" not in text
    assert len({pat.slot for pat in p.planned}) == len(p.planned)  # one pattern per slot


def test_the_submission_is_exactly_the_preview_encrypted(memories: MemoryStore) -> None:
    cipher = FederationCipher(generate_federation_key(), "fed-sub-test")
    for mode, statements_sent in (("open", True), ("balanced", False), ("high", False)):
        p = plan(memories, mode)
        req = build_contribution(p.planned, 4, cipher, mode)
        assert req.round_id == 4
        by_slot = {o.slot: o for o in p.preview}
        assert sorted(s.slot for s in req.patterns) == sorted(by_slot)
        for sub in req.patterns:
            shown = by_slot[sub.slot]
            assert [cipher.open_phrase(sub.slot, ph.token, b64decode(ph.ciphertext)) for ph in sub.phrases] == shown.phrases
            # release v2: the token is the phrase's own, whatever the slot
            assert [ph.token for ph in sub.phrases] == [cipher.token(t) for t in shown.phrases]
            assert sub.confidence == pytest.approx(shown.confidence)
            if statements_sent:
                assert sub.statement_token == cipher.statement_token(shown.statement)
                opened = cipher.open_statement(sub.statement_token, b64decode(sub.statement_ciphertext))
                assert opened == normalise_phrase(shown.statement)  # sealed in normalised form
            else:
                assert sub.statement_ciphertext is None and sub.statement_token is None and shown.statement is None
        assert ("statements are not sent" in p.what_leaves) is (not statements_sent)
        wire = req.model_dump_json()
        for o in p.preview:  # no plaintext on the wire
            assert all(ph not in wire for ph in o.phrases)


def test_domain_filter_and_level_cap(memories: MemoryStore) -> None:
    assert plan(memories, domain="no-such-tag").planned == []
    with pytest.raises(InvalidInput):
        filter_domain(memories.all_memories(), "  ")
    assert len(filter_domain(memories.all_memories(), "PREFS")) == len(SHARED) + 1


def test_build_contribution_keeps_one_pattern_per_slot_and_the_cap() -> None:
    cipher = FederationCipher(generate_federation_key(), "fed-sub-test")

    def pat(slot: int, conf: float, pid: str) -> PlannedPattern:
        return PlannedPattern(slot=slot, confidence=conf, phrases=["x"], statement="s", pattern_id=pid,
                              source_memory_ids=[], embedding=[1.0, 0.0])

    req = build_contribution([pat(1, 0.5, "old"), pat(2, 0.9, "b"), pat(1, 0.7, "new"), pat(3, 0.1, "c")], 0,
                             cipher, "open", cap=2)
    assert [(s.slot, s.confidence) for s in req.patterns] == [(2, 0.9), (1, 0.7)]  # later wins a slot, cap by confidence


def test_secagg_input_places_unit_embeddings_in_slot_blocks_scaled_to_the_clip_norm() -> None:
    pats = [PlannedPattern(slot=s, confidence=0.9, phrases=["p"], statement="s", pattern_id=str(s),
                           source_memory_ids=[], embedding=list(e))
            for s, e in ((0, [3.0, 4.0]), (2, [0.0, 2.0]))]
    v = secagg_input(pats, slots=3, dim=2, clip_norm=0.5)
    assert np.linalg.norm(v) == pytest.approx(0.5)
    blocks = v.reshape(3, 2) / (0.5 / np.sqrt(2))
    np.testing.assert_allclose(blocks, [[0.6, 0.8], [0.0, 0.0], [0.0, 1.0]], atol=1e-12)
    assert not secagg_input([], 3, 2, 0.5).any()
    with pytest.raises(InvalidInput):
        secagg_input([pats[0].model_copy(update={"slot": 3})], 3, 2, 0.5)


def test_pattern_text_adds_only_the_phrases_the_summary_lacks() -> None:
    assert pattern_text("I like a dark theme", ["dark theme", "code editor"]) == "I like a dark theme (code editor)"
    assert pattern_text("dark theme", ["Dark Theme"]) == "dark theme"
