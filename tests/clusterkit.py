"""A supervised coordinator cluster and store sizes, for tests and benchmarks.

Why real ones: the multi-process guarantees (no double spend, a round surviving a killed process)
are properties of the database's locks, nginx's retries and the supervisor, so they are tested on
the real programs. ``Cluster`` runs ``continuum-mcp coordinator --workers N [--nginx]`` and reads
the worker pids from its output; PostgreSQL servers come from ``pgserver.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_run(n: int) -> int:
    """A port p with p .. p+n-1 all free (the cluster's public port and its workers)."""
    for _ in range(200):
        p = free_port()
        if p + n >= 65535:
            continue
        socks = []
        try:
            for k in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", p + k))
                socks.append(s)
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no run of {n} free ports")


def nginx_available() -> bool:
    return Path(NGINX).exists()


def pg_table_sizes(url: str) -> dict[str, tuple[int, int]]:
    """table -> (rows, pg_total_relation_size bytes: heap, indexes and TOAST)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")]
        out = {}
        for t in sorted(names):
            rows = conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]  # noqa: S608 (catalog names)
            size = conn.execute("SELECT pg_total_relation_size(%s)", (f'public."{t}"',)).fetchone()[0]
            out[t] = (int(rows), int(size))
        return out


def sqlite_table_sizes(path: Path) -> dict[str, tuple[int, int]]:
    """table -> (rows, bytes of its pages and its indexes' pages), from SQLite's ``dbstat``."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        sizes: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            sizes[table] = sizes.get(table, 0) + int(size)
        return {t: (int(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]), b)  # noqa: S608 (catalog)
                for t, b in sorted(sizes.items()) if not t.startswith("sqlite_")}
    finally:
        conn.close()


_WORKER = re.compile(r"^worker (\d+) pid (\d+) on http://([^:]+):(\d+)")


class Cluster:
    """``continuum-mcp coordinator --workers N [--nginx] <args>`` as a subprocess.

    ``url`` is the public address (nginx, or worker 0 without it); ``pids()`` the current worker
    pids as the supervisor reported them (a restarted worker reports its new pid)."""

    def __init__(self, args: Sequence[str], *, workers: int, nginx: bool, storage: Path,
                 env: dict[str, str] | None = None) -> None:
        self.workers = workers
        self.port = free_port_run(workers + 1)
        self.storage = storage
        argv = [sys.executable, "-m", "continuum_mcp.cli.main", "coordinator", "--storage", str(storage),
                "--port", str(self.port), "--workers", str(workers), *(["--nginx", "--nginx-binary", NGINX]
                                                                       if nginx else []), *args]
        if workers == 1 and not nginx:
            argv.remove("--workers")
            argv.remove("1")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env or dict(os.environ))
        self.lines: list[str] = []
        self._pids: dict[int, int] = {}
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(120) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("the cluster did not start:\n" + "\n".join(self.lines[-40:]))
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            m = _WORKER.match(line)
            if m:
                self._pids[int(m.group(1))] = int(m.group(2))
            if line.startswith("ready:") or (self.workers == 1 and line.startswith("continuum-mcp coordinator ")):
                self._ready.set()
        self._ready.set()

    def pids(self) -> dict[int, int]:
        return dict(self._pids)

    def worker_urls(self) -> list[str]:
        first = self.port + 1
        return [f"http://127.0.0.1:{first + i}" for i in range(self.workers)]

    def kill_worker(self, index: int) -> int:
        """SIGKILL worker ``index`` (no clean shutdown: the crash case). Returns the killed pid."""
        pid = self._pids[index]
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_restarted(self, index: int, old_pid: int, timeout: float = 30.0) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid = self._pids.get(index)
            if pid is not None and pid != old_pid:
                return pid
            time.sleep(0.05)
        raise TimeoutError(f"worker {index} was not restarted:\n" + "\n".join(self.lines[-20:]))

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["Cluster", "free_port", "free_port_run", "nginx_available", "pg_table_sizes", "sqlite_table_sizes"]
