"""A throw-away PostgreSQL cluster for the test session: one server, a fresh database per test.

Why a real server: the coordinator's PostgreSQL backend is tested as it runs (psycopg, the pool,
advisory locks, several stores on one database), never against a fake. The cluster lives in a
temporary directory, listens on 127.0.0.1 at a free port and on a socket in that directory, runs
with fsync off (its data is thrown away), and is stopped and deleted at the end of the session.
PostgreSQL refuses to run as root, so under root it runs as the ``postgres`` user (``runuser``).

The binaries come from ``$CONTINUUM_PG_BIN`` or the newest ``/usr/lib/postgresql/*/bin`` (Debian's
``postgresql`` package; ``.ci/run`` installs it) or ``PATH``. Without them, :func:`find_bin` raises
``PgUnavailable`` and the PostgreSQL variant of every test FAILS with that message (never skips).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg


class PgUnavailable(RuntimeError):
    pass


def find_bin() -> Path:
    """The directory holding initdb and pg_ctl."""
    candidates = [os.environ.get("CONTINUUM_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                         if Path(p).parent.name.isdigit() else 0, reverse=True)
    which = shutil.which("initdb")
    candidates += [str(Path(which).parent)] if which else []
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    raise PgUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found in $CONTINUUM_PG_BIN, "
                        "/usr/lib/postgresql/*/bin or PATH: install Debian's `postgresql` package "
                        "(`apt-get install -y --no-install-recommends postgresql`; .ci/run does) to run the "
                        "PostgreSQL variant of the coordinator tests")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """``start()`` once, ``database()`` per test (a URL of a new, empty database), ``stop()`` at the end."""

    def __init__(self) -> None:
        self.bin = find_bin()
        self.root = Path(tempfile.mkdtemp(prefix="continuum-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        self._names = itertools.count()
        self.user = "postgres" if self._as_postgres else (os.environ.get("USER") or "postgres")

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (self.root / "server.log")
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise PgUnavailable(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")

    def start(self) -> PgServer:
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--locale=C",
                  "--no-sync")
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=400 -c shared_buffers=64MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", opts, "-w",
                  "-t", "60", "start")
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def database(self) -> str:
        """A new empty database; its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if self.data.exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
