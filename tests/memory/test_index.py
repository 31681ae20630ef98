"""The approximate (IVF) vector index, past ``Settings.ivf_threshold``: as good as exact search for
recall, and a forgotten memory's vector really leaves it."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from continuum_mcp.config import Settings
from continuum_mcp.memory.store import MemoryInput, MemoryStore
from embeddings import SentenceTransformerEmbedder

PEOPLE = ["Alice", "Bob", "Carmen", "Deepak", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas"]
THINGS = ["flight to Osaka", "dentist appointment", "sourdough starter", "bike repair", "tax return",
          "piano lesson", "garden shed", "passport renewal", "birthday dinner", "server migration",
          "book club", "car insurance", "marathon training", "kitchen tiles", "job interview"]
VERBS = ["moved", "cancelled", "booked", "paid for", "forgot about", "asked about", "finished", "postponed"]
QUERIES = ["when is the dentist", "what happened with the flight", "who paid for the tiles", "marathon plans",
           "passport", "did anyone cancel the piano lesson", "server move", "insurance for the car",
           "Grace's birthday dinner", "the interview Jonas had", "bread baking", "tax paperwork",
           "who repaired the bike", "the shed in the garden", "book club meeting"]


def _texts() -> list[str]:
    combos = itertools.product(PEOPLE, VERBS, THINGS)
    return [f"{p} {v} the {t} on day {i % 28 + 1}." for i, (p, v, t) in enumerate(combos)][:450]


def _exact_top(store: MemoryStore, qvec: np.ndarray, k: int) -> list[int]:
    rows = store._conn.execute("SELECT id, embedding FROM memories").fetchall()
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    order = np.argsort(-(vecs @ qvec))[:k]
    return [rows[i][0] for i in order]


@pytest.mark.slow
def test_approximate_index_recalls_what_exact_search_finds_and_forgets(
        tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    settings = Settings(data_dir=tmp_path / "m", ivf_threshold=300, dedup_threshold=1.0)
    with MemoryStore(settings, embedder) as s:
        s.remember_many([MemoryInput(text=t) for t in _texts()])
        index = s._vectors()
        assert index.kind == "ivf" and index.count == 450
        qvecs = embedder.encode(QUERIES)
        found = [len(set(h for h, _ in index.search(q, 10)) & set(_exact_top(s, q, 10))) for q in qvecs]
        assert sum(found) / (10 * len(QUERIES)) >= 0.95

        victim = index.search(qvecs[0], 1)[0][0]
        vec = np.frombuffer(s._conn.execute("SELECT embedding FROM memories WHERE id = ?", (victim,)).fetchone()[0],
                            dtype=np.float32)
        s.forget([victim])
        index = s._vectors()
        assert index.count == 449
        assert victim not in [h for h, _ in index.search(vec, 10)]


@pytest.mark.slow
def test_near_duplicate_probe_past_side_index_threshold_still_links_updates(
        tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    """Past PROBE_MIN the write path probes an IVF side index; a restatement is still found."""
    from continuum_mcp.memory import vector_index

    settings = Settings(data_dir=tmp_path / "m")
    texts = _texts()
    with MemoryStore(settings, embedder) as s:
        vecs = embedder.encode(texts)
        # Fill past the side-index size with the real vectors, then with distinct rotations of them.
        rng = np.random.default_rng(3)
        extra = vecs[rng.integers(len(vecs), size=vector_index.PROBE_MIN)] + rng.normal(0, 0.05, (vector_index.PROBE_MIN, vecs.shape[1]))
        extra = (extra / np.linalg.norm(extra, axis=1, keepdims=True)).astype(np.float32)
        s.remember_many([MemoryInput(text=t) for t in texts], vectors=vecs, near=False)
        s.remember_many([MemoryInput(text=f"synthetic {i}") for i in range(len(extra))], vectors=extra, near=False)
        target = s.remember("Alice moved the dentist appointment to Friday at 10am.")
        update = s.remember("Alice moved the dentist appointment to Friday at 11am.")
        assert s._vectors().count > vector_index.PROBE_MIN
        assert update.status == "updated" and update.updates == target.memory.id


@pytest.mark.slow
def test_approximate_index_keeps_every_id_right_after_deletes_and_updates(
        tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    """A forget or an update removes vectors from the IVF index: every other memory must still come
    back under its own id (an id map over IVF shifted later ids after a removal), before and after
    the index is saved and loaded again."""
    settings = Settings(data_dir=tmp_path / "m", ivf_threshold=300, dedup_threshold=1.0)
    texts = _texts()
    with MemoryStore(settings, embedder) as s:
        made = [r.memory.id for r in s.remember_many([MemoryInput(text=t) for t in texts])]
        assert s._vectors().kind == "ivf"
        s.forget(made[10:20])
        s.update(made[30], text="Hiro repainted the garden shed a bright green.")
        vecs = embedder.encode([texts[i] for i in range(100, 140)])
        for i, v in zip(range(100, 140), vecs):
            assert s._vectors().search(v, 1)[0][0] == made[i]
        assert s.recall("who repainted the shed green", k=1, mode="semantic").hits[0].memory.id == made[30]
        gone = embedder.encode([texts[12]])[0]
        assert not set(h for h, _ in s._vectors().search(gone, 10)) & set(made[10:20])
    with MemoryStore(settings, embedder) as s:  # loaded from the saved file: same answers
        index = s._vectors()
        assert index.kind == "ivf" and index.count == 440
        for i, v in zip(range(100, 140), vecs):
            assert index.search(v, 1)[0][0] == made[i]


def test_probe_side_index_finds_restatements_and_forgets_removed_vectors() -> None:
    """The write path's side index: a stored vector is found from a query at cosine ~0.95 of it, a
    vector filed in the cell its probe found is found too, and a removed one is never returned."""
    from continuum_mcp.memory._probe import SideIndex

    rng = np.random.default_rng(5)
    topics = rng.normal(size=(300, 64)).astype(np.float32)  # clustered, like sentence embeddings
    xb = topics[rng.integers(300, size=6000)] + rng.normal(0, 0.12, (6000, 64)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    ids = np.arange(1, 6001, dtype=np.int64)
    side = SideIndex.build(xb[:5000], ids[:5000])
    fresh = side.nearest(xb[5000:])  # a probe of new vectors, then filed where it found them
    side.add(xb[5000:], ids[5000:], fresh.home)
    assert side.count == 6000
    pick = rng.choice(6000, 200, replace=False)
    noise = rng.normal(size=(200, 64)).astype(np.float32)
    noise -= (noise * xb[pick]).sum(axis=1, keepdims=True) * xb[pick]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = xb[pick] + 0.33 * noise  # cosine 0.95 to its source
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    found = side.nearest(q).nearest
    source = (q * xb[pick]).sum(axis=1)  # the source itself, or one at least as close, must come back
    assert sum(f is not None and f[1] >= s - 1e-5 for f, s in zip(found, source)) >= 198
    side.remove_ids(ids[pick])
    assert side.count == 5800
    assert all(f is None or f[0] not in set(ids[pick].tolist()) for f in side.nearest(q).nearest)
