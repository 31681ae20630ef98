"""The write plan of one batch: fold exact repeats and true restatements, link updates, insert.

Runs inside the batch's write transaction. The near-duplicate search is one FAISS call for the
whole batch, made only for memories that are not exact repeats and only when the threshold can
be reached (``threshold < 1``); memories earlier in the same batch are compared in numpy.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from continuum_mcp.errors import NotFound
from continuum_mcp.memory._validate import content_hash
from continuum_mcp.memory.facts import same_facts
from continuum_mcp.memory.models import Progress
from continuum_mcp.memory._probe import Probe
from continuum_mcp.memory.vector_index import VectorIndex

if TYPE_CHECKING:
    from continuum_mcp.memory.store import MemoryStore

Status = Literal["created", "updated", "duplicate", "near_duplicate"]


@dataclass
class Planned:
    status: Status
    memory_id: int
    similarity: float | None = None
    duplicate_of: int | None = None
    updates: int | None = None


def _existing_hashes(conn: sqlite3.Connection, hashes: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    uniq = list(dict.fromkeys(hashes))
    for start in range(0, len(uniq), 900):
        part = uniq[start:start + 900]
        q = ",".join("?" * len(part))
        for h, mid in conn.execute(f"SELECT content_hash, MIN(id) FROM memories WHERE content_hash IN ({q}) "
                                   "GROUP BY content_hash", part):
            out[h] = mid
    return out


def _current(conn: sqlite3.Connection, mid: int) -> int:
    """The newest version of a memory (follow ``supersedes`` links forward)."""
    for _ in range(16):
        row = conn.execute("SELECT MAX(id) FROM memories WHERE supersedes = ?", (mid,)).fetchone()
        if row is None or row[0] is None:
            break
        mid = int(row[0])
    return mid


@dataclass
class Plan:
    """A written batch: one result per input, and what was inserted (for the vector index)."""

    results: list[Planned]
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # the inserted memories' columns
    positions: list[int] = field(default_factory=list)  # their positions in the batch
    seq: int = 0  # the change-log position after this batch
    probe: Probe | None = None


def plan_batch(conn: sqlite3.Connection, index: VectorIndex, clean: list[dict[str, Any]], vecs: np.ndarray, *,
               threshold: float, on_duplicate: str, model_id: str, when: float) -> Plan:
    merge = on_duplicate == "merge"
    hashes = [content_hash(c["text"]) for c in clean]
    existing = _existing_hashes(conn, hashes) if merge else {}
    probe = [i for i, h in enumerate(hashes) if h not in existing] if threshold < 1.0 else []
    stored: dict[int, tuple[int, float] | None] = {}
    found: Probe | None = None
    within = close = None
    if probe:
        found = index.nearest_batch(vecs[probe])
        stored = dict(zip(probe, found.nearest))
        within = found.earlier(vecs[probe])  # cosines inside the batch, to earlier rows only
        close = within.max(axis=1) >= threshold  # rows with an earlier batch row that close
    texts: dict[int, str] = {}
    want = list({n[0] for n in stored.values() if n is not None and n[1] >= threshold})
    if want:
        q = ",".join("?" * len(want))
        texts = dict(conn.execute(f"SELECT id, text FROM memories WHERE id IN ({q})", want).fetchall())
    row_of = {i: r for r, i in enumerate(probe)}
    out: list[Planned] = []
    batch_rows: list[int] = []  # positions in this batch that were inserted
    batch_ids: list[int] = []
    rows: list[tuple[Any, ...]] = []
    # Ids are assigned here (the write lock is held), so the batch goes in with one executemany.
    next_id = conn.execute("SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'memories'), 0), "
                           "COALESCE((SELECT MAX(id) FROM memories), 0))").fetchone()[0] + 1
    for i, (c, h) in enumerate(zip(clean, hashes)):
        if merge and h in existing:
            out.append(Planned("duplicate", existing[h], 1.0, duplicate_of=existing[h]))
            continue
        near = stored.get(i)
        if within is not None and close is not None and batch_rows and i in row_of and close[row_of[i]]:
            sims = within[row_of[i], [row_of[b] for b in batch_rows]]
            j = int(np.argmax(sims))
            if near is None or sims[j] > near[1]:
                near = (batch_ids[j], float(sims[j]))
                texts[near[0]] = clean[batch_rows[j]]["text"]
        updates = c["supersedes"]
        if near is not None and near[1] >= threshold and near[0] in texts:
            if merge and same_facts(texts[near[0]], c["text"]):
                out.append(Planned("near_duplicate", near[0], round(near[1], 6), duplicate_of=near[0]))
                continue
            if updates is None:
                updates = _current(conn, near[0])
        if updates is not None and updates not in batch_ids \
                and not conn.execute("SELECT 1 FROM memories WHERE id = ?", (updates,)).fetchone():
            raise NotFound(f"supersedes: no memory with id {updates}; nothing was stored")
        created = c["created_at"] or when
        mid, next_id = next_id, next_id + 1
        rows.append((mid, c["text"], json.dumps(c["tags"], ensure_ascii=False), c["metadata"], c["source"], created,
                     c["updated_at"] or created, h, vecs[i].tobytes(), model_id, updates))
        if merge:
            existing.setdefault(h, mid)
        batch_rows.append(i)
        batch_ids.append(mid)
        sim = round(near[1], 6) if near is not None and updates is not None and near[1] >= threshold else None
        out.append(Planned("updated" if updates is not None else "created", mid, sim, updates=updates))
    conn.executemany("INSERT INTO memories(id, text, tags, metadata, source, created_at, updated_at, content_hash,"
                     " embedding, model_id, supersedes) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    if rows:  # one statement for the batch's keyword entries (ids are consecutive): see _schema
        conn.execute("INSERT INTO memories_fts(rowid, text, tags) SELECT id, text, tags FROM memories "
                     "WHERE id BETWEEN ? AND ?", (rows[0][0], rows[-1][0]))
        # The tag rows and the change log from the rows just written, one statement each (half the
        # time of two executemany of one row per call): the tags column is the JSON list of the tags.
        conn.execute("INSERT INTO memory_tags(memory_id, tag) SELECT m.id, j.value FROM memories m, "
                     "json_each(m.tags) j WHERE m.id BETWEEN ? AND ?", (rows[0][0], rows[-1][0]))
        conn.execute("INSERT INTO changes(memory_id) SELECT id FROM memories WHERE id BETWEEN ? AND ? ORDER BY id",
                     (rows[0][0], rows[-1][0]))
    seq = conn.execute("SELECT COALESCE((SELECT MAX(seq) FROM changes), 0)").fetchone()[0] if rows else index.seq
    if found is not None and found.home is not None:
        found.home = found.home[[row_of[i] for i in batch_rows]]  # the inserted rows' cells, in order
    return Plan(out, rows, batch_rows, seq, found)


def reembed_all(store: "MemoryStore", *, progress: Progress | None, batch_size: int) -> int:
    """Re-embed every memory in batches, then record the new model in ``meta`` (the store's lock held)."""
    conn = store._conn
    total = conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
    done, last = 0, 0
    while True:
        rows = conn.execute("SELECT id, text FROM memories WHERE id > ? ORDER BY id LIMIT ?",
                            (last, batch_size)).fetchall()
        if not rows:
            break
        vecs = store.embedder.encode([r[1] for r in rows])
        with store._tx(check_model=False) as c:
            c.executemany("UPDATE memories SET embedding = ?, model_id = ? WHERE id = ?",
                          [(v.astype(np.float32).tobytes(), store.embedder.model_id, r[0]) for r, v in zip(rows, vecs)])
            c.executemany("INSERT INTO changes(memory_id) VALUES (?)", [(r[0],) for r in rows])
        done += len(rows)
        last = rows[-1][0]
        if progress:
            progress(done, total)
    with store._tx(check_model=False) as c:
        c.execute("UPDATE meta SET value = ? WHERE key = 'model_id'", (store.embedder.model_id,))
        c.execute("UPDATE meta SET value = ? WHERE key = 'dim'", (str(store.embedder.dim),))
    return done
