"""JSONL export and import: a header line, then one memory per line with its embedding.

Import validates the whole file before writing anything, keeps each memory's own times and its
``supersedes`` link (remapped to the ids the memories get in the new store), and reuses the
embeddings when the export was made with the store's model.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING

import numpy as np
from pydantic import ValidationError

from continuum_mcp.errors import InvalidInput
from continuum_mcp.memory._validate import clean_input
from continuum_mcp.memory.models import ImportResult, MemoryInput, Progress

if TYPE_CHECKING:
    from continuum_mcp.memory.store import MemoryStore

FORMAT = "continuum-mcp.memories"
FORMAT_VERSION = 1


def export_jsonl(store: "MemoryStore", out: IO[str]) -> int:
    """Write the header, then every memory oldest id first, embeddings as base64 float32."""
    header = {"format": FORMAT, "version": FORMAT_VERSION, "model_id": store.store_model_id,
              "dim": store.store_dim, "count": store.stats().count}
    out.write(json.dumps(header) + "\n")
    n = 0
    for m, blob in store.iter_with_embeddings():
        rec = m.model_dump(mode="json", exclude={"content_hash", "superseded_by"})
        rec["embedding"] = base64.b64encode(blob).decode("ascii")
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        n += 1
    return n


def _read(store: "MemoryStore", lines: Iterable[str]) -> tuple[bool, list[tuple[int | None, MemoryInput, bytes | None]]]:
    it = iter(lines)
    try:
        header = json.loads(next(it))
    except StopIteration:
        raise InvalidInput("import file is empty") from None
    except ValueError as exc:
        raise InvalidInput(f"line 1: not JSON ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InvalidInput(f"line 1: not a continuum-mcp export (expected format '{FORMAT}')")
    if header.get("version") != FORMAT_VERSION:
        raise InvalidInput(f"export format version {header.get('version')} is not supported (expected {FORMAT_VERSION})")
    same_model = header.get("model_id") == store.store_model_id and header.get("dim") == store.store_dim
    items: list[tuple[int | None, MemoryInput, bytes | None]] = []
    for lineno, line in enumerate(it, start=2):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("a memory must be a JSON object")
            emb = rec.pop("embedding", None)
            old_id = rec.pop("id", None)
            rec.pop("superseded_by", None)
            item = MemoryInput.model_validate(rec)
            clean_input(item, store.settings)
        except (ValueError, ValidationError, InvalidInput) as exc:
            msg = exc.message if isinstance(exc, InvalidInput) else str(exc).splitlines()[0]
            raise InvalidInput(f"line {lineno}: {msg}; nothing was imported") from exc
        blob = None
        if same_model and isinstance(emb, str):
            try:
                blob = base64.b64decode(emb, validate=True)
            except ValueError:
                blob = None
            if blob is not None and len(blob) != 4 * store.store_dim:
                blob = None
        items.append((old_id if isinstance(old_id, int) and not isinstance(old_id, bool) else None, item, blob))
    return same_model, items


def import_jsonl(store: "MemoryStore", lines: Iterable[str], *, progress: Progress | None = None,
                 batch_size: int = 256) -> ImportResult:
    same_model, items = _read(store, lines)
    new_ids: dict[int, int] = {}
    links: list[tuple[int, int]] = []  # (old id of the newer memory, old id it supersedes)
    created = dups = 0
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        vectors = None
        if all(b is not None for _, _, b in chunk):
            vectors = np.frombuffer(b"".join(b for _, _, b in chunk), dtype=np.float32).reshape(  # type: ignore[misc]
                len(chunk), store.store_dim)
        inputs = [item.model_copy(update={"supersedes": None}) for _, item, _ in chunk]
        for (old_id, item, _), r in zip(chunk, store.remember_many(inputs, vectors=vectors, near=False)):
            if old_id is not None:
                new_ids[old_id] = r.memory.id
                if item.supersedes is not None:
                    links.append((old_id, item.supersedes))
            created += r.status in ("created", "updated")
            dups += r.status not in ("created", "updated")
        if progress:
            progress(min(start + batch_size, len(items)), len(items))
    pairs = [(new_ids[old], new_ids[newer]) for newer, old in links if old in new_ids and newer in new_ids]
    if pairs:
        with store._tx() as conn:  # update links survive the move, remapped to the new ids
            conn.executemany("UPDATE memories SET supersedes = ? WHERE id = ? AND supersedes IS NULL", pairs)
    return ImportResult(read=len(items), created=created, duplicates=dups, reembedded=not same_model)
