"""Hybrid fusion is semantic-led: weak keyword matches cannot push out a good semantic match, a
rare exact term still helps; and the pure pieces of recall behave as documented."""

from __future__ import annotations

from continuum_mcp.memory import MemoryStore
from continuum_mcp.memory.search import current_first, fts_query, fuse


def test_common_words_shared_with_the_query_do_not_push_out_the_answer(store: MemoryStore) -> None:
    answer = store.remember("I take my coffee black with no sugar").memory.id
    for i in range(40):
        store.remember(f"Remember to take the bins out and take photo number {i} of the garden")
    hits = store.recall("how do I take my coffee", mode="hybrid", k=3).hits
    assert hits[0].memory.id == answer
    semantic = store.recall("how do I take my coffee", mode="semantic", k=3).hits
    assert semantic[0].memory.id == answer


def test_fusion_needs_semantic_support_for_a_keyword_boost() -> None:
    semantic = [(1, 0.62), (2, 0.55)]
    keyword = [(3, 9.0), (2, 4.0)]  # 3 matches a word but means nothing like the query
    cos = {1: 0.62, 2: 0.55, 3: 0.05}
    ranked = [mid for mid, _ in fuse(semantic, keyword, cos, floor=0.2)]
    assert ranked[-1] == 3 and set(ranked) == {1, 2, 3}
    # With semantic support, the keyword evidence counts: 2 overtakes 1 (a pool of 50, as recall uses).
    pool = [(1, 0.62), (2, 0.60)] + [(100 + i, 0.5 - i * 0.006) for i in range(48)]
    ranked = [mid for mid, _ in fuse(pool, [(2, 9.0), (120, 3.0)], dict(pool), floor=0.2)]
    assert ranked[0] == 2 and ranked[1] == 1


def test_fusion_keeps_cosine_on_its_own_scale() -> None:
    """A pool whose cosines lie close together is not stretched to 0..1: the best keyword match
    (0.25 of the score) outweighs a cosine lead of 0.05, a weak keyword match does not."""
    semantic = [(1, 0.55), (2, 0.50), (3, 0.49)]
    cos = dict(semantic)
    assert [m for m, _ in fuse(semantic, [(2, 8.0)], cos, floor=0.2)][:2] == [2, 1]
    assert [m for m, _ in fuse(semantic, [(2, 8.0), (3, 0.8)], cos, floor=0.2)] == [2, 1, 3]
    # The boost is relative to the query's best BM25, so its scale does not matter.
    assert fuse(semantic, [(2, 8.0), (3, 4.0)], cos, 0.2) == fuse(semantic, [(2, 80.0), (3, 40.0)], cos, 0.2)


def test_current_version_is_put_just_above_the_version_it_replaced() -> None:
    ranked = [(10, 0.9), (11, 0.8), (12, 0.7)]
    assert current_first(ranked, {10: 12}) == [(12, 0.9), (10, 0.9), (11, 0.8)]
    assert current_first(ranked, {10: 20, 20: 30}) == [(30, 0.9), (20, 0.9), (10, 0.9), (11, 0.8), (12, 0.7)]
    assert current_first(ranked, {}) == ranked


def test_hybrid_keyword_query_leaves_out_stop_words_and_question_words() -> None:
    assert fts_query("what is the number of Jo", drop_stop_words=True) == '"number" OR "jo"'
    assert fts_query("When did Caroline go", drop_stop_words=True) == '"caroline" OR "go"'
    assert fts_query("the of", drop_stop_words=True) == '"the" OR "of"'  # nothing else left: keep them
    assert fts_query('"; DROP', max_terms=1) == '"drop"'
