"""Crash safety: a writer killed with SIGKILL mid-batch loses no acknowledged memory."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from continuum_mcp.config import Settings
from continuum_mcp.memory.store import DB_FILE, MemoryStore
from embeddings import SentenceTransformerEmbedder

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from continuum_mcp.config import Settings
    from continuum_mcp.memory.store import MemoryInput, open_store

    store = open_store(Settings(data_dir=Path(sys.argv[1]), index_save_every=7, dedup_threshold=1.0))
    store.embedder.wait()
    print("READY", flush=True)
    n = 0
    while True:
        batch = [MemoryInput(text=f"Acknowledged fact {n + i}: item {(n + i) * 7919 % 100003} is stored in "
                                  f"bin {(n + i) * 104729 % 997} of warehouse {(n + i) % 13}")
                 for i in range(25)]
        results = store.remember_many(batch)
        # Only now, after the commit returned, is the batch acknowledged.
        print("ACK " + " ".join(f"{r.memory.id}:{n + i}" for i, r in enumerate(results)), flush=True)
        n += 25
""")


def run_writer_and_kill(data_dir: Path, acks_before_kill: int, delay: float) -> dict[int, int]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    acked: dict[int, int] = {}
    for _ in range(acks_before_kill):
        line = proc.stdout.readline()
        assert line.startswith("ACK "), line
        for pair in line.split()[1:]:
            mid, n = pair.split(":")
            acked[int(mid)] = int(n)
    time.sleep(delay)  # land the kill somewhere inside the next batch
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()  # acknowledgements that were printed before the kill landed
    proc.wait()
    for line in rest.splitlines():
        if line.startswith("ACK "):
            for pair in line.split()[1:]:
                mid, n = pair.split(":")
                acked[int(mid)] = int(n)
    assert proc.returncode == -signal.SIGKILL
    return acked


@pytest.mark.slow
@pytest.mark.parametrize("acks, delay", [(2, 0.0), (3, 0.05), (4, 0.13)])
def test_sigkill_mid_batch_loses_no_acknowledged_memory(tmp_path: Path, embedder: SentenceTransformerEmbedder,
                                                        acks: int, delay: float) -> None:
    data = tmp_path / "m"
    acked = run_writer_and_kill(data, acks, delay)
    assert len(acked) >= 25 * acks

    conn = sqlite3.connect(data / DB_FILE)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    with MemoryStore(Settings(data_dir=data), embedder) as store:
        stored = {m.id: m.text for m in store.all_memories()}
        for mid, n in acked.items():
            assert stored[mid].startswith(f"Acknowledged fact {n}:"), mid
        # Whatever committed is whole: batches are all-or-nothing, so the count is a multiple of 25.
        assert len(stored) % 25 == 0 and len(stored) >= len(acked)
        # The derived index agrees with SQLite after the crash (rebuilt or caught up).
        assert store._vectors().count == len(stored)
        probe = max(acked)
        hits = store.recall(stored[probe], k=1, mode="semantic").hits
        assert hits[0].memory.id == probe
        # And the store keeps working.
        assert store.remember("Written after the crash").status == "created"
