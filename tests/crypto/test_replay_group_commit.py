"""The SQLite replay guard commits concurrent nonces together: still exactly-once, still durable."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from continuum_mcp.crypto.replay import SQLiteReplayGuard
from continuum_mcp.errors import ReplayError


def test_concurrent_nonces_are_each_accepted_once_and_survive_a_reopen(tmp_path: Path) -> None:
    guard = SQLiteReplayGuard(tmp_path / "replay.db")
    # 32 threads each send 20 nonces; every nonce is sent by two threads at once (a replay race)
    accepted: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(32)

    def sender(k: int) -> None:
        start.wait()
        for i in range(20):
            key = ("fed-a", f"nonce-{k // 2}-{i}")  # threads 2j and 2j+1 share their nonces
            try:
                guard.check_and_record(*key, expires_at=10_000, now=1)
                with lock:
                    accepted.append(key)
            except ReplayError:
                with lock:
                    refused.append(key)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == len(set(accepted)) == 16 * 20  # each nonce once
    assert sorted(refused) == sorted(accepted)  # and its twin refused
    guard.close()
    reopened = SQLiteReplayGuard(tmp_path / "replay.db")
    assert len(reopened) == 320  # acknowledged means on disk
    with pytest.raises(ReplayError):
        reopened.check_and_record("fed-a", "nonce-0-0", expires_at=10_000, now=2)
    reopened.close()
