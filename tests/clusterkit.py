"""A throwaway PostgreSQL server and a supervised coordinator cluster, for tests and benchmarks.

Why real ones: the multi-process guarantees (no double spend, a round surviving a killed process)
are properties of PostgreSQL's locks, nginx's retries and the supervisor, so they are tested on the
real programs. ``TempPostgres`` runs Debian's PostgreSQL binaries on a fresh data directory and a
free port (as the ``postgres`` user when run as root); ``Cluster`` runs
``continuum-mcp coordinator --workers N [--nginx]`` and reads the worker pids from its output.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PG_BIN = Path(os.environ.get("CONTINUUM_PG_BIN", "/usr/lib/postgresql/15/bin"))
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


def postgres_available() -> bool:
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


def nginx_available() -> bool:
    return Path(NGINX).exists()


class TempPostgres:
    """``with TempPostgres() as pg: pg.url`` -- a PostgreSQL 15 server on a fresh data directory,
    durable as a real one (fsync on), stopped and deleted on exit."""

    def __init__(self, max_connections: int = 300) -> None:
        self.max_connections = max_connections
        self.dir = Path(tempfile.mkdtemp(prefix="continuum-pg-"))
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/continuum"

    def _run(self, *argv: str) -> None:
        proc = subprocess.run([*self._as, *argv], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {proc.stdout[-1500:]} {proc.stderr[-1500:]}")

    def start(self) -> TempPostgres:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections={self.max_connections}"
                " -c shared_buffers=128MB")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.dir / "pg.log"), "-w",
                  "-t", "60", "start")
        self._run(str(PG_BIN / "createdb"), "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "continuum")
        return self

    def database(self, name: str) -> str:
        """A second empty database on the same server (its URL)."""
        self._run(str(PG_BIN / "createdb"), "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def table_sizes(self, url: str | None = None) -> dict[str, tuple[int, int]]:
        """table -> (rows, pg_total_relation_size bytes: heap, indexes and TOAST)."""
        import psycopg

        with psycopg.connect(url or self.url, autocommit=True) as conn:
            names = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")]
            out = {}
            for t in sorted(names):
                rows = conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]  # noqa: S608 (catalog names)
                size = conn.execute("SELECT pg_total_relation_size(%s)", (f'public."{t}"',)).fetchone()[0]
                out[t] = (int(rows), int(size))
            return out

    def stop(self) -> None:
        if self.data.exists():
            try:
                self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except RuntimeError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


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


__all__ = ["Cluster", "TempPostgres", "sqlite_table_sizes", "free_port", "free_port_run", "nginx_available", "postgres_available"]
