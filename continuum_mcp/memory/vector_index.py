"""The FAISS index: a cache derived from SQLite, never the source of truth.

Every write to the store appends to a ``changes`` log in the same SQLite transaction. An index
knows the last change it reflects (``seq``); before a search it replays newer changes, so several
processes on one data directory each keep an up-to-date index without talking to each other. The
index is persisted atomically (temp file, fsync, rename) with a manifest (model id, dimension,
count, seq, checksum) and rebuilt from SQLite whenever the file is missing, stale or corrupt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
import functools
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import faiss
import numpy as np
from pydantic import BaseModel
from threadpoolctl import ThreadpoolController

from continuum_mcp._sqlite import atomic_write

log = logging.getLogger(__name__)

INDEX_FILE = "vectors.faiss"
#: From this many vectors on, a flat index answers near-duplicate probes through an IVF side index
#: (not persisted: rebuilt from the flat vectors in memory on first need, and again each time the
#: index has grown 4x, so its cells stay small: a probe costs O(sqrt(n)), not O(n)).
PROBE_MIN = 4_096
PROBE_NPROBE = 4
PROBE_REGROW = 4
MANIFEST_FILE = "vectors.manifest.json"


class Manifest(BaseModel):
    model_id: str
    dim: int
    count: int
    seq: int
    kind: str
    sha256: str


class VectorIndex:
    """An inner-product FAISS index over unit vectors, keyed by memory id."""

    def __init__(self, directory: Path, model_id: str, dim: int, *, ivf_threshold: int) -> None:
        self.directory = directory
        self.model_id = model_id
        self.dim = dim
        self.ivf_threshold = ivf_threshold
        self.index: faiss.Index = self._new_flat()
        self.seq = 0
        self.saved_seq = -1
        self._probe: faiss.IndexIVFFlat | None = None
        self._probe_size = 0
        self._max_id = 0  # ids only grow (AUTOINCREMENT): a change to a larger id is a pure add

    # ----- construction -------------------------------------------------------------------
    def _new_flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _new_ivf(self, train: np.ndarray) -> faiss.Index:
        nlist = max(16, int(4 * math.sqrt(len(train))))
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = train if len(train) <= 64 * nlist else train[np.random.default_rng(0).choice(len(train), 64 * nlist, replace=False)]
        ivf.train(sample)
        ivf.nprobe = min(nlist, 32)
        return faiss.IndexIDMap2(ivf)

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(faiss.downcast_index(self.index.index), faiss.IndexIVF) else "flat"

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    # ----- persistence --------------------------------------------------------------------
    def load_or_rebuild(self, conn: sqlite3.Connection) -> str:
        """Load the saved index if it is intact and ours, else rebuild; then catch up. Returns how."""
        how = "loaded"
        try:
            self._load()
        except (OSError, ValueError, RuntimeError) as exc:
            how = f"rebuilt ({exc})"
            self.rebuild(conn)
        self.sync(conn)
        return how

    def _load(self) -> None:
        mpath, ipath = self.directory / MANIFEST_FILE, self.directory / INDEX_FILE
        if not mpath.exists() or not ipath.exists():
            raise ValueError("no saved index")
        manifest = Manifest.model_validate_json(mpath.read_bytes())
        if manifest.model_id != self.model_id or manifest.dim != self.dim:
            raise ValueError("saved index belongs to another model")
        data = ipath.read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise ValueError("index checksum mismatch")
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if index.d != self.dim or index.ntotal != manifest.count:
            raise ValueError("index does not match its manifest")
        self.index = index
        self._probe = None
        self._note_ids()
        self.seq = self.saved_seq = manifest.seq

    def save(self) -> None:
        """Persist atomically: index first, then the manifest that vouches for it."""
        if self.saved_seq == self.seq:
            return
        data = faiss.serialize_index(self.index).tobytes()
        manifest = Manifest(model_id=self.model_id, dim=self.dim, count=self.count, seq=self.seq,
                            kind=self.kind, sha256=hashlib.sha256(data).hexdigest())
        atomic_write(self.directory / INDEX_FILE, data)
        atomic_write(self.directory / MANIFEST_FILE, manifest.model_dump_json().encode())
        self.saved_seq = self.seq

    # ----- keeping up with SQLite ---------------------------------------------------------
    def rebuild(self, conn: sqlite3.Connection) -> None:
        """Rebuild from the embeddings in SQLite (the source of truth)."""
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        rows = conn.execute("SELECT id, embedding FROM memories WHERE model_id = ? ORDER BY id",
                            (self.model_id,)).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim) \
            if rows else np.zeros((0, self.dim), dtype=np.float32)
        self.index = self._new_ivf(vecs) if len(rows) > self.ivf_threshold else self._new_flat()
        self._probe = None
        if len(rows):
            self.index.add_with_ids(vecs, ids)
        self._note_ids()
        self.seq = seq
        log.debug("vector index rebuilt: %d vectors (%s)", len(rows), self.kind)

    def sync(self, conn: sqlite3.Connection) -> int:
        """Replay changes newer than ``seq``; rebuild if the log no longer reaches back that far."""
        # Two scalar subqueries: each is one b-tree probe; the combined aggregate scans the table.
        head = conn.execute("SELECT COALESCE((SELECT MAX(seq) FROM changes), 0), (SELECT MIN(seq) FROM changes)").fetchone()
        latest, oldest = head[0], head[1]
        if latest == self.seq:
            return 0
        if latest < self.seq or (oldest is not None and oldest > self.seq + 1 and self.seq > 0) or \
                (oldest is not None and self.seq == 0 and oldest > 1):
            self.rebuild(conn)
            return -1
        changed = [r[0] for r in conn.execute(
            "SELECT DISTINCT memory_id FROM changes WHERE seq > ? AND seq <= ?", (self.seq, latest))]
        self.apply(conn, changed)
        self.seq = latest
        if self.kind == "flat" and self.count > self.ivf_threshold:
            self.rebuild(conn)
        return len(changed)

    def apply(self, conn: sqlite3.Connection, memory_ids: list[int]) -> None:
        """Make the index agree with SQLite for these ids (added, updated or deleted)."""
        if not memory_ids:
            return
        ids = np.asarray(memory_ids, dtype=np.int64)
        old = ids[ids <= self._max_id]  # removal scans the whole index: only for ids it may hold
        if len(old):
            self.index.remove_ids(old)
            if self._probe is not None:
                self._probe.remove_ids(old)
        present: list[tuple[int, bytes]] = []
        for chunk in range(0, len(memory_ids), 900):
            part = memory_ids[chunk:chunk + 900]
            q = ",".join("?" * len(part))
            present += conn.execute(
                f"SELECT id, embedding FROM memories WHERE model_id = ? AND id IN ({q})",
                (self.model_id, *part)).fetchall()
        if present:
            vecs = np.frombuffer(b"".join(r[1] for r in present), dtype=np.float32).reshape(len(present), self.dim)
            got = np.fromiter((r[0] for r in present), dtype=np.int64, count=len(present))
            with single_threaded(len(got)):
                self.index.add_with_ids(vecs, got)
                if self._probe is not None:
                    self._probe.add_with_ids(vecs, got)
            self._max_id = max(self._max_id, int(got.max()))

    # ----- queries ------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top-k (id, cosine) for one unit query, optionally restricted to ``allowed`` ids."""
        if self.count == 0 or k <= 0:
            return []
        k = min(k, self.count)
        params = None
        if allowed is not None:
            if len(allowed) == 0:
                return []
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self._nprobe()) if self.kind == "ivf" \
                else faiss.SearchParameters(sel=sel)
        scores, ids = self.index.search(query.reshape(1, -1).astype(np.float32), k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def nearest_batch(self, queries: np.ndarray) -> list[tuple[int, float] | None]:
        """The nearest (id, cosine) of each query row, for a whole batch at once (write-path probes).

        Small flat index: exact, one blocked matrix product over the stored vectors read in place
        (FAISS's k=1 flat search is some 30x slower than BLAS for a batch). Past ``PROBE_MIN``
        vectors: an IVF side index (the main one, once it is IVF), so filling a store is not
        quadratic. A neighbour that close (cosine >= 0.95) lies in one of the query's
        ``PROBE_NPROBE`` nearest cells (2000 of 2000 in a check on perturbed LoCoMo vectors); a
        missed one costs a kept restatement or an unlinked update, never a lost memory."""
        if self.count == 0 or len(queries) == 0:
            return [None] * len(queries)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.kind == "flat" and self.count < PROBE_MIN:
            return self._nearest_exact(q)
        if self.kind == "flat":
            ivf, id_map = self._probe_index(), None
        else:
            ivf, id_map = faiss.downcast_index(self.index.index), faiss.vector_to_array(self.index.id_map)
        # The coarse step as one product in numpy's BLAS (FAISS's bundled one is a generic build,
        # several times slower), then FAISS scans only the chosen cells.
        cent = faiss.rev_swig_ptr(faiss.downcast_index(ivf.quantizer).get_xb(), ivf.nlist * self.dim)
        near = q @ cent.reshape(ivf.nlist, self.dim).T
        nprobe = min(PROBE_NPROBE, ivf.nlist)
        cells = np.argpartition(-near, nprobe - 1, axis=1)[:, :nprobe] if nprobe < ivf.nlist \
            else np.tile(np.arange(ivf.nlist), (len(q), 1))
        saved, ivf.nprobe = ivf.nprobe, nprobe
        try:
            with single_threaded(len(q)):
                scores, ids = ivf.search_preassigned(q, 1, cells, np.take_along_axis(near, cells, axis=1))
        finally:
            ivf.nprobe = saved
        if id_map is not None:
            ids = np.where(ids >= 0, id_map[np.maximum(ids, 0)], -1)
        return [(int(i), float(sc)) if i >= 0 else None for i, sc in zip(ids[:, 0], scores[:, 0])]

    def _flat_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The flat index's vectors (a view, no copy) and their ids."""
        flat = faiss.downcast_index(self.index.index)
        xb = faiss.rev_swig_ptr(flat.get_xb(), self.count * self.dim).reshape(self.count, self.dim)
        return xb, faiss.vector_to_array(self.index.id_map)

    def _nearest_exact(self, q: np.ndarray) -> list[tuple[int, float] | None]:
        xb, id_map = self._flat_vectors()
        best = np.full(len(q), -np.inf, dtype=np.float32)
        arg = np.zeros(len(q), dtype=np.int64)
        for start in range(0, len(xb), 32768):
            sims = q @ xb[start:start + 32768].T
            j = sims.argmax(axis=1)
            top = sims[np.arange(len(q)), j]
            better = top > best
            best[better], arg[better] = top[better], j[better] + start
        return [(int(id_map[a]), float(b)) for a, b in zip(arg, best)]

    def _probe_index(self) -> faiss.Index:
        """The side index, 2*sqrt(n) cells trained on the vectors it holds; retrained once the index
        has grown ``PROBE_REGROW`` times (a fixed partition would make each probe O(n) again)."""
        if self._probe is None or self.count >= PROBE_REGROW * self._probe_size:
            xb, id_map = self._flat_vectors()
            nlist = max(16, int(2 * math.sqrt(len(xb))))
            sample = xb if len(xb) <= 24 * nlist else xb[np.random.default_rng(0).choice(len(xb), 24 * nlist, replace=False)]
            probe = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            probe.cp.niter, probe.cp.min_points_per_centroid = 10, 16
            probe.train(np.ascontiguousarray(sample))
            probe.add_with_ids(np.ascontiguousarray(xb), id_map)
            self._probe, self._probe_size = probe, len(xb)
        return self._probe

    def _note_ids(self) -> None:
        ids = faiss.vector_to_array(self.index.id_map) if self.count else np.zeros(0, dtype=np.int64)
        self._max_id = int(ids.max()) if len(ids) else 0

    def _nprobe(self) -> int:
        return int(faiss.downcast_index(self.index.index).nprobe)


@functools.cache
def _pools() -> ThreadpoolController:
    return ThreadpoolController()


def single_threaded(n: int = 0) -> AbstractContextManager[object]:
    """One BLAS/OpenMP thread for a small batch (``n`` rows; 0 = whatever the caller does next).

    On a machine with more runnable threads than cores the BLAS and OpenMP thread teams spin
    against each other: a 256 x 256 x 384 product took 20-40 ms with two threads and 0.6 ms with
    one, adding 256 vectors to an IVF index 45 ms against 3 ms. Big jobs (rebuilds) keep them."""
    return nullcontext() if n > 4096 else _pools().limit(limits=1)


def manifest_info(directory: Path) -> dict[str, object] | None:
    """The saved manifest, for stats (None when there is none)."""
    path = directory / MANIFEST_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
