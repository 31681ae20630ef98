"""Nothing the user said is lost: only true restatements fold into an existing memory; an update
is stored, linked to what it supersedes, reported by remember, and ranked just above the old one."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from continuum_mcp.config import Settings
from continuum_mcp.memory import MemoryInput, MemoryStore, same_facts
from embeddings import SentenceTransformerEmbedder

# (earlier, later): the later one changes a fact, so both must be kept.
NEVER_MERGE = [
    ("I am not allergic to peanuts", "I am allergic to peanuts"),
    ("I am allergic to peanuts", "I am not allergic to peanuts"),
    ("Meeting with Bob moved to Wednesday at 3pm", "Meeting with Bob moved to Tuesday at 3pm"),
    ("Dana's phone number is +44 7700 900987", "Dana's phone number is +44 7700 900988"),
    ("Alice's flight lands at 11:15", "Alice's flight lands at 9:40"),
    ("Process 3 memory 147", "Process 1 memory 145"),
    ("Lunch with Alice on Friday at noon", "Lunch with Carol on Friday at noon"),
    ("The dentist appointment is on 4 March", "The dentist appointment is on 14 March"),
    ("The team standup is at 9am", "The team standup is at 9pm"),
    ("Jo's number is 555 0134", "Jo's number is 555 0143"),
    ("I never drink coffee after lunch", "I drink coffee after lunch"),
    ("My favourite colour is blue", "My favourite colour is green"),
]

# (stored, restated): the same statement, so the second folds into the first.
RESTATEMENTS = [
    ("The wifi password for the cabin is on the fridge", "The wifi password for the cabin is on the fridge."),
    ("Dana's phone number is +44 7700 900987", "dana's phone number is +44 7700 900987!"),
    ("Meeting with Bob moved to Wednesday at 3pm", "Meeting with Bob moved to Wednesday at 3pm  ."),
    ("The quarterly report is due on Friday", "The quarterly report is due on friday"),
    ("User prefers dark mode in editors", "The user prefers dark mode in the editors"),
]


@pytest.mark.parametrize("old, new", NEVER_MERGE)
def test_comparator_never_calls_a_changed_fact_the_same(old: str, new: str) -> None:
    assert not same_facts(old, new) and not same_facts(new, old)


@pytest.mark.parametrize("old, new", RESTATEMENTS)
def test_comparator_accepts_restatements(old: str, new: str) -> None:
    assert same_facts(old, new) and same_facts(new, old)


@pytest.mark.parametrize("old, new", NEVER_MERGE)
def test_a_changed_fact_is_stored_never_merged(store: MemoryStore, old: str, new: str) -> None:
    first = store.remember(old)
    second = store.remember(new)
    assert second.status in ("created", "updated") and second.memory.id != first.memory.id
    assert second.duplicate_of is None
    assert {m.text for m in store.all_memories()} == {old, new}


@pytest.mark.parametrize("old, new", RESTATEMENTS)
def test_a_restatement_folds_into_the_existing_memory(store: MemoryStore, old: str, new: str) -> None:
    first = store.remember(old)
    again = store.remember(new)
    assert again.status in ("duplicate", "near_duplicate")
    assert again.memory.id == again.duplicate_of == first.memory.id and again.updates is None
    assert store.stats().count == 1


def test_an_update_links_to_what_it_supersedes_and_ranks_above_it(store: MemoryStore) -> None:
    old = store.remember("Dana's phone number is +44 7700 900987", tags=["contact"]).memory
    store.remember("The cabin's wifi is very slow in the evenings")
    r = store.remember("Dana's phone number is +44 7700 900988", tags=["contact"])
    assert r.status == "updated" and r.updates == old.id and r.similarity is not None and r.similarity >= 0.95
    assert r.memory.supersedes == old.id
    assert store.get(old.id).superseded_by == r.memory.id  # the old version is kept, marked
    for mode in ("semantic", "hybrid"):
        ids = [h.memory.id for h in store.recall("What is Dana's phone number?", mode=mode, k=3).hits]  # type: ignore[arg-type]
        assert ids.index(r.memory.id) < ids.index(old.id), mode
    # Even when the query matches the old wording best, the current version comes first.
    ids = [h.memory.id for h in store.recall("+44 7700 900987", mode="keyword", k=3).hits]
    assert ids[:2] == [r.memory.id, old.id]


def test_a_chain_of_updates_links_to_the_current_version(store: MemoryStore) -> None:
    a = store.remember("Dana's phone number is +44 7700 900987").memory.id
    b = store.remember("Dana's phone number is +44 7700 900988").memory.id
    c = store.remember("Dana's phone number is +44 7700 900989")
    assert c.updates in (a, b) and store.get(b).supersedes == a
    assert c.updates == b  # linked to the newest version, not to the oldest


def test_forgetting_the_old_version_keeps_the_new_one(store: MemoryStore) -> None:
    old = store.remember("Alice's flight lands at 11:15").memory.id
    new = store.remember("Alice's flight lands at 9:40").memory.id
    store.forget([old])
    assert store.get(new).supersedes is None and store.get(new).text.endswith("9:40")


def test_on_duplicate_store_keeps_even_an_exact_repeat(store: MemoryStore) -> None:
    first = store.remember("Water the plants on Sunday")
    forced = store.remember("Water the plants on Sunday", on_duplicate="store")
    assert forced.status in ("created", "updated") and forced.memory.id != first.memory.id
    assert store.stats().count == 2
    from continuum_mcp.errors import InvalidInput
    with pytest.raises(InvalidInput, match="on_duplicate"):
        store.remember("x", on_duplicate="maybe")  # type: ignore[arg-type]


def test_batch_keeps_updates_and_folds_restatements_within_itself(store: MemoryStore) -> None:
    rs = store.remember_many([MemoryInput(text="Alpha project kickoff is in May"),
                              MemoryInput(text="Alpha project kickoff is in May."),
                              MemoryInput(text="alpha project kickoff is in may"),
                              MemoryInput(text="Alpha project kickoff is in June")])
    assert [r.status for r in rs][:3] == ["created", "near_duplicate", "duplicate"]
    assert rs[3].status in ("created", "updated") and rs[3].memory.id != rs[0].memory.id
    assert store.stats().count == 2


def test_threshold_from_settings_and_env(tmp_path: Path, embedder: SentenceTransformerEmbedder,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUUM_DEDUP_THRESHOLD", "1.0")
    settings = Settings.from_env(data_dir=tmp_path / "m")
    assert settings.dedup_threshold == 1.0
    with MemoryStore(settings, embedder) as s:
        s.remember("The wifi password for the cabin is on the fridge")
        r = s.remember("The wifi password for the cabin is on the fridge.")
        assert r.status == "created" and r.updates is None  # 1.0: no near-duplicate search at all
    assert Settings.from_env(data_dir=tmp_path / "m", dedup_threshold=0.9).dedup_threshold == 0.9


def test_memories_carry_their_own_time(store: MemoryStore) -> None:
    when = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)
    m = store.remember("Caroline went to the LGBTQ support group", at=when).memory
    assert m.created_at == when
    from continuum_mcp.memory import Filters
    hits = store.recall("support group", filters=Filters(until=datetime(2023, 12, 31, tzinfo=timezone.utc))).hits
    assert [h.memory.id for h in hits] == [m.id]
