"""``continuum-mcp coordinator --workers N [--nginx]``: N coordinator processes, optionally behind nginx.

Why processes and a supervisor: one Python process serves requests on one core at a time (the GIL),
so a federation with many members runs several coordinator processes over one shared store
(PostgreSQL; SQLite is multi-process safe on one machine's local disk, with one writer at a time).
The processes keep no state another needs: the store holds rounds, credits and replay nonces. The
supervisor only starts them on consecutive local ports, restarts one that dies (backing off when it
keeps dying), puts a generated nginx in front (``_nginx.py``), and stops everything on SIGTERM.
The first worker starts alone, so that creating or migrating the schema happens once.
"""

from __future__ import annotations

import argparse
import http.client
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field

from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.coordinator._nginx import nginx_config
from continuum_mcp.federation.coordinator.config import CoordinatorConfig

#: how long a process may take to answer /v1/health after it was started
START_TIMEOUT = 60.0
#: a worker that ran at least this long before dying is restarted at once (else the delay doubles)
STABLE_SECONDS = 10.0
MAX_BACKOFF = 30.0


class DeployOptions(BaseModel):
    """How many coordinator processes, and whether the launcher runs nginx in front of them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(default=1, ge=1, le=64, description="coordinator processes on consecutive local ports")
    nginx: bool = Field(default=False, description="run nginx on --host/--port in front of the workers, which then "
                                                   "listen on 127.0.0.1 from --worker-port")
    worker_port: int | None = Field(default=None, ge=1, le=65535,
                                    description="first worker port (default: --port, or --port + 1 with --nginx)")
    nginx_binary: str = Field(default="nginx", description="nginx executable (looked up on PATH and in /usr/sbin)")
    run_dir: Path | None = Field(default=None, description="nginx's config, pid file, temp files and log "
                                                           "(default: <storage>/run)")

    def ports(self, config: CoordinatorConfig) -> list[int]:
        first = self.worker_port or (config.port + 1 if self.nginx else config.port)
        if config.port == 0 or first + self.workers - 1 > 65535:
            raise InvalidInput("--workers needs a fixed --port (not 0) and room for consecutive worker ports")
        ports = list(range(first, first + self.workers))
        if self.nginx and config.port in ports:
            raise InvalidInput(f"worker ports {ports[0]}-{ports[-1]} overlap the public port {config.port}")
        return ports


def add_deploy_arguments(p: argparse.ArgumentParser) -> None:
    """The ``DeployOptions`` flags (``--workers``, ``--nginx``, ...) on a parser."""
    for name, f in DeployOptions.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if f.annotation is bool:
            p.add_argument(flag, dest=name, action="store_true", help=f.description)
        else:
            typ = int if name in ("workers", "worker_port") else (Path if name == "run_dir" else str)
            p.add_argument(flag, dest=name, type=typ, default=f.default, help=f.description)


def split_deploy_args(argv: Sequence[str]) -> tuple[DeployOptions, list[str]]:
    """(the deploy options, every other argument in its order): the others go to each worker."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_deploy_arguments(p)
    known, rest = p.parse_known_args(list(argv))
    return DeployOptions(**vars(known)), rest


def find_nginx(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise InvalidInput(f"nginx executable {name!r} not found (Debian: apt-get install nginx)")
    return found


def _healthy(host: str, port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(host, port, timeout=1.0)
        try:
            conn.request("GET", "/v1/health")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        # not up yet; or, while nothing listens on a loopback port, the kernel connected the probe
        # to itself (its source port was the target) and it read its own request back (BadStatusLine)
        return False


@dataclass
class Child:
    """One supervised process: what starts it, the running process, and its restart bookkeeping."""

    name: str
    argv: list[str]
    port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = 0.5
    restart_at: float | None = None
    restarts: int = 0
    log: IO[bytes] | None = field(default=None, repr=False)


class Supervisor:
    """Starts the workers (and nginx), restarts what dies, stops everything on :meth:`stop`."""

    def __init__(self, config: CoordinatorConfig, options: DeployOptions, worker_args: Sequence[str], *,
                 python: str = sys.executable, out: IO[str] = sys.stdout) -> None:
        self.config, self.options, self.out = config, options, out
        ports = options.ports(config)
        host = "127.0.0.1" if options.nginx else config.host
        extra = ["--host", host]
        if options.nginx and config.trusted_proxies is None:
            extra += ["--trusted-proxies", "127.0.0.1"]  # the launcher's nginx is the only proxy
        base = [python, "-m", "continuum_mcp.cli.main", "coordinator", *worker_args, *extra]
        self.workers = [Child(f"worker {i}", [*base, "--port", str(p)], p, host) for i, p in enumerate(ports)]
        self.nginx: Child | None = None
        if options.nginx:
            run_dir = Path(options.run_dir or config.storage_path / "run")
            conf = run_dir / "nginx.conf"
            self.nginx = Child("nginx", [find_nginx(options.nginx_binary), "-p", str(run_dir), "-c", str(conf),
                                         "-g", "daemon off;"], config.port, config.host)
            self._write_nginx(run_dir, conf, [(host, p) for p in ports])
        self._stopping = threading.Event()

    def _write_nginx(self, run_dir: Path, conf: Path, upstreams: list[tuple[str, int]]) -> None:
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # nginx started as root drops its workers to a user; make it the owner of the storage
        user = pwd.getpwuid(run_dir.stat().st_uid).pw_name if os.geteuid() == 0 else None
        listen = f"[{self.config.host}]:{self.config.port}" if ":" in self.config.host else \
            f"{self.config.host}:{self.config.port}"
        conf.write_text(nginx_config(self.config, upstreams, listen=listen, run_dir=run_dir, user=user))

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.argv, stdin=subprocess.DEVNULL, start_new_session=True)
        child.started_at = time.monotonic()
        child.restart_at = None
        self._say(f"{child.name} pid {child.proc.pid} on http://{child.host}:{child.port}")

    def _wait_healthy(self, children: Sequence[Child], timeout: float = START_TIMEOUT) -> None:
        end = time.monotonic() + timeout
        waiting = list(children)
        while waiting:
            for c in list(waiting):
                assert c.proc is not None
                if c.proc.poll() is not None:
                    raise ChildFailed(c.name, c.proc.returncode)
                if _healthy(c.host if c.host not in ("0.0.0.0", "::") else "127.0.0.1", c.port):
                    waiting.remove(c)
            if waiting and time.monotonic() > end:
                raise ChildFailed(waiting[0].name, None)
            time.sleep(0.1)

    def start(self) -> None:
        """Start worker 0 alone (it creates or migrates the schema), then the others, then nginx;
        return once every one answers ``/v1/health``. A start failure stops everything."""
        try:
            self._spawn(self.workers[0])
            self._wait_healthy(self.workers[:1])
            for w in self.workers[1:]:
                self._spawn(w)
            self._wait_healthy(self.workers[1:])
            if self.nginx is not None:
                self._spawn(self.nginx)
                self._wait_healthy([self.nginx])
        except BaseException:
            self.stop()
            raise
        self._say(f"ready: {len(self.workers)} coordinator process(es) at {self.url}")

    def check(self, now: float | None = None) -> None:
        """One supervision step: restart (with backoff) every child that exited."""
        now = time.monotonic() if now is None else now
        for c in [*self.workers, *([self.nginx] if self.nginx else [])]:
            if self._stopping.is_set() or c.proc is None or c.proc.poll() is None:
                continue
            if c.restart_at is None:
                c.backoff = 0.5 if now - c.started_at >= STABLE_SECONDS else min(MAX_BACKOFF, c.backoff * 2)
                c.restart_at = now + c.backoff
                self._say(f"{c.name} pid {c.proc.pid} exited with code {c.proc.returncode}; "
                          f"restarting in {c.backoff:.1f} s")
            elif now >= c.restart_at:
                c.restarts += 1
                self._spawn(c)

    def run(self) -> None:
        """Supervise until :meth:`stop` (SIGTERM/SIGINT in :func:`serve`)."""
        while not self._stopping.wait(0.2):
            self.check()

    def stop(self, grace: float = 10.0) -> None:
        """nginx first (no new requests), then the workers: SIGTERM, then SIGKILL after ``grace``."""
        self._stopping.set()
        for group in ([self.nginx] if self.nginx else [], self.workers):
            live = [c.proc for c in group if c.proc is not None and c.proc.poll() is None]
            for p in live:
                p.send_signal(signal.SIGQUIT if group is not self.workers else signal.SIGTERM)
            end = time.monotonic() + grace
            for p in live:
                try:
                    p.wait(timeout=max(0.1, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


class ChildFailed(InvalidInput):
    """A worker or nginx did not come up (its own error is on stderr)."""

    def __init__(self, name: str, returncode: int | None) -> None:
        how = "did not answer /v1/health in time" if returncode is None else f"exited with code {returncode}"
        super().__init__(f"{name} {how}; its error is printed above")
        self.returncode = returncode


def serve(config: CoordinatorConfig, options: DeployOptions, worker_args: Sequence[str]) -> int:
    """The CLI: start, supervise until SIGTERM/SIGINT, stop. Returns the exit code."""
    if options.workers > 1 and getattr(config, "database", None) in (None, ""):
        print("note: several workers share the SQLite store (WAL, BEGIN IMMEDIATE: correct on one machine's local "
              "disk, one writer at a time); PostgreSQL (--database) is recommended for more than one worker",
              file=sys.stderr, flush=True)
    sup = Supervisor(config, options, worker_args)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sup._stopping.set())
    try:
        sup.start()
    except ChildFailed as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return exc.returncode if exc.returncode else exc.exit_code
    sup.run()
    sup.stop()
    return 0


__all__ = ["DeployOptions", "Supervisor", "add_deploy_arguments", "find_nginx", "serve", "split_deploy_args"]
