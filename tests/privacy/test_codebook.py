"""Codebook v0: pinned, unit rows, deterministic nearest-slot mapping, paraphrases share slots."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pytest

from continuum_mcp.privacy.codebook import CODEBOOKS, Codebook
from continuum_mcp.errors import InvalidInput
from embeddings import SentenceTransformerEmbedder


def test_v0_loads_with_pinned_hash_and_unit_rows() -> None:
    cb = Codebook.load("v0")
    assert cb.version == "v0"
    assert cb.vectors.shape == (256, 384) and cb.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(cb.vectors, axis=1), 1.0, atol=1e-5)
    # distinct centroids: no two slots are the same vector
    sims = cb.vectors @ cb.vectors.T
    np.fill_diagonal(sims, -1)
    assert sims.max() < 0.999
    data = resources.files("continuum_mcp").joinpath("data", "codebook_v0.npy").read_bytes()
    assert hashlib.sha256(data).hexdigest() == CODEBOOKS["v0"][1]
    assert not cb.vectors.flags.writeable


def test_unknown_version_and_bad_shapes_are_refused() -> None:
    with pytest.raises(InvalidInput):
        Codebook.load("v99")
    cb = Codebook.load()
    with pytest.raises(InvalidInput):
        cb.nearest(np.zeros((2, 10), dtype=np.float32))


def test_nearest_is_argmax_cosine_and_codebook_rows_map_to_themselves() -> None:
    cb = Codebook.load()
    assert np.array_equal(cb.nearest(cb.vectors), np.arange(256))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert np.array_equal(cb.nearest(x), np.argmax(x @ cb.vectors.T, axis=1))
    assert cb.nearest(x[0]).shape == (1,)


def test_paraphrases_mostly_share_a_slot_and_topics_spread(embedder: SentenceTransformerEmbedder) -> None:
    cb = Codebook.load()
    pairs = [
        ("user prefers dark mode in the code editor", "user likes a dark theme in the editor"),
        ("user is vegetarian", "user does not eat meat"),
        ("user has a peanut allergy", "user is allergic to peanuts"),
        ("user commutes to work by bike", "user cycles to the office"),
        ("user is learning spanish", "user studies the spanish language"),
        ("user owns a dog", "user has a pet dog"),
    ]
    a = cb.nearest(embedder.encode([p[0] for p in pairs]))
    b = cb.nearest(embedder.encode([p[1] for p in pairs]))
    assert (a == b).sum() >= 4
    unrelated = cb.nearest(embedder.encode(["user prefers python", "user has two children", "user likes jazz",
                                            "user is saving for a house", "user has asthma"]))
    assert len(set(unrelated.tolist())) == 5
