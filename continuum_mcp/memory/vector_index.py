"""The FAISS index: a cache derived from SQLite, never the source of truth.

Every write to the store appends to a ``changes`` log in the same SQLite transaction. An index
knows the last change it reflects (``seq``); before a search it replays newer changes, so several
processes on one data directory each keep an up-to-date index without talking to each other. The
index is persisted atomically (temp file, fsync, rename) with a manifest (model id, dimension,
count, seq, checksum) and rebuilt from SQLite whenever the file is missing, stale or corrupt.

Up to ``Settings.ivf_threshold`` vectors the index is exact (``IndexIDMap2`` over a flat index).
Past it, an ``IndexIVFFlat`` of sqrt(n) cells holding the memory ids itself: ``IndexIDMap2`` over
IVF maps results to the wrong ids after a removal (it compacts its id table as if the inner index
renumbered, which IVF does not), so a forgotten or updated memory would shift every later id.
The IVF is trained on a sample and retrained (rebuilt from SQLite) each time it has grown
``IVF_REGROW`` times, so its cells stay about sqrt(n) long. A search scans ``nprobe(nlist)``
cells: recall@10 against exact search is measured by ``benchmarks/bench_memory.py --million``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
import sys
import functools
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import cast

import faiss
import numpy as np
from pydantic import BaseModel
from threadpoolctl import ThreadpoolController

from continuum_mcp._sqlite import atomic_write
from continuum_mcp.memory._probe import (
    PROBE_MIN, PROBE_REGROW, Probe, SideIndex, nearest_exact, nearest_ivf,
)

log = logging.getLogger(__name__)

INDEX_FILE = "vectors.faiss"
MANIFEST_FILE = "vectors.manifest.json"
IVF_REGROW = 4
IVF_TRAIN_PER_CELL = 40


def nprobe(nlist: int) -> int:
    """Cells a search scans: at least 24, and a 32nd of them on big indexes.

    A search's cost is the vectors it reads (memory bandwidth: 1.5 KB each). Measured on the 1M
    benchmark store (896 cells, 200 LoCoMo questions, recall@10 against exact search): nprobe 12
    0.950, 16 0.963, 24 0.977, 28 (this rule) about 0.98, 32 0.983, 56 (the old rule) 0.993 for
    twice the vectors read."""
    return min(nlist, max(24, nlist // 32))


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
        self._probe: SideIndex | None = None
        self._max_id = 0  # ids only grow (AUTOINCREMENT): a change to a larger id is a pure add

    # ----- construction -------------------------------------------------------------------
    def _new_flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _new_ivf(self, train: np.ndarray) -> faiss.IndexIVFFlat:
        nlist = max(16, int(math.sqrt(len(train))))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        want = IVF_TRAIN_PER_CELL * nlist
        sample = train if len(train) <= want else train[np.random.default_rng(0).choice(len(train), want, replace=False)]
        ivf.cp.niter = 10
        ivf.train(np.ascontiguousarray(sample))
        ivf.nprobe = nprobe(nlist)
        return ivf

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(self.index, faiss.IndexIVF) else "flat"

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
        data = np.fromfile(ipath, dtype=np.uint8)
        if hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise ValueError("index checksum mismatch")
        index = faiss.deserialize_index(data)
        if isinstance(index, faiss.IndexIDMap2) and isinstance(faiss.downcast_index(index.index), faiss.IndexIVF):
            raise ValueError("an IVF index under an id map (ids shift on removal): rebuilt")
        if index.d != self.dim or index.ntotal != manifest.count:
            raise ValueError("index does not match its manifest")
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = nprobe(index.nlist)  # this release's rule, not the one saved with the file
        self.index = index  # read_index gives the concrete class (and owns it: a downcast proxy would not)
        self._probe = None
        self._note_ids()
        self.seq = self.saved_seq = manifest.seq

    def save(self) -> None:
        """Persist atomically: index first, then the manifest that vouches for it."""
        if self.saved_seq == self.seq:
            return
        data = faiss.serialize_index(self.index)
        manifest = Manifest(model_id=self.model_id, dim=self.dim, count=self.count, seq=self.seq,
                            kind=self.kind, sha256=hashlib.sha256(data).hexdigest())
        atomic_write(self.directory / INDEX_FILE, cast(bytes, memoryview(data)))  # a buffer: no 1.5 GB copy at 1M
        atomic_write(self.directory / MANIFEST_FILE, manifest.model_dump_json().encode())
        self.saved_seq = self.seq

    # ----- keeping up with SQLite ---------------------------------------------------------
    def rebuild(self, conn: sqlite3.Connection) -> None:
        """Rebuild from the embeddings in SQLite (the source of truth)."""
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        n = conn.execute("SELECT COUNT(*) FROM memories WHERE model_id = ?", (self.model_id,)).fetchone()[0]
        ids = np.zeros(n, dtype=np.int64)
        vecs = np.zeros((n, self.dim), dtype=np.float32)
        got = 0
        for mid, blob in conn.execute("SELECT id, embedding FROM memories WHERE model_id = ? ORDER BY id",
                                      (self.model_id,)):
            if got == n:
                break
            ids[got] = mid
            vecs[got] = np.frombuffer(blob, dtype=np.float32)
            got += 1
        ids, vecs = ids[:got], vecs[:got]
        self.index = self._new_ivf(vecs) if got > self.ivf_threshold else self._new_flat()
        self._probe = None
        if got:
            self.index.add_with_ids(vecs, ids)
        self._note_ids()
        self.seq = seq
        log.debug("vector index rebuilt: %d vectors (%s)", got, self.kind)

    def sync(self, conn: sqlite3.Connection) -> int:
        """Replay changes newer than ``seq``; rebuild if the log no longer reaches back that far."""
        # Two scalar subqueries: each is one b-tree probe; the combined aggregate scans the table.
        head = conn.execute("SELECT COALESCE((SELECT MAX(seq) FROM changes), 0), (SELECT MIN(seq) FROM changes)").fetchone()
        latest, oldest = head[0], head[1]
        if latest == self.seq:
            self._maybe_reshape(conn)
            return 0
        if latest < self.seq or (oldest is not None and oldest > self.seq + 1 and self.seq > 0) or \
                (oldest is not None and self.seq == 0 and oldest > 1):
            self.rebuild(conn)
            return -1
        changed = [r[0] for r in conn.execute(
            "SELECT DISTINCT memory_id FROM changes WHERE seq > ? AND seq <= ?", (self.seq, latest))]
        self.apply(conn, changed)
        self.seq = latest
        self._maybe_reshape(conn)
        return len(changed)

    def _maybe_reshape(self, conn: sqlite3.Connection) -> None:
        """Flat -> IVF past the threshold; IVF retrained once it has outgrown its cells."""
        if self.kind == "flat":
            if self.count > self.ivf_threshold:
                self.rebuild(conn)
        elif self.count > IVF_REGROW * max(self.index.nlist, 1) ** 2 and self.count > self.ivf_threshold:
            self.rebuild(conn)

    def add_committed(self, ids: np.ndarray, vecs: np.ndarray, seq: int, probe: Probe | None = None) -> None:
        """Add the vectors of a batch this process has just committed as changes up to ``seq``.

        The write transaction began with the index synced, so the batch's changes are the only
        ones between ``self.seq`` and ``seq``: the vectors are added from memory instead of being
        read back from SQLite, and the side index files them in the cells the probe already
        found (``probe.home``) instead of assigning them again."""
        if len(ids):
            vecs = np.ascontiguousarray(vecs, dtype=np.float32)
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            with single_threaded(len(ids)):
                self.index.add_with_ids(vecs, ids)
                if self._probe is not None:
                    known = probe is not None and probe.side is self._probe
                    self._probe.add(vecs, ids, probe.home if known and probe is not None else None)
            self._max_id = max(self._max_id, int(ids.max()))
        self.seq = seq

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
                    self._probe.add(vecs, got)
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
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nprobe) if self.kind == "ivf" \
                else faiss.SearchParameters(sel=sel)
        scores, ids = self.index.search(query.reshape(1, -1).astype(np.float32), k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def nearest_batch(self, queries: np.ndarray) -> Probe:
        """The nearest (id, cosine) of each query row, for a whole batch at once (write-path probes):
        exact below ``PROBE_MIN`` vectors, through IVF cells past it (see :mod:`._probe`)."""
        if self.count == 0 or len(queries) == 0:
            return Probe([None] * len(queries))
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.kind == "ivf":
            return nearest_ivf(self.index, q)
        xb, id_map = self._flat_vectors()
        if self.count < PROBE_MIN:
            return Probe(nearest_exact(q, xb, id_map))
        if self._probe is None or self.count >= PROBE_REGROW * self._probe.built_at:
            self._probe = SideIndex.build(xb, id_map)
        return self._probe.nearest(q)

    def _flat_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The flat index's vectors (a view, no copy) and their ids."""
        flat = faiss.downcast_index(self.index.index)
        xb = faiss.rev_swig_ptr(flat.get_xb(), self.count * self.dim).reshape(self.count, self.dim)
        return xb, faiss.vector_to_array(self.index.id_map)

    def _note_ids(self) -> None:
        if self.count == 0:
            self._max_id = 0
        elif self.kind == "flat":
            self._max_id = int(faiss.vector_to_array(self.index.id_map).max())
        else:
            lists = self.index.invlists
            self._max_id = max((int(faiss.rev_swig_ptr(lists.get_ids(c), lists.list_size(c)).max())
                                for c in range(self.index.nlist) if lists.list_size(c)), default=0)


@functools.cache
def _pools(torch_loaded: bool) -> ThreadpoolController:
    """The thread pools of the libraries loaded so far (torch brings its own OpenMP runtime)."""
    return ThreadpoolController()


def single_threaded(n: int = 0) -> AbstractContextManager[object]:
    """One BLAS/OpenMP thread for a small batch (``n`` rows; 0 = whatever the caller does next).

    On a machine with more runnable threads than cores the BLAS and OpenMP thread teams spin
    against each other: a 256 x 256 x 384 product took 20-40 ms with two threads and 0.6 ms with
    one, adding 256 vectors to an IVF index 45 ms against 3 ms. Big jobs (rebuilds) keep them.
    The model's own OpenMP pool is limited too: one query encoded with two torch threads took
    1,101 ms p50 at load 11.6 against 55 ms with one."""
    return nullcontext() if n > 4096 else _pools("torch" in sys.modules).limit(limits=1)


def manifest_info(directory: Path) -> dict[str, object] | None:
    """The saved manifest, for stats (None when there is none)."""
    path = directory / MANIFEST_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
