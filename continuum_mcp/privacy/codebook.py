"""The public semantic codebook: K unit vectors that quantise a pattern embedding to a slot.

Every member of a federation must map the same meaning to the same slot, so the codebook ships
with the package, is versioned, and is checked on load against a pinned SHA-256: a modified or
corrupted file is refused rather than silently splitting the federation's slots. Version ``v0``
is built reproducibly from the public corpus in ``data/codebook_v0_corpus.txt`` by
``benchmarks/build_codebook.py`` (spherical k-means of the bundled model's embeddings).

Later versions are learned by the federation (codebook refinement, ``federation.learning``) and
adopted by vote; a learned version is named by its content (:func:`codebook_version_id`), so two
members holding the same vectors agree on its name and nobody can pass other vectors off under it.

Slot ids carry the version (:func:`slot_id`): ``tag << SLOT_INDEX_BITS | index``, with ``v0``'s tag
0 (so every v0 slot id is its index, as before) and a learned version's tag taken from its id.
Submissions, releases and queries under two versions therefore never share a slot id and never
mix; a client re-slots its patterns when the federation adopts a version
(``federation.submission.reslot``). Ids stay below 2^32 (what the AEAD associated data binds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from importlib import resources

from pathlib import Path

import numpy as np

from continuum_mcp._sqlite import atomic_write
from continuum_mcp.errors import InvalidInput, StoreCorrupt

#: version -> (file name in continuum_mcp/data, SHA-256 of the file, K, dim)
CODEBOOKS: dict[str, tuple[str, str, int, int]] = {
    "v0": ("codebook_v0.npy", "564b38a14ab8dfb36814880f635a8644adb2f3de1d7d5174363f2ef985a65d1b", 256, 384),
}


#: A slot id's low bits: the slot index (so K <= 4096); its high bits: the version tag.
SLOT_INDEX_BITS = 12
VERSION_TAG_BITS = 20

#: Prefix of a learned version's id: ``c-`` + 24 hex digits of SHA-256 over shape and vectors.
LEARNED_PREFIX = "c-"


def _canonical(vectors: np.ndarray) -> np.ndarray:
    """float32 little-endian, C order: the byte form that is hashed and shipped."""
    return np.ascontiguousarray(vectors, dtype="<f4")


def codebook_version_id(vectors: np.ndarray) -> str:
    """The content-derived id of a learned codebook: SHA-256 of its shape and float32 bytes."""
    v = _canonical(vectors)
    if v.ndim != 2:
        raise InvalidInput("a codebook is a 2-d array")
    h = hashlib.sha256(f"continuum-codebook/{v.shape[0]}x{v.shape[1]}/".encode() + v.tobytes())
    return LEARNED_PREFIX + h.hexdigest()[:24]


def version_tag(version: str) -> int:
    """The slot-id tag of a codebook version: 0 for ``v0``, else 20 bits of SHA-256 of the id
    (never 0). Governance refuses to adopt a version whose tag equals an adopted one's."""
    if version == "v0":
        return 0
    tag = int.from_bytes(hashlib.sha256(f"continuum-slot-tag/{version}".encode()).digest()[:4], "big")
    return (tag >> (32 - VERSION_TAG_BITS)) or 1


def slot_id(version: str, index: int) -> int:
    """The versioned id of slot ``index`` of codebook ``version``."""
    if isinstance(index, bool) or not 0 <= int(index) < 1 << SLOT_INDEX_BITS:
        raise InvalidInput(f"slot index must be in [0, {1 << SLOT_INDEX_BITS}), got {index}")
    return version_tag(version) << SLOT_INDEX_BITS | int(index)


def version_slot_ids(version: str, slots: int) -> list[int]:
    """Every slot id of a ``slots``-slot codebook ``version``, in index order: what the
    coordinator accepts, lists and serves while that version is in use."""
    return [slot_id(version, i) for i in range(slots)]


def split_slot_id(sid: int) -> tuple[int, int]:
    """(version tag, slot index) of a slot id."""
    if isinstance(sid, bool) or not 0 <= int(sid) < 1 << (SLOT_INDEX_BITS + VERSION_TAG_BITS):
        raise InvalidInput(f"slot id must be in [0, 2^{SLOT_INDEX_BITS + VERSION_TAG_BITS}), got {sid}")
    return int(sid) >> SLOT_INDEX_BITS, int(sid) & ((1 << SLOT_INDEX_BITS) - 1)


class Codebook:
    """K x dim float32 unit vectors; ``nearest`` maps embeddings to slot indices.

    ``version`` is ``v0`` (bundled) or a learned version's content id; ``parent`` the version it
    was refined from (None for bundled ones)."""

    def __init__(self, vectors: np.ndarray, version: str, parent: str | None = None) -> None:
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[0] < 1:
            raise InvalidInput("a codebook is a non-empty 2-d array")
        if v.shape[0] > 1 << SLOT_INDEX_BITS:
            raise InvalidInput(f"a codebook has at most {1 << SLOT_INDEX_BITS} slots, got {v.shape[0]}")
        if not np.all(np.isfinite(v)):
            raise InvalidInput("codebook vectors must be finite")
        self.vectors = v
        self.vectors.setflags(write=False)
        self.version = version
        self.parent = parent

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, *, parent: str | None) -> Codebook:
        """A learned codebook: rows normalised to unit length, named by content."""
        v = np.asarray(vectors, dtype=np.float64)
        if v.ndim != 2 or v.shape[0] < 1 or not np.all(np.isfinite(v)):
            raise InvalidInput("a codebook is a non-empty 2-d array of finite numbers")
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise InvalidInput("a codebook vector must not be zero")
        unit = _canonical(v / norms)
        return cls(unit, codebook_version_id(unit), parent)

    def to_b64(self) -> str:
        """The vectors as base64 of float32 little-endian bytes (the published form)."""
        return base64.b64encode(_canonical(self.vectors).tobytes()).decode("ascii")

    @classmethod
    def from_b64(cls, data: str, slots: int, dim: int, *, parent: str | None) -> Codebook:
        """A learned codebook from its published form; its version is recomputed from the bytes."""
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput("codebook vectors are not valid base64") from exc
        if len(raw) != 4 * slots * dim:
            raise InvalidInput(f"codebook vectors have {len(raw)} bytes, {slots} x {dim} float32 need {4 * slots * dim}")
        v = np.frombuffer(raw, dtype="<f4").reshape(slots, dim)
        return cls(v, codebook_version_id(v), parent)

    @property
    def slots(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def tag(self) -> int:
        return version_tag(self.version)

    @property
    def ids(self) -> list[int]:
        """Every slot id of this version, in index order."""
        return version_slot_ids(self.version, self.slots)

    def slot_ids(self, embeddings: np.ndarray) -> np.ndarray:
        """The versioned slot id of the nearest slot of each embedding (int64, shape (n,))."""
        return (self.tag << SLOT_INDEX_BITS) | self.nearest(embeddings)

    def index_of(self, sid: int) -> int:
        """The slot index of a slot id of THIS version; ``InvalidInput`` for another version's."""
        tag, index = split_slot_id(sid)
        if tag != self.tag or index >= self.slots:
            raise InvalidInput(f"slot id {sid} is not a slot of codebook {self.version}")
        return index

    def save(self, directory: Path) -> Path:
        """Keep a learned version in ``directory`` (``<version>.npy``, written atomically)."""
        buf = io.BytesIO()
        np.save(buf, _canonical(self.vectors), allow_pickle=False)
        path = Path(directory) / f"{self.version}.npy"
        atomic_write(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, version: str = "v0", directory: Path | None = None) -> Codebook:
        """Load a bundled codebook (verifying its pinned SHA-256 and shape), or a learned version
        kept in ``directory`` by :meth:`save` (verifying that its vectors hash to its name)."""
        if version.startswith(LEARNED_PREFIX) and directory is not None:
            path = Path(directory) / f"{version}.npy"
            try:
                arr = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
            except FileNotFoundError as exc:
                raise InvalidInput(f"codebook {version} is not kept in {directory}") from exc
            except ValueError as exc:
                raise StoreCorrupt(f"codebook file {path} is unreadable ({exc})") from exc
            if arr.ndim != 2 or codebook_version_id(arr) != version:
                raise StoreCorrupt(f"codebook file {path} does not hold the vectors of {version}: modified or corrupted")
            return cls(arr, version)
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
