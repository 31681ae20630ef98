"""Hybrid recall is never worse than semantic on assistant-style memories.

LoCoMo rewards keyword matching (its questions reuse the conversation's words); an assistant's
memories are asked about in other words ("How can I ring Dana?" for "Dana's phone number is
..."). The check set (``fixtures/assistant_recall.json``: the facts of the update and restatement
suites plus everyday assistant memories, and paraphrased questions) guards against a fusion that
helps LoCoMo by letting weak keyword matches push out good semantic ones, which equal-weight
reciprocal-rank fusion did (MRR 0.815 here against 0.920 for semantic)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from continuum_mcp.memory import MemoryStore

DATA = json.loads((Path(__file__).parent / "fixtures" / "assistant_recall.json").read_text())


def _scores(store: MemoryStore, ids: dict[str, int], mode: str) -> dict[str, float]:
    r5 = ndcg = mrr = 0.0
    for question, key in DATA["questions"]:
        ranked = [h.memory.id for h in store.recall(question, k=10, mode=mode).hits]  # type: ignore[arg-type]
        rank = ranked.index(ids[key]) if ids[key] in ranked else None
        r5 += rank is not None and rank < 5
        ndcg += 0.0 if rank is None else 1.0 / math.log2(rank + 2)
        mrr += 0.0 if rank is None else 1.0 / (rank + 1)
    n = len(DATA["questions"])
    return {"r5": r5 / n, "ndcg10": ndcg / n, "mrr": mrr / n}


@pytest.mark.slow
def test_hybrid_is_not_worse_than_semantic_on_paraphrased_assistant_questions(store: MemoryStore) -> None:
    ids = {key: store.remember(text).memory.id for key, text in DATA["memories"]}
    semantic, hybrid = _scores(store, ids, "semantic"), _scores(store, ids, "hybrid")
    keyword = _scores(store, ids, "keyword")
    assert hybrid["r5"] >= semantic["r5"] > keyword["r5"]
    # Ranks inside the top 5 may move by a place when a shared word is real evidence, but no more
    # than that on average: at most 0.03 of MRR (two questions dropping from first to second).
    assert hybrid["mrr"] >= semantic["mrr"] - 0.03 and hybrid["ndcg10"] >= semantic["ndcg10"] - 0.03
