"""Codebook versions: learned versions are named by their content, slot ids carry the version so
that two versions never share a slot id, and patterns are re-slotted under an adopted version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from continuum_mcp.errors import InvalidInput, StoreCorrupt
from continuum_mcp.federation.submission import PlannedPattern, reslot, secagg_input
from continuum_mcp.privacy.codebook import (
    SLOT_INDEX_BITS, Codebook, codebook_version_id, slot_id, split_slot_id, version_tag,
)


def _learned(seed: int = 0) -> Codebook:
    v0 = Codebook.load("v0")
    rng = np.random.default_rng(seed)
    return Codebook.from_vectors(v0.vectors + 0.05 * rng.normal(size=v0.vectors.shape), parent="v0")


def test_v0_slot_ids_are_its_indices() -> None:
    v0 = Codebook.load("v0")
    assert v0.tag == version_tag("v0") == 0
    assert np.array_equal(v0.slot_ids(v0.vectors), np.arange(256))
    assert slot_id("v0", 17) == 17 and split_slot_id(17) == (0, 17)


def test_learned_versions_are_named_by_content_and_never_share_slot_ids() -> None:
    a, b = _learned(0), _learned(1)
    assert a.version == codebook_version_id(a.vectors) and a.version.startswith("c-") and a.parent == "v0"
    assert Codebook.from_vectors(a.vectors, parent="v0").version == a.version  # same vectors, same name
    assert a.version != b.version and len({0, a.tag, b.tag}) == 3
    ids = {name: {slot_id(name, i) for i in range(256)} for name in ("v0", a.version, b.version)}
    assert not ids["v0"] & ids[a.version] and not ids[a.version] & ids[b.version] and not ids["v0"] & ids[b.version]
    assert all(0 <= s < 2**32 for s in ids[a.version])  # what the AEAD binds
    sid = int(a.slot_ids(a.vectors[5:6])[0])
    assert sid >> SLOT_INDEX_BITS == a.tag and a.index_of(sid) == 5
    with pytest.raises(InvalidInput, match="is not a slot of codebook"):
        b.index_of(sid)
    with pytest.raises(InvalidInput, match="is not a slot of codebook"):
        Codebook.load("v0").index_of(sid)
    assert np.allclose(np.linalg.norm(a.vectors, axis=1), 1.0, atol=1e-6)


def test_learned_versions_are_kept_and_checked_on_load(tmp_path: Path) -> None:
    a = _learned()
    path = a.save(tmp_path)
    again = Codebook.load(a.version, tmp_path)
    assert again.version == a.version and np.array_equal(again.vectors, a.vectors)
    assert Codebook.from_b64(a.to_b64(), 256, 384, parent="v0").version == a.version
    other = _learned(3)
    path.write_bytes(other.save(tmp_path / "x").read_bytes())  # someone swaps the file
    with pytest.raises(StoreCorrupt, match="does not hold the vectors"):
        Codebook.load(a.version, tmp_path)
    with pytest.raises(InvalidInput, match="is not kept"):
        Codebook.load(_learned(4).version, tmp_path)
    with pytest.raises(InvalidInput, match="bytes"):
        Codebook.from_b64(a.to_b64(), 128, 384, parent="v0")


def _pattern(slot: int, emb: np.ndarray, confidence: float) -> PlannedPattern:
    return PlannedPattern(slot=slot, confidence=confidence, phrases=["p"], statement="s", pattern_id=f"p{slot}-{confidence}",
                          source_memory_ids=[1], embedding=[float(x) for x in emb])


def test_reslot_moves_patterns_to_the_adopted_version_keeping_the_strongest_per_slot() -> None:
    v0, new = Codebook.load("v0"), _learned()
    rng = np.random.default_rng(7)
    embs = v0.vectors[[3, 3, 40, 90]] + 0.01 * rng.normal(size=(4, 384))
    planned = [_pattern(int(s), e, c) for s, e, c in zip(v0.slot_ids(embs), embs, (0.9, 0.8, 0.7, 0.95))]
    assert [p.slot for p in planned] == [3, 3, 40, 90]
    moved = reslot(planned, new)
    assert sorted(new.index_of(p.slot) for p in moved) == sorted({int(i) for i in new.nearest(embs)})
    assert all(p.slot >> SLOT_INDEX_BITS == new.tag for p in moved)
    kept = {new.index_of(p.slot): p.confidence for p in moved}
    assert kept[int(new.nearest(embs[:1])[0])] == 0.9  # the stronger of the two near slot 3
    # the secure-aggregation input places each pattern at its index's block, whatever the version
    vec = secagg_input(moved, 256, 384, 1.0)
    for p in moved:
        i = new.index_of(p.slot)
        block = vec[i * 384:(i + 1) * 384]
        assert float(block @ np.asarray(p.embedding)) > 0
    assert reslot([], new) == []
