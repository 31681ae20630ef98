"""Generaliser and preview tests on the real bundled embedding model."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
import pytest

from continuum_mcp.errors import InvalidInput
from continuum_mcp.privacy.generalize import (
    Generalizer,
    Pattern,
    confidence_score,
    key_phrases,
    normalize_statement,
    select_memories,
)
from continuum_mcp.memory.models import Memory
from continuum_mcp.privacy.preview import preview_patterns
from continuum_mcp.privacy.scrub import Scrubber
from embeddings import SentenceTransformerEmbedder

NOW = datetime(2024, 5, 1, tzinfo=timezone.utc)


def mem(i: int, text: str, tags: list[str] | None = None) -> Memory:
    return Memory(id=i, text=text, tags=tags or [], created_at=NOW, updated_at=NOW, content_hash=f"h{i}")


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    e = SentenceTransformerEmbedder()
    e.start()
    return e


@pytest.fixture(scope="module")
def gen(embedder: SentenceTransformerEmbedder) -> Generalizer:
    return Generalizer(embedder, Scrubber(), similarity_threshold=0.6, max_phrases=8)


# Three "users" state the same fact in different words, each next to unrelated facts of their own.
USERS: dict[str, list[Memory]] = {
    "ana": [
        mem(1, "I always use dark mode in my code editor."),
        mem(2, "I'm allergic to peanuts, so no satay for me."),
        mem(3, "My daughter Lucia has swimming lessons every Tuesday at 5pm."),
        mem(4, "I run 5 km every morning before work."),
    ],
    "ben": [
        mem(11, "Ben prefers a dark theme in his code editor; light themes hurt his eyes."),
        mem(12, "Ben's flat is at 14 Elm Road and the rent is due on the 1st."),
        mem(13, "He is learning Japanese with a tutor on Zoom."),
    ],
    "chloe": [
        mem(21, "Basically my code editor is set to dark mode at all times."),
        mem(22, "Chloe's favourite band is Radiohead and she hates jazz."),
        mem(23, "She backs up her laptop to an external drive every Friday."),
    ],
}


def _dark(patterns: list[Pattern]) -> Pattern:
    hits = [p for p in patterns if "dark" in p.statement]
    assert len(hits) == 1, [p.statement for p in patterns]
    return hits[0]


def test_same_fact_from_different_users_gives_close_patterns(gen: Generalizer) -> None:
    per_user = {u: gen.generalize(ms) for u, ms in USERS.items()}
    dark = {u: _dark(ps) for u, ps in per_user.items()}
    # key phrases overlap between every pair of users
    for a in dark:
        for b in dark:
            if a < b:
                shared = set(dark[a].phrases) & set(dark[b].phrases)
                assert {"code editor", "dark"} & shared, (a, b, dark[a].phrases, dark[b].phrases)
    # and the pattern embeddings are close (cosine of the scrubbed representatives)
    vec = {u: np.asarray(p.embedding) for u, p in dark.items()}
    cos_ab = float(vec["ana"] @ vec["ben"])
    cos_ac = float(vec["ana"] @ vec["chloe"])
    cos_bc = float(vec["ben"] @ vec["chloe"])
    # measured with all-MiniLM-L6-v2: ana-ben 0.67, ana-chloe 0.93, ben-chloe 0.66
    assert min(cos_ab, cos_ac, cos_bc) > 0.6, (cos_ab, cos_ac, cos_bc)
    # ...much closer than the same pattern to an unrelated fact of the same user
    other = [p for p in per_user["ana"] if "dark" not in p.statement]
    assert max(float(vec["ana"] @ np.asarray(p.embedding)) for p in other) < 0.4


def test_one_users_unrelated_facts_do_not_merge(gen: Generalizer) -> None:
    for user, ms in USERS.items():
        patterns = gen.generalize(ms)
        assert len(patterns) == len(ms), user
        assert all(p.support == 1 and p.confidence == 0.5 for p in patterns)
        assert sorted(i for p in patterns for i in p.source_memory_ids) == sorted(m.id for m in ms)


def test_paraphrases_of_one_user_merge_with_higher_confidence(gen: Generalizer) -> None:
    ms = [
        mem(1, "I always use dark mode in my code editor."),
        mem(2, "Dark theme in the code editor, always, please."),
        mem(3, "I'm allergic to peanuts."),
        mem(4, "My code editor must be in dark mode."),
    ]
    patterns = gen.generalize(ms)
    top = patterns[0]
    assert top.source_memory_ids == [1, 2, 4]
    assert top.support == 3
    assert top.confidence == confidence_score(3, top.cohesion) > 0.5
    assert "code editor" in top.phrases
    assert patterns[1].source_memory_ids == [3]


def test_no_raw_pii_in_patterns_and_embedding_is_of_scrubbed_text(gen: Generalizer,
                                                                 embedder: SentenceTransformerEmbedder) -> None:
    ms = [mem(7, "Call Dana Whitfield at +44 20 7946 0958 about the Acme Corp renewal on 3 March.")]
    (p,) = gen.generalize(ms)
    assert p.statement == "call <PERSON> at <PHONE> about the <ORG> renewal on <DATE>."
    dumped = p.model_dump_json()
    for raw in ("Dana", "Whitfield", "7946", "Acme", "March"):
        assert raw.lower() not in dumped.lower()
    assert "embedding" not in p.model_dump()
    again = embedder.encode([p.statement])[0]
    assert float(again @ np.asarray(p.embedding)) > 0.999
    raw = embedder.encode([ms[0].text])[0]
    assert float(raw @ np.asarray(p.embedding)) < 0.99


def test_pattern_ids_are_stable(gen: Generalizer) -> None:
    a = [p.pattern_id for p in gen.generalize(USERS["ana"])]
    b = [p.pattern_id for p in gen.generalize(list(reversed(USERS["ana"])))]
    assert a == b and len(set(a)) == len(a)


def test_private_and_excluded_memories_never_enter(gen: Generalizer) -> None:
    ms = [
        mem(1, "I always use dark mode in my code editor."),
        mem(2, "The Bluebird merger closes next quarter, keep it quiet.", tags=["work", "PRIVATE"]),
        mem(3, "My therapist appointment moved to Thursdays.", tags=["Private"]),
        mem(4, "Dark theme in the code editor, always."),
        mem(5, "Secret handshake with the landlord about the deposit."),
    ]
    patterns = gen.generalize(ms, exclude={5})
    used = {i for p in patterns for i in p.source_memory_ids}
    assert used == {1, 4}
    text = " ".join(p.statement + " " + " ".join(p.phrases) for p in patterns)
    for word in ("merger", "quarter", "therapist", "thursdays", "landlord", "deposit"):
        assert word not in text

    preview = preview_patterns(ms, gen, exclude={5})
    assert preview.private_memory_ids == [2, 3]
    assert preview.excluded_memory_ids == [5]
    assert preview.considered_memory_ids == [1, 4]
    out = preview.to_text()
    assert "held back as private: 2 (ids 2, 3)" in out
    assert "from memories: 1, 4" in out
    for word in ("Bluebird", "merger", "therapist", "landlord"):
        assert word.lower() not in out.lower()
    assert preview.patterns[0].statement in out
    assert all(ph in out for ph in preview.patterns[0].phrases)


def test_preview_min_confidence_filters(gen: Generalizer) -> None:
    ms = USERS["ana"] + [mem(5, "Dark theme in the code editor, always.")]
    everything = preview_patterns(ms, gen)
    strong = preview_patterns(ms, gen, min_confidence=0.6)
    assert len(strong.patterns) == 1 and strong.patterns[0].support == 2
    assert strong.below_confidence == len(everything.patterns) - 1
    assert "1 pattern(s) would be shared (min confidence 0.60" in strong.to_text()
    with pytest.raises(InvalidInput):
        preview_patterns(ms, gen, min_confidence=1.5)


def test_empty_and_pii_only_memories(gen: Generalizer) -> None:
    assert gen.generalize([]) == []
    assert gen.generalize([mem(1, "jane.doe@example.com +1 415 555 0100")]) == []
    assert "Nothing would be shared." in preview_patterns([], gen).to_text()


def test_normalisation_and_phrases() -> None:
    assert normalize_statement("I'm REALLY into <PERSON>'s jazz, basically!!") == "user is into <PERSON>'s jazz!"
    assert normalize_statement("You should call me at <PHONE>") == "user should call user at <PHONE>"
    assert normalize_statement("My <ORG> account") == "user's <ORG> account"
    both = ["user uses dark mode in the code editor", "dark mode in user's code editor"]
    phrases = key_phrases(both, 7)
    # shared by both statements first ("uses" is last), shorter first (each word of a phrase is
    # held by everyone who holds the phrase), alphabetical without a centrality
    assert phrases == ["code", "dark", "editor", "mode", "code editor", "dark mode", "uses"]
    assert all(not any(w in {"in", "the", "user", "user's"} for w in p.split()) for p in phrases)
    # with a centrality, the words closest in meaning to the pattern lead within a group, and only
    # the candidates that can reach the cut are scored
    asked: list[str] = []

    def centrality(cands: Sequence[str]) -> list[float]:
        asked.extend(cands)
        return [{"dark": 0.9, "mode": 0.8}.get(c, 0.1) for c in cands]

    assert key_phrases(both, 3, centrality=centrality) == ["dark", "mode", "code"]
    assert sorted(asked) == ["code", "dark", "editor", "mode"]


def test_confidence_formula_and_selection() -> None:
    assert confidence_score(1, 1.0) == 0.5
    assert confidence_score(2, 0.8) == 0.675
    assert confidence_score(10, 0.0) == pytest.approx(0.4995, abs=1e-4)
    sel = select_memories([mem(1, "a", ["PrIvAtE"]), mem(2, "b"), mem(3, "c")], exclude=[3])
    assert [m.id for m in sel.included] == [2] and sel.private_ids == [1] and sel.excluded_ids == [3]


def test_invalid_settings(embedder: SentenceTransformerEmbedder) -> None:
    with pytest.raises(InvalidInput):
        Generalizer(embedder, Scrubber(), similarity_threshold=0)
    with pytest.raises(InvalidInput):
        Generalizer(embedder, Scrubber(), max_phrases=0)
