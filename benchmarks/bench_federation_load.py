"""Load benchmark of the federation coordinator: N concurrent clients against one coordinator.

Setup (all on 127.0.0.1, one machine):
- ONE coordinator started as its own process with ``python -m continuum_mcp.cli.main coordinator``
  (so the load generator does not share its interpreter): privacy mode ``open``,
  ``min_contributors`` 3, the full 256 x 384 codebook layout, ``--no-require-contribution`` (queries
  cost no credits, so thousands of queries are not refused with 402 once the free tier is used up),
  and the per-identity rate limit RAISED from the default 1200 to 1,000,000 requests per minute
  (``--rate-limit``), so the benchmark measures the service and not its throttle.
- A release first: 5 seed members contribute patterns sharing 12 slots (built by
  ``federation.submission``), the round is closed with the admin route and each member takes part
  in the four secure-aggregation phases over HTTP exactly as the client does (``client.run_round``
  over a ``RoundParticipant`` and a ``CoordinatorAPI``), so queries below hit released patterns.
- Load: N admitted identities (each joined with its own admission token) run concurrently in one
  asyncio process with httpx; every request carries the real Ed25519 signature headers of
  ``Identity.sign_request`` (fresh nonce each time). Each client does a fixed number of
  ``POST /v1/query`` (the client's ``pad_with_decoys``: 4 wanted released slots padded to 16) and
  then a fixed number of ``POST /v1/contributions`` (``submission.build_contribution`` of 20
  patterns with 4 phrases and a statement each; bodies are built and encrypted before the clock
  starts, signed at send time).

Measured: query latency p50/p95 and queries per second; contributions (accepted submissions, HTTP
202) per second with latency p50/p95; errors (non-2xx by status, transport failures by type). The
load generator competes with the coordinator for the same 2 cores, so figures are conservative.

Usage:
    python benchmarks/bench_federation_load.py                    # N = 10, 50, 200
    python benchmarks/bench_federation_load.py --clients 10,50 --queries 20 --contributions 5
    python benchmarks/bench_federation_load.py --quick            # smoke test (N = 5, 10)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import subprocess
import sys
import tempfile
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
from continuum_mcp.errors import CoordinatorUnavailable
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.client import QUERY_TOP_SLOTS, pad_with_decoys, run_round
from continuum_mcp.federation.participant import RoundExpectations, RoundParticipant
from continuum_mcp.federation.protocol import JoinRequest, QueryRequest
from continuum_mcp.federation.submission import PlannedPattern, build_contribution, secagg_input
from continuum_mcp.privacy.modes import default_policy
from machine import machine  # benchmarks/machine.py (the script's folder is on sys.path)

FED = "fed-load-bench"
ADMIN = "load-bench-admin-token"
SLOTS, DIM = 256, 384
RATE_LIMIT = 1_000_000  # requests per minute per identity (the default is 1200)
SEED_MEMBERS = 12  # release v2's open mode needs about 8-10 distinct contributors per phrase
SHARED_SLOTS = list(range(12))
PATTERNS_PER_CONTRIBUTION = 20
PHRASES_PER_PATTERN = 4


def rss_mb(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return f"{int(line.split()[1]) / 1024:.0f} MB"
    except OSError:
        pass
    return "?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def start_coordinator(storage: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "continuum_mcp.cli.main", "coordinator", "--host", "127.0.0.1", "--port", str(port),
           "--storage", str(storage), "--min-contributors", "3", "--privacy-mode", "open",
           "--no-require-contribution", "--federation-id", FED, "--admin-token", ADMIN,
           "--rate-limit", str(RATE_LIMIT), "--phase-timeout", "120", "--slots", str(SLOTS), "--dim", str(DIM),
           "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"the coordinator exited with {proc.returncode}: {err[-2000:]}")
        try:
            with CoordinatorAPI(f"http://127.0.0.1:{port}", None, timeout_seconds=1, max_retries=0) as probe:
                probe.health()
            return proc
        except CoordinatorUnavailable:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the coordinator did not answer /v1/health within 60 s")


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


async def _send(http: httpx.AsyncClient, url: str, ident: Identity, method: str, path: str, body: bytes,
                expect: int, stats: Stats) -> None:
    headers = ident.sign_request(method, path, body)
    headers["content-type"] = "application/json"
    t = time.perf_counter()
    try:
        r = await http.request(method, url + path, content=body, headers=headers)
    except httpx.TransportError as exc:
        stats.errors[f"transport {type(exc).__name__}"] += 1
        return
    stats.latencies.append(time.perf_counter() - t)
    if r.status_code == expect:
        stats.ok += 1
    else:
        stats.errors[f"HTTP {r.status_code}"] += 1


async def run_phase(url: str, jobs: Sequence[tuple[Identity, list[bytes]]], method: str, path: str,
                    expect: int) -> Stats:
    """All clients at once; each sends its own requests one after the other."""
    stats = Stats()
    limits = httpx.Limits(max_connections=len(jobs) + 4, max_keepalive_connections=len(jobs) + 4)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        async def client(ident: Identity, bodies: list[bytes]) -> None:
            for body in bodies:
                await _send(http, url, ident, method, path, body, expect, stats)

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


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="10,50,200", help="concurrent clients per run, comma-separated")
    ap.add_argument("--queries", type=int, default=10, help="queries per client")
    ap.add_argument("--contributions", type=int, default=3, help="contributions per client")
    ap.add_argument("--quick", action="store_true", help="N = 5, 10; 3 queries and 1 contribution per client")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    if args.quick:
        sizes, nq, nc = [5, 10], 3, 1
    else:
        sizes, nq, nc = [int(x) for x in args.clients.split(",") if x.strip()], args.queries, args.contributions
    t_all = time.perf_counter()
    rnd = random.Random(args.seed)
    rng = np.random.default_rng(args.seed)
    cipher = FederationCipher(generate_federation_key(), FED)
    print(f"Machine: {machine()}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="fed-load-"))
    port = free_port()
    proc = start_coordinator(work / "coord", port)
    url = f"http://127.0.0.1:{port}"
    admin = CoordinatorAPI(url, None, admin_token=ADMIN, timeout_seconds=120)
    rows: list[dict[str, Any]] = []
    try:
        t = time.perf_counter()
        seed, n_released = seed_release(url, admin, cipher, rng)
        slots = seed.slots()
        released = sorted(s.slot for s in slots.slots if s.released_at_round >= 0)
        print(f"Seed release: {SEED_MEMBERS} members, real secure aggregation over HTTP, {n_released} patterns "
              f"released ({len(released)} released slots) in {time.perf_counter() - t:.1f} s", flush=True)

        n_max = max(sizes)
        t = time.perf_counter()
        idents: list[Identity] = []
        for tok in tokens(admin, n_max):
            with member(url, tok, "extensive") as api:
                assert api.identity is not None
                idents.append(api.identity)
        print(f"{n_max} load identities joined (sequentially) in {time.perf_counter() - t:.1f} s", flush=True)
        round_id = seed.round_current().round_id

        for n in sizes:
            group = idents[:n]
            q_jobs = [(i, [query_body(released, rnd) for _ in range(nq)]) for i in group]
            qs = asyncio.run(run_phase(url, q_jobs, "POST", "/v1/query", 200))
            c_jobs = [(i, [contribution_body(cipher, round_id, rnd) for _ in range(nc)]) for i in group]
            cs = asyncio.run(run_phase(url, c_jobs, "POST", "/v1/contributions", 202))
            row = {
                "n": n, "queries": n * nq, "q_p50": pct(qs.latencies, 0.5) * 1000, "q_p95": pct(qs.latencies, 0.95) * 1000,
                "q_rate": qs.ok / qs.wall if qs.wall else 0.0, "contribs": n * nc,
                "c_p50": pct(cs.latencies, 0.5) * 1000, "c_p95": pct(cs.latencies, 0.95) * 1000,
                "c_rate": cs.ok / cs.wall if cs.wall else 0.0, "errors": fmt_errors(qs, cs),
                "q_ok": qs.ok, "c_ok": cs.ok,
            }
            rows.append(row)
            print(f"  N={n}: queries {qs.ok}/{n * nq} ok, p50 {row['q_p50']:.1f} ms, p95 {row['q_p95']:.1f} ms, "
                  f"{row['q_rate']:.0f}/s; contributions {cs.ok}/{n * nc} ok, {row['c_rate']:.1f}/s; "
                  f"errors {row['errors']}", flush=True)
        rss = rss_mb(proc.pid)
    finally:
        admin.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"Federation coordinator under load: one coordinator process (`python -m continuum_mcp.cli.main coordinator`, "
          f"uvicorn, SQLite WAL, synchronous=FULL) and one load-generator process (asyncio + httpx, every request "
          f"Ed25519-signed) on the same machine, 127.0.0.1. Rate limit raised to {RATE_LIMIT:,} requests/min per "
          f"identity (default 1,200); --no-require-contribution (queries cost no credits); privacy mode open, "
          f"min_contributors 3, codebook {SLOTS} x {DIM}. Each client sends {nq} queries (16 padded slots) and then "
          f"{nc} contributions ({PATTERNS_PER_CONTRIBUTION} patterns x {PHRASES_PER_PATTERN} phrases + statement), "
          f"one request at a time; all N clients at once. Coordinator RSS at the end: {rss}.")
    print()
    print("| concurrent clients | queries | query p50 | query p95 | queries/s | contributions | contribution p50 "
          "| contribution p95 | contributions/s | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['queries']} | {r['q_p50']:.1f} ms | {r['q_p95']:.1f} ms | {r['q_rate']:.0f} | "
              f"{r['contribs']} | {r['c_p50']:.0f} ms | {r['c_p95']:.0f} ms | {r['c_rate']:.1f} | {r['errors']} |")
    print()
    print(f"Total time {time.perf_counter() - t_all:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
