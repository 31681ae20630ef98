"""The public semantic codebook: K unit vectors that quantise a pattern embedding to a slot.

Every member of a federation must map the same meaning to the same slot, so the codebook ships
with the package, is versioned, and is checked on load against a pinned SHA-256: a modified or
corrupted file is refused rather than silently splitting the federation's slots. Version ``v0``
is built reproducibly from the public corpus in ``data/codebook_v0_corpus.txt`` by
``benchmarks/build_codebook.py`` (spherical k-means of the bundled model's embeddings).
"""

from __future__ import annotations

import hashlib
import io
from importlib import resources

import numpy as np

from continuum_mcp.errors import InvalidInput, StoreCorrupt

#: version -> (file name in continuum_mcp/data, SHA-256 of the file, K, dim)
CODEBOOKS: dict[str, tuple[str, str, int, int]] = {
    "v0": ("codebook_v0.npy", "564b38a14ab8dfb36814880f635a8644adb2f3de1d7d5174363f2ef985a65d1b", 256, 384),
}


class Codebook:
    """K x dim float32 unit vectors; ``nearest`` maps embeddings to slot indices."""

    def __init__(self, vectors: np.ndarray, version: str) -> None:
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[0] < 1:
            raise InvalidInput("a codebook is a non-empty 2-d array")
        self.vectors = v
        self.vectors.setflags(write=False)
        self.version = version

    @property
    def slots(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def load(cls, version: str = "v0") -> Codebook:
        """Load a bundled codebook, verifying its SHA-256 and shape."""
        if version not in CODEBOOKS:
            raise InvalidInput(f"unknown codebook version {version!r}; known: {sorted(CODEBOOKS)}")
        name, sha, k, dim = CODEBOOKS[version]
        data = resources.files("continuum_mcp").joinpath("data", name).read_bytes()
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise StoreCorrupt(f"codebook {version} ({name}) has SHA-256 {got}, expected {sha}: "
                               "the file was modified or corrupted; reinstall the package")
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if arr.shape != (k, dim):
            raise StoreCorrupt(f"codebook {version} has shape {arr.shape}, expected {(k, dim)}")
        return cls(arr, version)

    def similarities(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine of each (unit) embedding to every slot vector: shape (n, K)."""
        e = np.asarray(embeddings, dtype=np.float32)
        if e.ndim == 1:
            e = e[None, :]
        if e.ndim != 2 or e.shape[1] != self.dim:
            raise InvalidInput(f"embeddings must have shape (n, {self.dim}), got {e.shape}")
        return e @ self.vectors.T

    def nearest(self, embeddings: np.ndarray) -> np.ndarray:
        """Index of the nearest slot vector (by cosine) for each embedding: int64 array of shape (n,)."""
        return np.argmax(self.similarities(embeddings), axis=1).astype(np.int64)
