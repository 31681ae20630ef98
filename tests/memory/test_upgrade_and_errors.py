"""Upgrades lose nothing; storage problems and bad input get their own precise errors and change nothing."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from continuum_mcp.config import Settings
from continuum_mcp.errors import DiskFull, InvalidInput, ModelMismatch, StoreReadOnly
from continuum_mcp.memory import DB_FILE, MemoryStore
from continuum_mcp.memory._schema import SCHEMA_VERSION
from embeddings import SentenceTransformerEmbedder

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1.db"  # written by the schema-1 release


def rows(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, text, tags, metadata, source, created_at, updated_at, content_hash, "
                            "embedding, model_id FROM memories ORDER BY id").fetchall()
    finally:
        conn.close()


def test_a_schema_1_store_opens_and_migrates_in_place_keeping_everything(
        tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    data = tmp_path / "m"
    data.mkdir()
    shutil.copy(FIXTURE, data / DB_FILE)
    before = rows(data / DB_FILE)
    tags_before = sqlite3.connect(data / DB_FILE).execute("SELECT memory_id, tag FROM memory_tags ORDER BY 1, 2").fetchall()
    with MemoryStore(Settings(data_dir=data), embedder) as s:
        mems = list(s.all_memories())
        assert [m.id for m in mems] == [r[0] for r in before] == [1, 2, 3, 5]
        assert mems[0].created_at.isoformat() == "2024-03-01T09:30:00+00:00" and mems[0].metadata == {"k": 1}
        assert mems[1].tags == ["work", "deadline", "q2"] and mems[1].updated_at > mems[1].created_at
        assert all(m.supersedes is None and m.superseded_by is None for m in mems)
        assert s.recall("how do I take my coffee", k=1, mode="semantic").hits[0].memory.id == 1
        assert s.recall("peanuts", k=1, mode="keyword").hits[0].memory.id == 5
        r = s.remember("Dana's phone number is +44 7700 900988")  # the new column works
        assert r.status == "updated" and r.updates == 3
        # v3 fills the keyword index per batch (no insert trigger): a new memory is found by keyword
        assert [h.memory.id for h in s.recall("900988", k=3, mode="keyword").hits] == [r.memory.id]
    after = rows(data / DB_FILE)
    assert after[:4] == before  # every row, tag, time and vector byte-identical
    conn = sqlite3.connect(data / DB_FILE)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'memories_ai'").fetchone()
    assert conn.execute("INSERT INTO memories_fts(memories_fts, rank) VALUES ('integrity-check', 1)") is not None
    assert conn.execute("SELECT memory_id, tag FROM memory_tags WHERE memory_id <= 5 ORDER BY 1, 2").fetchall() == tags_before
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with MemoryStore(Settings(data_dir=data), embedder) as s:  # and opens again as v3, unchanged
        assert s.stats().count == 5


def test_a_read_only_store_reads_and_refuses_writes_precisely(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    data = tmp_path / "m"
    with MemoryStore(Settings(data_dir=data), embedder) as s:
        s.remember("I take my coffee black")
    with MemoryStore(Settings(data_dir=data, read_only=True), embedder) as s:
        assert s.read_only and s.recall("coffee", k=1).hits[0].memory.text == "I take my coffee black"
        with pytest.raises(StoreReadOnly, match="read-only"):
            s.remember("Something new")
        with pytest.raises(StoreReadOnly):
            s.forget([1])
    with MemoryStore(Settings(data_dir=data), embedder) as s:
        assert s.stats().count == 1


def test_a_full_disk_is_reported_as_such_and_changes_nothing(store: MemoryStore) -> None:
    store.remember("A first memory that fits")
    conn = store._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite answers SQLITE_FULL as on a full disk
    with pytest.raises(DiskFull, match="full"):
        store.remember("A long memory that will not fit " + "x" * 15000)
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert [m.text for m in store.all_memories()] == ["A first memory that fits"]


def test_a_store_re_embedded_by_another_process_refuses_writes(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    settings = Settings(data_dir=tmp_path / "m")
    stale = MemoryStore(settings, embedder)
    stale.remember("Written with the original model")
    other = SentenceTransformerEmbedder(model_id="example/other-model")
    with MemoryStore(settings, other) as s:
        s.reembed()
    with pytest.raises(ModelMismatch, match="re-embedded with 'example/other-model'.*reembed"):
        stale.remember("This would be invisible to semantic recall")
    stale.close()
    with MemoryStore(settings, other) as s:
        assert [m.text for m in s.all_memories()] == ["Written with the original model"]


@pytest.mark.parametrize("text", ["\u200b\u200b", "\u200d\ufeff\u2060", "\x00\x01\x1f", " \u200b \t\x07 "])
def test_text_of_only_invisible_characters_is_refused(store: MemoryStore, text: str) -> None:
    with pytest.raises(InvalidInput, match="invisible"):
        store.remember(text)
    assert store.stats().count == 0


def test_broken_unicode_is_refused(store: MemoryStore) -> None:
    with pytest.raises(InvalidInput, match="surrogate"):
        store.remember("hello \ud83d")


@pytest.mark.parametrize("bad", [True, False, 2**63, -1, 0, "1", 1.0])
def test_ids_must_be_plain_integers_in_range(store: MemoryStore, bad: object) -> None:
    mid = store.remember("Keep me").memory.id
    for call in (lambda: store.get(bad), lambda: store.forget([bad]), lambda: store.update(bad, text="x")):  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            call()
    assert store.get(mid).text == "Keep me"


def test_min_score_must_be_finite(store: MemoryStore) -> None:
    for bad in (float("nan"), float("inf"), True):
        with pytest.raises(InvalidInput, match="min_score"):
            store.recall("x", min_score=bad)


def test_recall_says_when_nothing_is_relevant(store: MemoryStore) -> None:
    store.remember("I take my coffee black with no sugar")
    store.remember("Use pnpm instead of npm in the frontend repository")
    good = store.recall("how do I like my coffee")
    assert not good.no_good_match and good.hits[0].similarity is not None and good.hits[0].similarity > 0.4
    for mode in ("semantic", "hybrid"):
        none = store.recall("quantum chromodynamics lattice gauge theory", mode=mode)  # type: ignore[arg-type]
        assert none.no_good_match and all(h.similarity is not None and h.similarity < 0.2 for h in none.hits)
    assert store.recall("xylophone", mode="keyword").no_good_match


def test_export_import_keeps_update_links_and_times(store: MemoryStore, tmp_path: Path,
                                                    embedder: SentenceTransformerEmbedder) -> None:
    import io
    from datetime import datetime, timezone
    old = store.remember("Jo's number is 555 0134", at=datetime(2022, 1, 2, tzinfo=timezone.utc)).memory
    new = store.remember("Jo's number is 555 0143", at=datetime(2023, 1, 2, tzinfo=timezone.utc)).memory
    assert new.supersedes == old.id
    buf = io.StringIO()
    store.export_jsonl(buf)
    with MemoryStore(Settings(data_dir=tmp_path / "copy"), embedder) as copy:
        copy.remember("Something first, so the ids move")
        copy.import_jsonl(io.StringIO(buf.getvalue()))
        by_text = {m.text: m for m in copy.all_memories()}
        a, b = by_text[old.text], by_text[new.text]
        assert b.supersedes == a.id and a.superseded_by == b.id
        assert (a.created_at, b.created_at) == (old.created_at, new.created_at)
        assert np.isclose(copy.recall(new.text, k=1, mode="semantic").hits[0].similarity or 0, 1.0, atol=1e-4)
