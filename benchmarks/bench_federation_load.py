"""Load benchmark of the federation coordinator: N concurrent clients against several deployments.

Setups, side by side in one invocation (``--setups``): one process on SQLite, two on SQLite behind
nginx, one on PostgreSQL, two and four on PostgreSQL behind nginx. Each is started as a self-hoster
starts it, ``continuum-mcp coordinator [--workers N --nginx]`` (``tests/clusterkit.Cluster``), on a
PostgreSQL server the benchmark starts itself (``tests/pgserver.PgServer(durable=True)``: fsync on).

Setup (all on 127.0.0.1, one machine):
- Options: privacy mode ``open``, ``min_contributors`` 3, the full 256 x 384 codebook layout,
  ``--no-require-contribution`` (queries cost no credits, so thousands of queries are not refused
  with 402 once the free tier is used up), and the per-identity rate limit RAISED from the default
  1200 to 1,000,000 requests per minute (``--rate-limit``), so the benchmark measures the service
  and not its throttle.
- Per store, with one process: a release first (SEED_MEMBERS members contribute patterns sharing
  12 slots; the round is closed with the admin route and each member takes part in the four
  secure-aggregation phases over HTTP exactly as the client does, ``client.run_round``), so queries
  hit released patterns; then the load identities join, each with its own admission token. Each
  setup of that store then starts on the same state.
- Then each load identity contributes once (a warm-up), so that in every setup a measured
  contribution replaces a pending one, as re-posting members do (otherwise the first setup
  measured on a store would insert only, and look faster).
- Load: N admitted identities run concurrently in one asyncio process, each on its own keep-alive
  HTTP/1.1 connection (:class:`Connection`; httpx cost 10 ms of CPU per request at this
  concurrency); every request carries the real Ed25519 signature headers of
  ``Identity.sign_request`` (fresh nonce each time). Each client sends ``--queries`` ``POST
  /v1/query`` (the client's ``pad_with_decoys``: 4 wanted released slots padded to 16), then
  ``--contributions`` ``POST /v1/contributions`` (``submission.build_contribution`` of 20 patterns
  with 4 phrases and a statement each; bodies built and encrypted before the clock starts, signed
  at send time).

Measured: query latency p50/p95 and queries per second; contributions (HTTP 202) per second with
latency p50/p95; errors (non-2xx by status, transport failures by type); the coordinator's CPU per
query and per contribution (all its processes and nginx, from /proc); the load average; at the end
the store's rows and bytes per table and the store scale model of docs/scale.md.

Usage:
    python benchmarks/bench_federation_load.py                    # sqlite-1, pg-1, pg-2, pg-4; N = 10, 50, 200
    python benchmarks/bench_federation_load.py --setups sqlite-1,sqlite-2 --clients 200 --queries 5
    python benchmarks/bench_federation_load.py --setups pg-1,pg-2 --baseline e918bed   # before/after a change
    python benchmarks/bench_federation_load.py --quick            # smoke test (one process on SQLite, N = 5, 10)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from continuum_mcp.crypto.cipher import FederationCipher, generate_federation_key
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.client import QUERY_TOP_SLOTS, pad_with_decoys, run_round
from continuum_mcp.federation.participant import RoundExpectations, RoundParticipant
from continuum_mcp.federation.protocol import JoinRequest, QueryRequest
from continuum_mcp.federation.submission import PlannedPattern, build_contribution, secagg_input
from continuum_mcp.privacy.modes import default_policy
from machine import machine  # benchmarks/machine.py (the script's folder is on sys.path)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from clusterkit import Cluster, nginx_available, pg_table_sizes, sqlite_table_sizes  # noqa: E402 (tests/clusterkit.py)
from pgserver import PgServer  # noqa: E402 (tests/pgserver.py)

FED = "fed-load-bench"
ADMIN = "load-bench-admin-token"
SLOTS, DIM = 256, 384
RATE_LIMIT = 1_000_000  # requests per minute per identity (the default is 1200)
SEED_MEMBERS = 12  # release v2's open mode needs about 8-10 distinct contributors per phrase
SHARED_SLOTS = list(range(12))
PATTERNS_PER_CONTRIBUTION = 20
PHRASES_PER_PATTERN = 4


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    k = max(0, min(len(xs) - 1, round(q * (len(xs) - 1))))
    return xs[k]


# ------------------------------------------------------------------------------------------ setup


def member(url: str, token: str, level: str = "standard") -> CoordinatorAPI:
    """A fresh identity, joined with ``token``: the CoordinatorAPI the client would use."""
    api = CoordinatorAPI(url, Identity.generate(), timeout_seconds=120)
    api.join(JoinRequest(admission_token=token, privacy_mode="open",
                         contribution_level=level))  # type: ignore[arg-type]
    return api


def tokens(admin: CoordinatorAPI, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        out += admin.admin_invites(min(1000, n - len(out))).admission_tokens
    return out


def seed_release(url: str, admin: CoordinatorAPI, cipher: FederationCipher, rng: np.random.Generator
                 ) -> tuple[CoordinatorAPI, int]:
    """SEED_MEMBERS members share 12 slots; one round is aggregated (real secagg over HTTP) and released.
    Returns a seed member's API and the number of released pattern slots."""
    members = [member(url, t) for t in tokens(admin, SEED_MEMBERS)]
    centres = {s: rng.standard_normal(DIM) for s in SHARED_SLOTS}
    planned: dict[str, list[PlannedPattern]] = {}
    for k, api in enumerate(members):
        planned[api.identity.instance_id] = mine = [PlannedPattern(
            slot=s, confidence=0.9, phrases=[f"shared topic {s}", f"common phrase {s}", f"member {k} wording {s}"],
            statement=f"statement about topic {s} from member {k}", pattern_id=f"seed-{k}-{s}", source_memory_ids=[],
            embedding=list(centres[s] + 0.3 * rng.standard_normal(DIM))) for s in SHARED_SLOTS]
        api.contribute(build_contribution(mine, 0, cipher, "open"))
    st = admin.admin_close_round()
    if st.phase != "advertise":
        raise RuntimeError(f"seed round did not close: {st.phase}")
    expect = RoundExpectations.for_mode(FED, SLOTS, DIM, default_policy().mode("open"))

    def take_part(api: CoordinatorAPI) -> Any:
        mine = planned[api.identity.instance_id]
        part = RoundParticipant(api.identity, expect, lambda p: secagg_input(mine, SLOTS, DIM, p.clip_norm))
        return run_round(api, part, timeout_seconds=600)

    with ThreadPoolExecutor(len(members)) as pool:
        outcomes = list(pool.map(take_part, members))
    if not all(o.released for o in outcomes):
        raise RuntimeError(f"seed round not released: {[o.message or o.phase for o in outcomes]}")
    q = members[0].query(QueryRequest(slots=SHARED_SLOTS))
    for api in members[1:]:
        api.close()
    return members[0], len(q.patterns)


# ------------------------------------------------------------------------------------------ load


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    ok: int = 0
    wall: float = 0.0


class Connection:
    """One client's keep-alive HTTP/1.1 connection, written and parsed by hand.

    Why not httpx here: with hundreds of connections in one process httpx spent about 10 ms of CPU
    per request (three times the coordinator's own cost), so on a 2-core machine the load
    generator, not the coordinator, set the figures. This client sends the same bytes a real one
    does (method, path, Host, the signature headers, Content-Type/-Length, the body) at a fraction
    of the CPU; latency is measured from the first byte written to the last byte read."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}",
                *(f"{k}: {v}" for k, v in headers.items())]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
        if "content-length" not in fields:
            raise ConnectionError("response without Content-Length")
        await self.reader.readexactly(int(fields["content-length"]))
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def _send(conn: Connection, ident: Identity, method: str, path: str, body: bytes, expect: int,
                stats: Stats) -> None:
    headers = ident.sign_request(method, path, body)
    headers["Content-Type"] = "application/json"
    t = time.perf_counter()
    try:
        status = await asyncio.wait_for(conn.request(method, path, headers, body), 120)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
        stats.errors[f"transport {type(exc).__name__}"] += 1
        await conn.close()
        return
    stats.latencies.append(time.perf_counter() - t)
    if status == expect:
        stats.ok += 1
    else:
        stats.errors[f"HTTP {status}"] += 1


async def run_phase(url: str, jobs: Sequence[tuple[Identity, list[bytes]]], method: str, path: str,
                    expect: int) -> Stats:
    """All clients at once, each on its own keep-alive connection, sending its requests one after the other."""
    stats = Stats()
    u = httpx.URL(url)
    host, port = u.host, int(u.port or 80)

    async def client(ident: Identity, bodies: list[bytes]) -> None:
        conn = Connection(host, port)
        try:
            for body in bodies:
                await _send(conn, ident, method, path, body, expect, stats)
        finally:
            await conn.close()

    t = time.perf_counter()
    await asyncio.gather(*(client(i, b) for i, b in jobs))
    stats.wall = time.perf_counter() - t
    return stats


def contribution_body(cipher: FederationCipher, round_id: int, rnd: random.Random) -> bytes:
    patterns = [PlannedPattern(
        slot=s, confidence=round(rnd.uniform(0.5, 1.0), 3),
        phrases=list(dict.fromkeys(f"load phrase {rnd.randrange(50)} in {s}" for _ in range(PHRASES_PER_PATTERN))),
        statement=f"a scrubbed statement about slot {s}", pattern_id=f"load-{s}", source_memory_ids=[], embedding=[])
        for s in rnd.sample(range(SLOTS), PATTERNS_PER_CONTRIBUTION)]
    return build_contribution(patterns, round_id, cipher, "open").model_dump_json().encode()


def query_body(released: Sequence[int], rnd: random.Random) -> bytes:
    """The client's query: its top released slots padded with decoys (``pad_with_decoys``; the
    decoy secret is random here, as the load does not depend on which decoys are asked for)."""
    wanted = rnd.sample(list(released), min(QUERY_TOP_SLOTS, len(released)))
    secret = rnd.randbytes(32)
    return QueryRequest(slots=pad_with_decoys(wanted, released, SLOTS, secret)).model_dump_json().encode()


def fmt_errors(*stats: Stats) -> str:
    c: Counter[str] = Counter()
    for s in stats:
        c.update(s.errors)
    return ", ".join(f"{k}: {v}" for k, v in sorted(c.items())) or "0"


@dataclass(frozen=True)
class Setup:
    """One deployment measured: the store, the number of coordinator processes, nginx or not."""

    name: str
    backend: str  # "sqlite" | "postgresql"
    workers: int
    nginx: bool
    code: str = ""  # a git revision whose code the coordinators run (--baseline); "" = this tree

    @property
    def label(self) -> str:
        store = "SQLite" if self.backend == "sqlite" else "PostgreSQL"
        procs = f"{self.workers} process{'es' if self.workers > 1 else ''}"
        return f"{procs} on {store}" + (" behind nginx" if self.nginx else "") + (f" [{self.code}]" if self.code else "")


def export_revision(rev: str, into: Path) -> Path:
    """The ``continuum_mcp`` package of git revision ``rev`` in ``into`` (``git archive``), to put
    first on the coordinators' PYTHONPATH: before and after a change measured in one invocation,
    under the same load. The revision must open the store this tree prepares (same schema version)."""
    repo = Path(__file__).resolve().parent.parent
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "continuum_mcp"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


SETUPS = {s.name: s for s in (Setup("sqlite-1", "sqlite", 1, False), Setup("sqlite-2", "sqlite", 2, True),
                              Setup("pg-1", "postgresql", 1, False), Setup("pg-2", "postgresql", 2, True),
                              Setup("pg-4", "postgresql", 4, True))}


def coordinator_args(database: str | None) -> list[str]:
    return ["--min-contributors", "3", "--privacy-mode", "open", "--no-require-contribution", "--federation-id", FED,
            "--admin-token", ADMIN, "--rate-limit", str(RATE_LIMIT), "--phase-timeout", "120", "--slots", str(SLOTS),
            "--dim", str(DIM), "--log-level", "WARNING", *(["--database", database] if database else [])]


def postgres_supported() -> bool:
    from continuum_mcp.federation.coordinator.config import CoordinatorConfig

    return "database" in CoordinatorConfig.model_fields


@dataclass
class Prepared:
    """A store with a released round and ``n`` joined load identities."""

    storage: Path
    database: str | None
    released: list[int]
    round_id: int
    idents: list[Identity]
    note: str
    log_peak: tuple[int, int] = (0, 0)  # (rows, bytes of message bodies) of the seed round's log at its largest


class LogWatch:
    """The largest the secure-aggregation log got while a round ran (polled): the coordinator
    deletes an attempt's log when it is released, so the end-of-run table sizes no longer show it."""

    def __init__(self, storage: Path, database: str | None) -> None:
        self._storage, self._database = storage, database
        self.peak = (0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[int, int]:
        sql = "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM secagg_log"
        if self._database:
            import psycopg

            with psycopg.connect(self._database, autocommit=True) as conn:
                row = conn.execute(sql).fetchone()
        else:
            import sqlite3

            conn = sqlite3.connect(f"file:{self._storage / 'coordinator.db'}?mode=ro", uri=True, timeout=30)
            try:
                row = conn.execute(sql).fetchone()
            finally:
                conn.close()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                rows, size = self._sample()
            except Exception:  # the table may not exist yet; the file may be busy
                continue
            if size > self.peak[1]:
                self.peak = (rows, size)

    def __enter__(self) -> LogWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def prepare(storage: Path, database: str | None, n: int, cipher: FederationCipher, rng: np.random.Generator
            ) -> Prepared:
    """One coordinator process on the store: the seed release, then ``n`` identities join."""
    with Cluster(coordinator_args(database), workers=1, nginx=False, storage=storage) as cl:
        admin = CoordinatorAPI(cl.url, None, admin_token=ADMIN, timeout_seconds=120)
        t = time.perf_counter()
        with LogWatch(storage, database) as watch:
            seed, n_released = seed_release(cl.url, admin, cipher, rng)
        released = sorted(s.slot for s in seed.slots().slots if s.released_at_round >= 0)
        t_seed = time.perf_counter() - t
        t = time.perf_counter()
        toks = tokens(admin, n)

        def join(tok: str) -> Identity:
            with member(cl.url, tok, "extensive") as api:
                assert api.identity is not None
                return api.identity

        with ThreadPoolExecutor(8) as pool:
            idents = list(pool.map(join, toks))
        round_id = seed.round_current().round_id
        # every identity has a pending contribution before any setup is measured, so each measured
        # contribution replaces one (delete + insert), whichever setup runs first on the store
        rnd = random.Random(0)
        warm = asyncio.run(run_phase(cl.url, [(i, [contribution_body(cipher, round_id, rnd)]) for i in idents],
                                     "POST", "/v1/contributions", 202))
        if warm.ok != len(idents):
            raise RuntimeError(f"warm-up contributions failed: {fmt_errors(warm)}")
        seed.close()
        admin.close()
    return Prepared(storage, database, released, round_id, idents, note=
                    f"seed release ({SEED_MEMBERS} members, real secure aggregation over HTTP, {n_released} patterns) "
                    f"{t_seed:.1f} s; {n} identities joined in {time.perf_counter() - t:.1f} s; secure-aggregation log at its "
                    f"largest {watch.peak[0]} rows, {fmt_size(watch.peak[1])} of messages, deleted at the release",
                    log_peak=watch.peak)


def measure(setup: Setup, prep: Prepared, sizes: Sequence[int], nq: int, nc: int, cipher: FederationCipher,
            rnd: random.Random, code: Path | None = None, db_pid: int | None = None) -> list[dict[str, Any]]:
    """``db_pid``: the PostgreSQL postmaster, whose backends' CPU is reported beside the coordinators'."""
    rows: list[dict[str, Any]] = []

    def cpu() -> tuple[float, float]:
        return tree_cpu_seconds(cl.proc.pid), tree_cpu_seconds(db_pid) if db_pid else 0.0

    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [env.get("PYTHONPATH")])])
    with start_cluster(coordinator_args(prep.database), workers=setup.workers, nginx=setup.nginx,
                       storage=prep.storage, env=env) as cl:
        for n in sizes:
            group = prep.idents[:n]
            load_before = os.getloadavg()[0]
            q_jobs = [(i, [query_body(prep.released, rnd) for _ in range(nq)]) for i in group]
            (cpu_server, cpu_db), cpu_client = cpu(), self_cpu_seconds()
            qs = asyncio.run(run_phase(cl.url, q_jobs, "POST", "/v1/query", 200))
            cpu_server, cpu_db = (b - a for a, b in zip((cpu_server, cpu_db), cpu(), strict=True))
            cpu_client = self_cpu_seconds() - cpu_client
            c_jobs = [(i, [contribution_body(cipher, prep.round_id, rnd) for _ in range(nc)]) for i in group]
            cpu_c, cpu_c_db = cpu()
            cs = asyncio.run(run_phase(cl.url, c_jobs, "POST", "/v1/contributions", 202))
            cpu_c, cpu_c_db = (b - a for a, b in zip((cpu_c, cpu_c_db), cpu(), strict=True))
            row = {
                "setup": setup.label, "backend": setup.backend, "code": setup.code, "n": n, "queries": n * nq, "q_p50": pct(qs.latencies, 0.5) * 1000,
                "q_p95": pct(qs.latencies, 0.95) * 1000, "q_rate": qs.ok / qs.wall if qs.wall else 0.0,
                "contribs": n * nc, "c_p50": pct(cs.latencies, 0.5) * 1000, "c_p95": pct(cs.latencies, 0.95) * 1000,
                "c_rate": cs.ok / cs.wall if cs.wall else 0.0, "errors": fmt_errors(qs, cs),
                "load": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}",
                "q_cpu_server": cpu_server / max(1, n * nq) * 1000, "q_cpu_client": cpu_client / max(1, n * nq) * 1000,
                "c_cpu_server": cpu_c / max(1, n * nc) * 1000,
                "q_cpu_db": cpu_db / max(1, n * nq) * 1000, "c_cpu_db": cpu_c_db / max(1, n * nc) * 1000,
            }
            rows.append(row)
            print(f"  {setup.label}, N={n}: queries {qs.ok}/{n * nq} ok, p50 {row['q_p50']:.1f} ms, "
                  f"p95 {row['q_p95']:.1f} ms, {row['q_rate']:.0f}/s; contributions {cs.ok}/{n * nc} ok, "
                  f"{row['c_rate']:.1f}/s; errors {row['errors']}; load average {row['load']}; CPU per query: "
                  f"server {row['q_cpu_server']:.2f} ms, load generator {row['q_cpu_client']:.2f} ms; server CPU per "
                  f"contribution {row['c_cpu_server']:.1f} ms; PostgreSQL CPU per query {row['q_cpu_db']:.2f} ms, per "
                  f"contribution {row['c_cpu_db']:.1f} ms", flush=True)
        pids = list(cl.pids().values()) or [cl.proc.pid]
        rss = sum(rss_kb(p) for p in pids) / 1024
        print(f"  {setup.label}: coordinator RSS at the end {rss:.0f} MB in {len(pids)} process(es)", flush=True)
    return rows


def start_cluster(args: Sequence[str], **kw: Any) -> Cluster:
    """A cluster, retried on new ports when one start fails: on a shared machine another program
    may take one of the free ports picked between the pick and the bind (EADDRINUSE)."""
    for attempt in range(3):
        try:
            return Cluster(args, **kw)
        except RuntimeError as exc:
            if attempt == 2:
                raise
            print(f"  cluster start failed, retrying on other ports: {str(exc).splitlines()[-1]}", flush=True)
    raise AssertionError("unreachable")


def tree_cpu_seconds(root: int) -> float:
    """user + system CPU of ``root`` and all its live descendants (the coordinators, nginx)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += [c for c, (ppid, _) in stats.items() if ppid == pid]
    return total


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


#: scale-model assumptions (docs/scale.md): patterns per member per window, queries per member per day,
#: the busiest hour's share of a day's queries, and the release window in days (one round per member per window)
MODEL_PATTERNS, MODEL_QUERIES_PER_DAY, MODEL_PEAK_HOUR_SHARE, MODEL_WINDOW_DAYS = 20, 10, 0.125, 30
MODEL_JOURNAL_ROW = 160  # bytes per credit-journal row when the run made too few to measure (estimate)


def store_scale_model(sizes: dict[str, tuple[int, int]], cpu_query_ms: float, cpu_contribution_ms: float,
                      log_peak: tuple[int, int]) -> str:
    """Rows, bytes and CPU per day for 10^3 / 10^5 / 10^6 members, from this run's measured bytes per
    row and CPU per request. Rounds close daily; each member takes part once per window. The
    secure-aggregation log (``log_peak``: the seed round's at its largest) is deleted when its round
    is released, so it is the space a running round needs, not growth."""
    def per_row(table: str, fallback: float) -> float:
        rows, size = sizes.get(table, (0, 0))
        return size / rows if rows >= 100 else fallback

    log_rows, log_bytes = log_peak
    log_per_member = log_bytes / SEED_MEMBERS  # the one secure-aggregation round of the run had SEED_MEMBERS
    sub, phr = per_row("submissions", 330.0), per_row("phrases", 280.0)
    phrases_per_pattern = (sizes.get("phrases", (0, 0))[0] / max(1, sizes.get("submissions", (1, 1))[0])) or 4.0
    jr = per_row("credit_journal", MODEL_JOURNAL_ROW)
    lines = ["| members | members per daily round | submissions + phrases rows per day | secure-aggregation log "
             "while a round runs (deleted at its release) | credit-journal rows per day | store growth per day | "
             "store after a year (no pruning) "
             "| busiest-hour queries/s | query + contribution CPU per day |", "|---|---|---|---|---|---|---|---|---|"]
    for n in (1_000, 100_000, 1_000_000):
        per_round = n / MODEL_WINDOW_DAYS
        sub_rows = per_round * MODEL_PATTERNS
        phr_rows = sub_rows * phrases_per_pattern
        log_day = per_round * log_per_member
        jr_rows = n * MODEL_QUERIES_PER_DAY + per_round
        growth = sub_rows * sub + phr_rows * phr + jr_rows * jr
        peak = n * MODEL_QUERIES_PER_DAY * MODEL_PEAK_HOUR_SHARE / 3600
        cpu = (n * MODEL_QUERIES_PER_DAY * cpu_query_ms + per_round * cpu_contribution_ms) / 1000
        lines.append(f"| {n:,} | {per_round:,.0f} | {sub_rows + phr_rows:,.0f} | {fmt_size(log_day)} | {jr_rows:,.0f} | "
                     f"{fmt_size(growth)} | {fmt_size(growth * 365)} | {peak:,.1f} | {cpu / 3600:,.2f} core-hours |")
    return "\n".join(lines) + (f"\n\nMeasured inputs: {sub:.0f} B per submission row, {phr:.0f} B per phrase row "
                               f"({phrases_per_pattern:.2f} phrases per pattern), {fmt_size(log_per_member)} of "
                               f"secure-aggregation log per member per round ({log_rows} log rows of a "
                               f"{SEED_MEMBERS}-member round), {jr:.0f} B per credit-journal row"
                               f"{' (estimate: too few rows in the run)' if jr == MODEL_JOURNAL_ROW else ''}, "
                               f"{cpu_query_ms:.2f} ms server CPU per query, {cpu_contribution_ms:.1f} ms per "
                               f"contribution of {PATTERNS_PER_CONTRIBUTION} patterns. Assumed: {MODEL_PATTERNS} "
                               f"patterns per member per {MODEL_WINDOW_DAYS}-day window, {MODEL_QUERIES_PER_DAY} "
                               f"queries per member per day, {MODEL_PEAK_HOUR_SHARE:.1%} of them in the busiest hour.")


def db_cpu(r: dict[str, Any]) -> str:
    return "" if r["backend"] == "sqlite" else f"{r['q_cpu_db']:.2f} / {r['c_cpu_db']:.1f} ms"


def fmt_size(b: float) -> str:
    for unit, k in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= k:
            return f"{b / k:,.1f} {unit}"
    return f"{b:.0f} B"


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="10,50,200", help="concurrent clients per run, comma-separated")
    ap.add_argument("--queries", type=int, default=10, help="queries per client")
    ap.add_argument("--contributions", type=int, default=3, help="contributions per client")
    ap.add_argument("--setups", default="sqlite-1,pg-1,pg-2,pg-4",
                    help=f"deployments to measure side by side, comma-separated, of {', '.join(SETUPS)}")
    ap.add_argument("--quick", action="store_true", help="N = 5, 10; 3 queries and 1 contribution per client; "
                                                         "one process on SQLite")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--baseline", metavar="REV", default="",
                    help="also run every setup on the code of git revision REV, each right before this tree's run "
                         "(before and after in one invocation, under the same load)")
    args = ap.parse_args(argv)
    if args.quick:
        sizes, nq, nc, names = [5, 10], 3, 1, ["sqlite-1"]
    else:
        sizes, nq, nc = [int(x) for x in args.clients.split(",") if x.strip()], args.queries, args.contributions
        names = [x.strip() for x in args.setups.split(",") if x.strip()]
    unknown = [x for x in names if x not in SETUPS]
    if unknown:
        ap.error(f"unknown setups {unknown}; choose from {', '.join(SETUPS)}")
    setups = [SETUPS[x] for x in names]
    if args.baseline:
        setups = [v for s in setups for v in (Setup(s.name, s.backend, s.workers, s.nginx, args.baseline), s)]
    if any(s.backend == "postgresql" for s in setups) and not postgres_supported():
        print("PostgreSQL setups skipped: this coordinator has no --database option (the PostgreSQL store is not "
              "in this tree)", flush=True)
        setups = [s for s in setups if s.backend == "sqlite"]
    if any(s.nginx for s in setups) and not nginx_available():
        print("nginx setups skipped: no nginx executable", flush=True)
        setups = [s for s in setups if not s.nginx]
    t_all = time.perf_counter()
    rnd = random.Random(args.seed)
    rng = np.random.default_rng(args.seed)
    cipher = FederationCipher(generate_federation_key(), FED)
    print(f"Machine: {machine()}; load average at start {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="fed-load-"))
    rows: list[dict[str, Any]] = []
    pg: PgServer | None = None
    sizes_note = ""
    try:
        prepared: dict[str, Prepared] = {}
        for backend in dict.fromkeys(s.backend for s in setups):
            database = None
            if backend == "postgresql":
                pg = PgServer(durable=True).start()
                database = pg.database()
            prepared[backend] = prep = prepare(work / backend, database, max(sizes), cipher, rng)
            print(f"{backend}: {prep.note}", flush=True)
        code = export_revision(args.baseline, work / "baseline") if args.baseline else None
        for setup in setups:
            db_pid = int((pg.data / "postmaster.pid").read_text().split()[0]) \
                if pg is not None and setup.backend == "postgresql" else None  # its backends are its children
            rows += measure(setup, prepared[setup.backend], sizes, nq, nc, cipher, rnd, code if setup.code else None,
                            db_pid)
        for backend in prepared:
            sizes = pg_table_sizes(prepared[backend].database or "") if backend == "postgresql" else \
                sqlite_table_sizes(work / backend / "coordinator.db")
            what = "pg_total_relation_size" if backend == "postgresql" else "SQLite dbstat pages"
            sizes_note += f"\n{backend} store at the end (rows, {what}, bytes per row): " + "; ".join(
                f"{t} {r} rows {b / 1024:.0f} KiB {b / r:.0f} B/row" for t, (r, b) in sizes.items() if r)
            mine = [r for r in rows if r["backend"] == backend and not r["code"]]
            if mine:
                best = max(mine, key=lambda r: r["n"])
                sizes_note += (f"\n\nStore scale model from the {backend} figures ({best['setup']}, N={best['n']}):\n\n"
                               + store_scale_model(sizes, best["q_cpu_server"], best["c_cpu_server"],
                                                 prepared[backend].log_peak) + "\n")
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"Federation coordinator under load: each setup is `continuum-mcp coordinator [--workers N --nginx]` "
          f"(uvicorn; SQLite WAL with synchronous=FULL, or PostgreSQL 15 with fsync on, a server started by the "
          f"benchmark) and one load-generator process (asyncio, one keep-alive HTTP/1.1 connection per client, every request "
          f"Ed25519-signed) on the same "
          f"machine, 127.0.0.1. Rate limit raised to {RATE_LIMIT:,} requests/min per identity (default 1,200); "
          f"--no-require-contribution (queries cost no credits); privacy mode open, min_contributors 3, codebook "
          f"{SLOTS} x {DIM}. Each client sends {nq} queries (16 padded slots) and then {nc} contributions "
          f"({PATTERNS_PER_CONTRIBUTION} patterns x {PHRASES_PER_PATTERN} phrases + statement), one request at a "
          f"time; all N clients at once.")
    if sizes_note:
        print(sizes_note.strip())
    print()
    print("| setup | concurrent clients | queries | query p50 | query p95 | queries/s | contributions | contribution p50 "
          "| contribution p95 | contributions/s | errors | server CPU per query / contribution | PostgreSQL CPU per "
          "query / contribution | load average |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setup']} | {r['n']} | {r['queries']} | {r['q_p50']:.1f} ms | {r['q_p95']:.1f} ms | "
              f"{r['q_rate']:.0f} | {r['contribs']} | {r['c_p50']:.0f} ms | {r['c_p95']:.0f} ms | {r['c_rate']:.1f} | "
              f"{r['errors']} | {r['q_cpu_server']:.2f} / {r['c_cpu_server']:.1f} ms | {db_cpu(r)} | {r['load']} |")
    print()
    print(f"Total time {time.perf_counter() - t_all:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
