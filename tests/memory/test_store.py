"""The memory store as a specification: what remember, recall, update, forget, list, stats,
export/import and re-embed promise, on real SQLite, FAISS and the real embedding model."""

from __future__ import annotations

import io
import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from continuum_mcp.config import Settings
from continuum_mcp.errors import InvalidInput, ModelMismatch, NotFound, StoreCorrupt
from continuum_mcp.memory.store import DB_FILE, Filters, MemoryInput, MemoryStore
from continuum_mcp.memory.vector_index import INDEX_FILE, MANIFEST_FILE
from embeddings import SentenceTransformerEmbedder

FACTS = [
    ("I take my coffee black with no sugar", ["preference", "food"]),
    ("The quarterly report for the Berlin office is due on Friday", ["work", "deadline"]),
    ("My daughter's piano recital is next Saturday afternoon", ["family"]),
    ("Use pnpm instead of npm in the frontend repository", ["work", "tooling"]),
    ("I am allergic to peanuts", ["health", "food"]),
]


def fill(store: MemoryStore) -> dict[str, int]:
    return {text: store.remember(text, tags=tags).memory.id for text, tags in FACTS}


def snapshot(store: MemoryStore) -> list[tuple[int, str, list[str]]]:
    return [(m.id, m.text, m.tags) for m in store.all_memories()]


# ----- remember ----------------------------------------------------------------------------------
def test_remember_stores_text_tags_metadata_and_hash(store: MemoryStore) -> None:
    r = store.remember("  Prefers dark mode in every editor  ", tags=["UI", "pref", "ui"], metadata={"k": [1, 2]})
    assert r.status == "created"
    m = store.get(r.memory.id)
    assert m.text == "Prefers dark mode in every editor"
    assert m.tags == ["ui", "pref"]  # normalised, de-duplicated, order kept
    assert m.metadata == {"k": [1, 2]}
    assert len(m.content_hash) == 64 and m.created_at == m.updated_at


def test_exact_duplicate_returns_existing_memory(store: MemoryStore) -> None:
    first = store.remember("Meeting room B has the good projector")
    again = store.remember("meeting room b   has the GOOD projector")
    assert again.status == "duplicate" and again.memory.id == first.memory.id
    assert store.stats().count == 1


def test_near_duplicate_by_cosine_returns_existing_memory(store: MemoryStore) -> None:
    first = store.remember("The wifi password for the cabin is on the fridge")
    near = store.remember("The wifi password for the cabin is on the fridge.")
    assert near.status == "near_duplicate" and near.memory.id == first.memory.id
    assert near.similarity is not None and near.similarity >= 0.95
    different = store.remember("The cabin's wifi is very slow in the evenings")
    assert different.status == "created"
    assert store.stats().count == 2


def test_near_duplicate_threshold_is_configurable(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    with MemoryStore(Settings(data_dir=tmp_path / "m", dedup_threshold=1.0), embedder) as s:
        s.remember("The wifi password for the cabin is on the fridge")
        assert s.remember("The wifi password for the cabin is on the fridge.").status == "created"


def test_batch_dedups_within_itself(store: MemoryStore) -> None:
    rs = store.remember_many([MemoryInput(text="Alpha project kickoff is in May"),
                              MemoryInput(text="Alpha project kickoff is in May."),
                              MemoryInput(text="alpha project kickoff is in may")])
    assert [r.status for r in rs] == ["created", "near_duplicate", "duplicate"]
    assert len({r.memory.id for r in rs}) == 1


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"), ("   \n\t", "empty"), ("x" * 20_001, "limit is 20000"), (42, "valid string"),
])
def test_remember_rejects_bad_text_and_changes_nothing(store: MemoryStore, text: object, fragment: str) -> None:
    fill(store)
    before = snapshot(store)
    with pytest.raises(InvalidInput, match=fragment):
        store.remember(text)  # type: ignore[arg-type]
    assert snapshot(store) == before


@pytest.mark.parametrize("tags, metadata, fragment", [
    ("work", None, "tags: Input should be a valid list"), (["has space"], None, "invalid tag"),
    ([1], None, "tags.0: Input should be a valid string"),
    ([f"t{i}" for i in range(40)], None, "at most 32"), (None, ["not", "a", "dict"], "metadata: Input should be a valid dictionary"),
    (None, {"x": object()}, "JSON-serialisable"), (None, {"x": "y" * 20_000}, "limit"),
])
def test_remember_rejects_bad_tags_and_metadata(store: MemoryStore, tags: object, metadata: object, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        store.remember("a fine memory", tags=tags, metadata=metadata)  # type: ignore[arg-type]
    assert store.stats().count == 0


# ----- recall ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["semantic", "keyword", "hybrid"])
def test_recall_finds_the_right_memory_in_every_mode(store: MemoryStore, mode: str) -> None:
    ids = fill(store)
    queries = {"semantic": "how do I like my coffee", "keyword": "peanuts allergy",
               "hybrid": "which package manager for the frontend"}
    expected = {"semantic": FACTS[0][0], "keyword": FACTS[4][0], "hybrid": FACTS[3][0]}
    r = store.recall(queries[mode], mode=mode, k=3)  # type: ignore[arg-type]
    assert r.hits[0].memory.id == ids[expected[mode]]
    # Keyword mode does not embed the query, so it reports no cosine.
    assert all(h.similarity is None if mode == "keyword" else -1.0 <= h.similarity <= 1.0 for h in r.hits)  # type: ignore[operator]
    assert [h.score for h in r.hits] == sorted((h.score for h in r.hits), reverse=True)


@pytest.mark.slow
def test_hybrid_recovers_an_exact_term_that_semantic_misses(store: MemoryStore) -> None:
    ids = fill(store)
    target = store.remember("Ticket INC-48213 is the flaky login test").memory.id
    for i in range(30):
        store.remember(f"Support ticket about login problems number {i} was closed by the team")
    hybrid = [h.memory.id for h in store.recall("INC-48213", mode="hybrid", k=3).hits]
    keyword = [h.memory.id for h in store.recall("INC-48213", mode="keyword", k=3).hits]
    assert keyword[0] == target and target in hybrid
    assert ids  # the filler facts stay searchable too


def test_recall_filters_by_tags_and_time(store: MemoryStore) -> None:
    ids = fill(store)
    r = store.recall("food", filters=Filters(tags_any=["health"]), k=10)
    assert [h.memory.id for h in r.hits] == [ids[FACTS[4][0]]]
    r = store.recall("work things", filters=Filters(tags_all=["work", "tooling"]), k=10)
    assert [h.memory.id for h in r.hits] == [ids[FACTS[3][0]]]
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert store.recall("coffee", filters=Filters(since=future)).hits == []
    assert len(store.recall("coffee", filters=Filters(until=future), k=10).hits) == 5
    for mode in ("semantic", "keyword"):
        r = store.recall("coffee peanuts", mode=mode, filters=Filters(tags_any=["family"]), k=10)  # type: ignore[arg-type]
        assert {h.memory.id for h in r.hits} <= {ids[FACTS[2][0]]}


def test_min_score_drops_weak_matches(store: MemoryStore) -> None:
    fill(store)
    everything = store.recall("black coffee", k=5, mode="semantic")
    strong = store.recall("black coffee", k=5, mode="semantic", min_score=0.5)
    assert 0 < len(strong.hits) < len(everything.hits)
    assert all(h.similarity >= 0.5 for h in strong.hits)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"query": ""}, "empty"), ({"query": "x", "k": 0}, "k must be"), ({"query": "x", "k": 101}, "k must be"),
    ({"query": "x", "mode": "fuzzy"}, "mode must be"), ({"query": "x", "min_score": "high"}, "min_score"),
    ({"query": "x", "filters": Filters(tags_any=["bad tag"])}, "invalid tag"),
    ({"query": "x", "filters": Filters(since=datetime(2030, 1, 1), until=datetime(2020, 1, 1))}, "empty"),
])
def test_recall_rejects_bad_arguments(store: MemoryStore, kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        store.recall(**kwargs)


def test_keyword_query_with_fts_syntax_is_safe(store: MemoryStore) -> None:
    fill(store)
    for q in ['"unbalanced', "NEAR(coffee", "coffee AND OR NOT", "*", "-- ; DROP TABLE memories"]:
        store.recall(q, mode="keyword")
    assert store.stats().count == 5


# ----- update / forget / list --------------------------------------------------------------------
def test_update_reembeds_and_reindexes(store: MemoryStore) -> None:
    ids = fill(store)
    mid = ids[FACTS[0][0]]
    m = store.update(mid, text="I drink green tea, never coffee", tags=["preference"])
    assert m.text.startswith("I drink green tea") and m.tags == ["preference"] and m.updated_at > m.created_at
    assert store.recall("green tea", mode="semantic", k=1).hits[0].memory.id == mid
    assert store.recall("green tea", mode="keyword", k=1).hits[0].memory.id == mid
    assert not store.recall("black sugar", mode="keyword").hits or \
        store.recall("black sugar", mode="keyword").hits[0].memory.id != mid
    assert store.list(Filters(tags_any=["food"])).total == 1  # old tag gone from the tag index


def test_update_errors_leave_memory_untouched(store: MemoryStore) -> None:
    ids = fill(store)
    before = snapshot(store)
    with pytest.raises(NotFound):
        store.update(9999, text="x")
    with pytest.raises(InvalidInput, match="nothing to update"):
        store.update(ids[FACTS[0][0]])
    with pytest.raises(InvalidInput, match="empty"):
        store.update(ids[FACTS[0][0]], text=" ")
    with pytest.raises(InvalidInput, match="integer"):
        store.update("1", text="x")  # type: ignore[arg-type]
    assert snapshot(store) == before


def test_forget_removes_row_keyword_entry_and_vector(store: MemoryStore) -> None:
    ids = fill(store)
    mid = ids[FACTS[4][0]]
    assert store.forget([mid]).deleted == [mid]
    with pytest.raises(NotFound):
        store.get(mid)
    for mode in ("semantic", "keyword", "hybrid"):
        assert mid not in [h.memory.id for h in store.recall("peanuts allergy", mode=mode, k=10).hits]  # type: ignore[arg-type]
    assert store._vectors().count == 4  # the vector is really gone from FAISS


def test_forget_is_all_or_nothing(store: MemoryStore) -> None:
    ids = fill(store)
    before = snapshot(store)
    with pytest.raises(NotFound, match="12345"):
        store.forget([ids[FACTS[0][0]], 12345])
    with pytest.raises(InvalidInput):
        store.forget([])
    with pytest.raises(InvalidInput):
        store.forget("1")  # type: ignore[arg-type]
    assert snapshot(store) == before


def test_list_pages_and_filters(store: MemoryStore) -> None:
    fill(store)
    page = store.list(limit=2)
    assert page.total == 5 and len(page.memories) == 2
    assert page.memories[0].text == FACTS[-1][0]  # newest first
    rest = store.list(offset=2, limit=10)
    assert len(rest.memories) == 3
    assert {m.id for m in page.memories}.isdisjoint({m.id for m in rest.memories})
    assert store.list(Filters(tags_any=["food"])).total == 2
    assert store.list(Filters(tags_all=["food", "health"])).total == 1
    with pytest.raises(InvalidInput):
        store.list(limit=0)
    with pytest.raises(InvalidInput):
        store.list(offset=-1)


def test_stats(store: MemoryStore) -> None:
    fill(store)
    s = store.stats()
    assert s.count == 5 and s.top_tags["food"] == 2 and s.top_tags["work"] == 2
    assert s.model_id == "sentence-transformers/all-MiniLM-L6-v2" and s.dim == 384
    assert s.oldest is not None and s.newest is not None and s.oldest <= s.newest


# ----- export / import ---------------------------------------------------------------------------
def test_export_import_round_trip(store: MemoryStore, tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    fill(store)
    store.update(1, metadata={"source_doc": "notes.md"})
    buf = io.StringIO()
    assert store.export_jsonl(buf) == 5
    header = json.loads(buf.getvalue().splitlines()[0])
    assert header["format"] == "continuum-mcp.memories" and header["version"] == 1
    assert header["model_id"] == embedder.model_id and header["count"] == 5
    with MemoryStore(Settings(data_dir=tmp_path / "copy"), embedder) as copy:
        progress: list[tuple[int, int]] = []
        r = copy.import_jsonl(io.StringIO(buf.getvalue()), progress=lambda d, t: progress.append((d, t)))
        assert (r.read, r.created, r.duplicates, r.reembedded) == (5, 5, 0, False)
        assert progress[-1] == (5, 5)
        original = {m.text: m for m in store.all_memories()}
        for m in copy.all_memories():
            o = original[m.text]
            assert (m.tags, m.metadata, m.created_at) == (o.tags, o.metadata, o.created_at)
        assert copy.recall("peanut allergy", k=1).hits[0].memory.text == FACTS[4][0]
        again = copy.import_jsonl(io.StringIO(buf.getvalue()))
        assert (again.created, again.duplicates) == (0, 5)


def test_import_from_another_model_reembeds(store: MemoryStore, tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    lines = [json.dumps({"format": "continuum-mcp.memories", "version": 1, "model_id": "other/model", "dim": 768}),
             json.dumps({"text": "Bring the blue folder to the dentist", "tags": ["todo"],
                         "embedding": "AAAA"})]
    r = store.import_jsonl(lines)
    assert r.reembedded and r.created == 1
    assert store.recall("dentist appointment", mode="semantic", k=1).hits[0].similarity > 0.3


@pytest.mark.parametrize("lines, fragment", [
    ([], "empty"), (["not json"], "line 1"), ([json.dumps({"format": "other"})], "not a continuum-mcp export"),
    ([json.dumps({"format": "continuum-mcp.memories", "version": 99})], "version 99"),
    ([json.dumps({"format": "continuum-mcp.memories", "version": 1}), json.dumps({"text": "ok"}), "{broken"], "line 3"),
    ([json.dumps({"format": "continuum-mcp.memories", "version": 1}), json.dumps({"text": ""})], "line 2"),
    ([json.dumps({"format": "continuum-mcp.memories", "version": 1}), json.dumps({"text": "ok", "tags": "x"})], "line 2"),
])
def test_bad_import_imports_nothing(store: MemoryStore, lines: list[str], fragment: str) -> None:
    fill(store)
    before = snapshot(store)
    with pytest.raises(InvalidInput, match=fragment):
        store.import_jsonl(lines)
    assert snapshot(store) == before


# ----- model identity ----------------------------------------------------------------------------
def test_store_refuses_another_model_and_reembed_fixes_it(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    settings = Settings(data_dir=tmp_path / "m")
    with MemoryStore(settings, embedder) as s:
        fill(s)
    other = SentenceTransformerEmbedder(model_id="example/other-model")  # same weights, another identity
    with MemoryStore(settings, other) as s:
        with pytest.raises(ModelMismatch, match="reembed"):
            s.recall("coffee")
        with pytest.raises(ModelMismatch):
            s.remember("something new")
        assert s.list().total == 5  # listing needs no model
        assert s.reembed() == 5
        assert s.recall("coffee", k=1).hits[0].memory.text == FACTS[0][0]
    with MemoryStore(settings, embedder) as s:  # now the original model is the stranger
        with pytest.raises(ModelMismatch, match="example/other-model"):
            s.recall("coffee")


# ----- the derived index -------------------------------------------------------------------------
def test_index_is_saved_and_reloaded(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    settings = Settings(data_dir=tmp_path / "m")
    with MemoryStore(settings, embedder) as s:
        fill(s)
        s.recall("coffee")
    manifest = json.loads((settings.data_dir / MANIFEST_FILE).read_text())
    assert manifest["count"] == 5 and manifest["model_id"] == embedder.model_id and manifest["dim"] == 384
    with MemoryStore(settings, embedder) as s:
        assert s.recall("coffee", k=1, mode="semantic").hits[0].memory.text == FACTS[0][0]


@pytest.mark.parametrize("damage", ["corrupt", "missing", "stale", "wrong_manifest"])
def test_index_is_rebuilt_when_corrupt_missing_or_stale(tmp_path: Path, embedder: SentenceTransformerEmbedder,
                                                       damage: str) -> None:
    settings = Settings(data_dir=tmp_path / "m")
    with MemoryStore(settings, embedder) as s:
        fill(s)
        s.recall("coffee")
    index_file = settings.data_dir / INDEX_FILE
    if damage == "corrupt":
        index_file.write_bytes(b"\x00garbage" * 100)
    elif damage == "missing":
        index_file.unlink()
    elif damage == "wrong_manifest":
        (settings.data_dir / MANIFEST_FILE).write_text("{not json")
    else:  # writes by a process that never saved its index
        conn = sqlite3.connect(settings.data_dir / DB_FILE)
        conn.execute("DELETE FROM memories WHERE text = ?", (FACTS[0][0],))
        conn.execute("INSERT INTO changes(memory_id) VALUES (1)")
        conn.commit()
        conn.close()
    with MemoryStore(settings, embedder) as s:
        hits = s.recall("black coffee no sugar", k=5, mode="semantic").hits
        texts = [h.memory.text for h in hits]
        if damage == "stale":
            assert FACTS[0][0] not in texts and len(texts) == 4
        else:
            assert texts[0] == FACTS[0][0] and len(texts) == 5


def test_ivf_index_past_threshold(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    settings = Settings(data_dir=tmp_path / "m", ivf_threshold=200)
    rng = np.random.default_rng(7)
    with MemoryStore(settings, embedder) as s:
        items = [MemoryInput(text=f"Note {i}: the {w} of sample {rng.integers(1_000_000)}")
                 for i, w in enumerate(["colour", "weight", "price", "height", "owner"] * 60)]
        s.remember_many(items)
        target = s.remember("The spare house key is under the blue flower pot").memory.id
        assert s._vectors().kind == "ivf"
        assert s.recall("where is the spare key", k=1, mode="semantic").hits[0].memory.id == target
        s.forget([target])
        assert target not in [h.memory.id for h in s.recall("where is the spare key", k=5).hits]


def test_unreadable_database_is_refused_untouched(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    d = tmp_path / "m"
    d.mkdir()
    junk = b"this is not sqlite at all" * 50
    (d / DB_FILE).write_bytes(junk)
    with pytest.raises(StoreCorrupt, match="not a readable"):
        MemoryStore(Settings(data_dir=d), embedder)
    assert (d / DB_FILE).read_bytes() == junk
