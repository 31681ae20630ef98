"""Performance of the local memory engine on this machine.

Prints, with the machine named (CPU model, cores, RAM):
1. time from spawning ``continuum-mcp serve`` over stdio (via the ``mcp`` client) to the answer of
   ``tools/list`` (target < 1 s: it must not wait for the model) and to the first ``remember``
   answer (which does wait for the model), median of several runs, fresh data dir each run;
2. ``remember`` throughput, one call per memory and ``remember_many`` in batches (memories/s),
   with the real embedding model and de-duplication on, as a user gets it;
3. ``recall`` latency p50/p95 per mode at each store size, each call embedding its query text for
   real (target: semantic/hybrid p50 < 20 ms at 10k);
4. peak RSS of this process and of the spawned servers.

Texts are realistic and varied: every LoCoMo dialogue turn (``../shared/eval/locomo10.json``)
followed by templated personal-memory sentences from a seeded generator; queries are the LoCoMo
questions. Filling the big stores goes through ``remember_many`` in batches with real embeddings
by default; ``--fill precomputed`` embeds the texts with the same model first and passes the
vectors to ``remember_many(items, vectors=...)`` (same vectors, so recall measures the same
thing; the fill rate printed then excludes embedding).

Run:  .venv/bin/python benchmarks/bench_memory.py                 (sizes 10000,100000)
      .venv/bin/python benchmarks/bench_memory.py --quick         (smoke: size 1000, few runs)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from machine import machine  # benchmarks/machine.py (the script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
LOCOMO = ROOT.parent / "shared" / "eval" / "locomo10.json"
MODES = ("semantic", "keyword", "hybrid")


# --------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------
def load() -> str:
    """The 1-minute load average: figures taken on a busy machine are not comparable."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / (1024 ** 2 if sys.platform == "darwin" else 1024)


# --------------------------------------------------------------------------------------------
# Realistic, varied texts
# --------------------------------------------------------------------------------------------
NAMES = ["Alice", "Bob", "Carmen", "Deepak", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam",
         "Mei", "Nadia", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Uma", "Victor", "Wen", "Yusuf", "Zoe"]
RELATIONS = ["sister", "brother", "manager", "landlord", "dentist", "neighbour", "cousin", "colleague", "coach",
             "daughter", "son", "partner", "accountant", "mentor", "flatmate"]
PLACES = ["Lisbon", "Osaka", "Toronto", "Nairobi", "Oslo", "Lyon", "Austin", "Porto", "Krakow", "Seoul", "Lima",
          "Dublin", "Hanoi", "Zurich", "Cape Town", "Bologna", "Tbilisi", "Montreal", "Perth", "Valencia"]
FOODS = ["peanuts", "shellfish", "gluten", "lactose", "sesame", "kiwi", "eggs", "soy", "mustard", "celery"]
DRINKS = ["green tea", "espresso", "oat-milk latte", "sparkling water", "rooibos", "cold brew", "chai", "matcha"]
HOBBIES = ["bouldering", "sourdough baking", "birdwatching", "chess", "salsa dancing", "woodworking",
           "trail running", "watercolour painting", "film photography", "kayaking", "pottery", "astronomy"]
PROJECTS = ["Atlas", "Beacon", "Cobalt", "Driftwood", "Ember", "Falcon", "Granite", "Harbor", "Iris", "Juniper",
            "Kestrel", "Lumen", "Mosaic", "Nimbus", "Orchid", "Pioneer"]
COMPONENTS = ["billing service", "login page", "search API", "mobile app", "data pipeline", "admin dashboard",
              "onboarding flow", "notification system", "export job", "payment webhook"]
TECH = ["PostgreSQL", "SQLite", "Redis", "Kafka", "FastAPI", "React", "Rust", "Go", "Terraform", "Kubernetes",
        "GraphQL", "gRPC", "DuckDB", "Svelte"]
REASONS = ["it is simpler to operate", "the team already knows it", "latency matters most here",
           "licensing is cleaner", "it scales better for writes", "the old one kept timing out",
           "we need strong consistency", "it costs less to host"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
ITEMS = ["a standing desk", "running shoes", "a espresso grinder", "noise-cancelling headphones", "a road bike",
         "a tent", "a mechanical keyboard", "winter boots", "a rice cooker", "a drawing tablet"]
TEMPLATES = [
    "{name}'s {relation} lives in {place} and is allergic to {food}.",
    "I prefer {drink} in the morning and {drink2} after {hour} pm.",
    "Meeting with {name} about project {project} moved to {weekday} {day} {month} at {hour}:{minute}.",
    "For the {project} {component} we chose {tech} because {reason}.",
    "My {relation} {name} took up {hobby} after moving to {place} in {year}.",
    "The {project} {component} deadline is {day} {month} {year}; {name} owns the rollout.",
    "Bought {item} in {place} for {price} euros on {weekday}.",
    "{name} recommended a {hobby} club near {place}; it meets every {weekday} at {hour}.",
    "Remember to call {name} ({relation}) about the {component} invoice #{num}.",
    "Flight to {place} on {day} {month}, seat {seat}, booking reference {ref}.",
    "{name} said the {component} bug #{num} only happens with {tech} {version}.",
    "Do not schedule anything on {weekday} mornings: {hobby} with {name} until {hour}.",
    "Gift idea for {name}: {item}, budget about {price} euros, birthday on {day} {month}.",
    "The wifi password at the {place} office changed to {ref}{num}.",
    "{name} is vegetarian and avoids {food}; book the {place} restaurant for {people} people.",
]


def template_texts(seed: int) -> Iterator[str]:
    """An endless stream of distinct personal-memory sentences (seeded, reproducible)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    while True:
        tpl = rng.choice(TEMPLATES)
        text = tpl.format(
            name=rng.choice(NAMES), relation=rng.choice(RELATIONS), place=rng.choice(PLACES),
            food=rng.choice(FOODS), drink=rng.choice(DRINKS), drink2=rng.choice(DRINKS),
            hobby=rng.choice(HOBBIES), project=rng.choice(PROJECTS), component=rng.choice(COMPONENTS),
            tech=rng.choice(TECH), reason=rng.choice(REASONS), weekday=rng.choice(WEEKDAYS),
            month=rng.choice(MONTHS), item=rng.choice(ITEMS), day=rng.randint(1, 28), year=rng.randint(2015, 2026),
            hour=rng.randint(1, 12), minute=f"{rng.randrange(0, 60, 5):02d}", price=rng.randint(5, 2500),
            num=rng.randint(100, 99999), seat=f"{rng.randint(1, 40)}{rng.choice('ABCDEF')}",
            ref="".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6)),
            version=f"{rng.randint(1, 17)}.{rng.randint(0, 20)}", people=rng.randint(2, 12))
        if text not in seen:
            seen.add(text)
            yield text


def locomo() -> tuple[list[str], list[str]]:
    """(every LoCoMo turn as '[date] Speaker: text', every LoCoMo question) — or empty lists."""
    if not LOCOMO.is_file():
        return [], []
    turns: list[str] = []
    questions: list[str] = []
    for sample in json.loads(LOCOMO.read_text()):
        conv = sample["conversation"]
        for key, value in conv.items():
            if key.startswith("session_") and isinstance(value, list):
                day = str(conv.get(f"{key}_date_time", "")).split(" on ")[-1]
                turns += [f"[{day}] {t['speaker']}: {t['text']}" for t in value]
        questions += [str(q["question"]) for q in sample["qa"]]
    return list(dict.fromkeys(turns)), list(dict.fromkeys(questions))


def text_stream(turns: list[str], seed: int = 7) -> Iterator[str]:
    """LoCoMo turns first (real chat), then templated memories, never repeating a text."""
    return itertools.chain(turns, template_texts(seed))


# --------------------------------------------------------------------------------------------
# 1. Server start-up over stdio
# --------------------------------------------------------------------------------------------
#: The reference: the smallest MCPServer there is (one tool), spawned the same way over stdio.
ONE_TOOL_SERVER = """\
from mcp.server.mcpserver import MCPServer
server = MCPServer("one-tool")
@server.tool()
def echo(text: str) -> str:
    return text
server.run("stdio")
"""


async def _one_startup(data_dir: Path | None) -> tuple[float, float, int]:
    """Seconds from spawning a server to the tools/list answer and (ours only) to the first remember
    answer; ``data_dir=None`` spawns the one-tool reference server instead."""
    from mcp import Client, StdioServerParameters

    args = (["-m", "continuum_mcp.cli.main", "serve", "--data-dir", str(data_dir)] if data_dir is not None
            else ["-c", ONE_TOOL_SERVER])
    params = StdioServerParameters(command=sys.executable, args=args)
    t0 = time.perf_counter()
    async with Client(params) as client:
        tools = await client.list_tools()
        t_list = time.perf_counter() - t0
        if data_dir is None:
            return t_list, float("nan"), len(tools.tools)
        result = await client.call_tool("remember", {"text": "The benchmark started the server once more."})
        t_remember = time.perf_counter() - t0
        if result.is_error:
            raise RuntimeError(f"remember failed: {result.content}")
    return t_list, t_remember, len(tools.tools)


def import_seconds(module: str, runs: int) -> float:
    """Median wall time of a fresh interpreter importing ``module``: the floor under start-up."""
    import subprocess

    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_startup(runs: int) -> dict[str, Any]:
    """Ours and the one-tool reference, interleaved run by run so that machine load hits both alike."""
    lists, remembers, refs, ntools = [], [], [], 0
    for _ in range(runs):
        refs.append(asyncio.run(_one_startup(None))[0])
        with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
            t_list, t_rem, ntools = asyncio.run(_one_startup(Path(tmp)))
        lists.append(t_list)
        remembers.append(t_rem)
    imports = {m: import_seconds(m, runs) for m in ("continuum_mcp.cli.main", "continuum_mcp.server")}
    return {"runs": runs, "tools": ntools, "imports": imports, "list_median": statistics.median(lists), "list_all": lists,
            "ref_median": statistics.median(refs), "ref_all": refs,
            "ratio": statistics.median(lists) / statistics.median(refs),
            "remember_median": statistics.median(remembers), "remember_all": remembers,
            "server_peak_rss": rss_mib(resource.RUSAGE_CHILDREN)}


def print_startup(st: dict[str, Any]) -> None:
    print(f"Start-up over stdio ({st['runs']} runs each, interleaved, fresh data dir): tools/list "
          f"{st['list_median'] * 1000:.0f} ms median {[round(x * 1000) for x in st['list_all']]}; one-tool MCPServer "
          f"{st['ref_median'] * 1000:.0f} ms median {[round(x * 1000) for x in st['ref_all']]}; ratio "
          f"{st['ratio']:.2f}x (target <= 1.2x); first remember {st['remember_median'] * 1000:.0f} ms median "
          f"({st['tools']} tools); fresh-interpreter import "
          + ", ".join(f"{m} {v * 1000:.0f} ms" for m, v in st["imports"].items()), flush=True)


# --------------------------------------------------------------------------------------------
# 2-3. In-process store: throughput and recall latency
# --------------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_throughput(store: Any, texts: Iterator[str], single: int, batched: int, batch: int) -> dict[str, Any]:
    """Memories per second through remember() one by one and remember_many() in batches."""
    from continuum_mcp.memory.store import MemoryInput

    created = 0
    t0 = time.perf_counter()
    for _ in range(single):
        created += store.remember(next(texts), tags=["bench"], source="bench").status in ("created", "updated")
    single_rate = single / (time.perf_counter() - t0) if single else float("nan")
    single_created = created
    created = 0
    t0 = time.perf_counter()
    done = 0
    while done < batched:
        n = min(batch, batched - done)
        items = [MemoryInput(text=next(texts), tags=["bench"], source="bench") for _ in range(n)]
        created += sum(r.status in ("created", "updated") for r in store.remember_many(items))
        done += n
    batch_rate = batched / (time.perf_counter() - t0) if batched else float("nan")
    return {"single": single, "single_rate": single_rate, "single_created": single_created,
            "batched": batched, "batch": batch, "batch_rate": batch_rate, "batch_created": created}


class Texts:
    """The text stream, counting how many texts it has handed out (the position of the next one)."""

    def __init__(self, stream: Iterator[str], pos: int = 0) -> None:
        self.stream, self.pos = stream, 0
        for _ in range(pos):
            next(self)

    def __iter__(self) -> "Texts":
        return self

    def __next__(self) -> str:
        self.pos += 1
        return next(self.stream)


CACHE = Path(os.environ.get("CONTINUUM_BENCH_CACHE", "/tmp/continuum-bench-cache"))
SYNTHETIC_NOISE = 0.05  # per dimension: a synthetic vector sits at cosine ~0.7 of the real one it comes from


class Vectors:
    """Pre-computed vectors for the fill: the real embedding of each LoCoMo turn (computed once and
    cached under ``CACHE``), then, past the turns, synthetic ones: a real turn vector chosen by the
    text's position plus Gaussian noise, normalised. Synthetic vectors keep the clustering of real
    ones (an IVF index sees realistic cells) without embedding hundreds of thousands of texts on a
    shared CPU; their texts are real (templated) sentences, so FTS5 indexes real text."""

    def __init__(self, embedder: Any, turns: list[str]) -> None:
        import hashlib

        key = hashlib.sha256((embedder.model_id + "\n" + "\n".join(turns)).encode()).hexdigest()[:16]
        path = CACHE / f"turn-vectors-{key}.npy"
        if path.is_file():
            self.real = np.load(path)
        else:
            self.real = np.concatenate([embedder.encode(turns[i:i + 512]) for i in range(0, len(turns), 512)]) \
                if turns else np.zeros((0, embedder.dim), dtype=np.float32)
            CACHE.mkdir(parents=True, exist_ok=True)
            np.save(path, self.real)
        self.embedder = embedder

    def __call__(self, texts: list[str], pos: int) -> np.ndarray:
        """Vectors of ``texts``, the texts at positions ``pos``, ``pos + 1``, ... of the stream."""
        n_real, dim = self.real.shape
        real = max(0, min(len(texts), n_real - pos))
        out = np.zeros((len(texts), dim), dtype=np.float32)
        out[:real] = self.real[pos:pos + real]
        m = len(texts) - real
        if m:  # seeded by position: the same stream gives the same vectors
            rng = np.random.default_rng(pos + real)
            v = self.real[rng.integers(n_real, size=m)] + rng.normal(0, SYNTHETIC_NOISE, (m, dim)).astype(np.float32)
            out[real:] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out


def fill(store: Any, texts: Texts, target: int, batch: int, vectors: Any | None, near: bool = True) -> dict[str, Any]:
    """Grow the store to ``target`` memories; returns the rate (wall and per CPU second of this
    process, which a busy machine slows less) and how many texts were folded as duplicates."""
    from continuum_mcp.memory.store import MemoryInput

    count = store.stats().count
    offered = folded = 0
    spent = cpu = 0.0
    last_report = time.perf_counter()
    while count < target:
        n = min(batch, target - count)
        pos = texts.pos
        chunk = [next(texts) for _ in range(n)]
        items = [MemoryInput(text=t, tags=[f"t{(count + i) % 20}"], source="bench") for i, t in enumerate(chunk)]
        vecs = vectors(chunk, pos) if vectors is not None else None
        t0, c0 = time.perf_counter(), time.process_time()
        results = store.remember_many(items, vectors=vecs, near=near)
        spent += time.perf_counter() - t0
        cpu += time.process_time() - c0
        made = sum(r.status in ("created", "updated") for r in results)
        count += made
        offered += n
        folded += n - made
        if time.perf_counter() - last_report > 30:
            print(f"  filling: {count}/{target} ({offered / spent:.0f}/s; load {load()})", file=sys.stderr, flush=True)
            last_report = time.perf_counter()
    return {"count": count, "offered": offered, "folded": folded, "rate": offered / spent if spent else float("nan"),
            "cpu_rate": offered / cpu if cpu else float("nan"), "seconds": spent}


def bench_recall(store: Any, queries: list[str], n: int, k: int) -> dict[str, tuple[float, float, float]]:
    """p50, p95 and mean latency (ms) of recall per mode, query embedding included; 'floor' is the
    physical floor of semantic recall (encode the query + one FAISS search, nothing else). The
    modes are interleaved query by query, so a burst of load on the machine hits all of them
    alike and the ratios compare like with like."""
    from continuum_mcp.memory.vector_index import single_threaded

    index = store._vectors()

    def floor(q: str) -> Any:
        with single_threaded():  # as the store encodes one query: one thread (see single_threaded)
            vec = store.embedder.encode([q])[0]
        return index.search(vec, k)

    runs: dict[str, Any] = {"floor": floor}
    runs.update({m: (lambda q, m=m: store.recall(q, k=k, mode=m)) for m in MODES})
    for q in queries[:5]:  # warm-up: caches, first FAISS/FTS calls
        for run in runs.values():
            run(q)
    lat: dict[str, list[float]] = {name: [] for name in runs}
    for q in itertools.islice(itertools.cycle(queries[5:]), n):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run(q)
            lat[name].append((time.perf_counter() - t0) * 1000)
    return {name: (pct(v, 50), pct(v, 95), statistics.fmean(v)) for name, v in lat.items()}


FILL_LABEL = {"embed": "remember_many, real embeddings",
              "precomputed": "remember_many with pre-computed embeddings of the same texts",
              "synthetic": "remember_many with pre-computed vectors: real embeddings of the LoCoMo turns, synthetic "
                           "ones (a turn vector + noise) past them"}


def exact_top(store: Any, qvecs: np.ndarray, k: int) -> list[list[int]]:
    """Exact top-k ids of each query over every stored embedding (read from SQLite in pages)."""
    best = [np.zeros((0,), dtype=np.float32)] * len(qvecs)
    ids_best = [np.zeros((0,), dtype=np.int64)] * len(qvecs)
    last = 0
    while True:
        rows = store._conn.execute("SELECT id, embedding FROM memories WHERE id > ? ORDER BY id LIMIT 100000",
                                   (last,)).fetchall()
        if not rows:
            break
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        sims = qvecs @ vecs.T
        for i in range(len(qvecs)):
            top = np.argpartition(-sims[i], k - 1)[:k]
            s_all = np.concatenate([best[i], sims[i][top]])
            i_all = np.concatenate([ids_best[i], ids[top]])
            keep = np.argsort(-s_all)[:k]
            best[i], ids_best[i] = s_all[keep], i_all[keep]
        last = int(ids[-1])
    return [list(map(int, x)) for x in ids_best]


def bench_million(embedder: Any, turns: list[str], queries: list[str], args: Any, vectors: Vectors) -> int:
    """The 1,000,000-memory run: built once into ``CACHE`` (reused while its texts stay the same),
    then recall latency per mode, the approximate index's recall@10 against exact search, a delete,
    and the peak RSS."""
    from continuum_mcp.config import Settings
    from continuum_mcp.memory.store import MemoryStore

    size = args.million_size
    data = CACHE / f"million-{size}"
    state = data / "bench-state.json"
    print(f"Machine: {machine()}; load average {load()}; store {data}", flush=True)
    store = MemoryStore(Settings(data_dir=data), embedder)
    try:
        t0 = time.perf_counter()
        index = store._vectors()
        opened = time.perf_counter() - t0
        # Where the text stream stands: saved after each run; after an interrupted build, the
        # count (the stream never repeats a text and the build folds nothing else).
        pos = max(json.loads(state.read_text())["pos"] if state.is_file() else 0, store.stats().count)
        texts = Texts(text_stream(turns), pos)
        built = store.stats().count < size
        # Built without the near-duplicate probe (exact repeats still fold): the 1M run measures
        # recall; the fill rate with de-duplication on is the 100k figure.
        fl = fill(store, texts, size, 1000, vectors, near=False) if built else None
        state.write_text(json.dumps({"pos": texts.pos}))
        index = store._vectors()
        if fl:
            print(f"built {fl['count']:,} memories in {fl['seconds']:.0f} s ({fl['rate']:.0f}/s, "
                  f"{fl['cpu_rate']:.0f} per CPU-second; load {load()})", flush=True)
        else:
            print(f"reused the cached store: opened and index loaded in {opened:.1f} s", flush=True)
        kind, count = index.kind, index.count
        print(f"index {kind}, {count:,} vectors" + (f", {index.index.nlist} cells, nprobe {index.index.nprobe}"
                                                    if kind == "ivf" else ""), flush=True)
        qvecs = embedder.encode(queries[:200])
        exact = exact_top(store, qvecs, 10)
        found = [len(set(h for h, _ in index.search(q, 10)) & set(e)) / 10 for q, e in zip(qvecs, exact)]
        recall10 = statistics.fmean(found)
        print(f"approximate index recall@10 against exact search: {recall10:.3f} ({len(found)} LoCoMo questions)",
              flush=True)
        lat = bench_recall(store, queries, args.queries, args.k)
        # Delete: the top hit of a query leaves the index (and every mode's answers).
        victim = index.search(qvecs[0], 1)[0][0]
        store.forget([victim])
        index = store._vectors()
        gone = victim not in [h for h, _ in index.search(qvecs[0], 50)] and index.count == count - 1 and \
            all(victim not in [h.memory.id for h in store.recall(queries[0], k=10, mode=m).hits] for m in MODES)
        print(f"delete of memory {victim}: vector gone from the index and every mode: {gone}", flush=True)
    finally:
        store.close()
    peak = rss_mib()
    print("\n## 1M results\n")
    print(f"Machine: {machine()}; load average {load()} at end. {count:,} memories: texts are the LoCoMo turns, then "
          f"templated sentences (real text in FTS5); vectors {FILL_LABEL['synthetic'].split(': ', 1)[1]}. "
          f"Index {kind}. k={args.k}, {args.queries} LoCoMo questions per mode, query embedding included.\n")
    print("| measure at 1M | value |")
    print("|---|---|")
    if fl and fl["offered"] >= 10_000:  # not a top-up after the previous run's delete
        print(f"| build (remember_many, batches of 1,000, near-duplicate probe off) | {fl['rate']:.0f} memories/s |")
    print(f"| approximate index recall@10 against exact search | {recall10:.3f} |")
    for mode in ("floor",) + MODES:
        p50, p95, _ = lat[mode]
        name = "encode + search alone" if mode == "floor" else f"recall `{mode}`"
        print(f"| {name} p50 / p95 | {p50:.1f} / {p95:.1f} ms |")
    print(f"| delete removes the vector | {'yes' if gone else 'NO'} |")
    print(f"| peak RSS, benchmark process | {peak:.0f} MiB |")
    return 0


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated store sizes for recall latency")
    ap.add_argument("--quick", action="store_true", help="smoke run: size 500, 1 start-up, few queries")
    ap.add_argument("--startup-runs", type=int, default=10, help="spawns of each server for the start-up medians")
    ap.add_argument("--startup-only", action="store_true", help="measure the start-up (section 1) and stop")
    ap.add_argument("--queries", type=int, default=300, help="timed recall calls per mode and size")
    ap.add_argument("--k", type=int, default=10, help="results per recall")
    ap.add_argument("--batch", type=int, default=256, help="remember_many batch size")
    ap.add_argument("--fill", choices=("embed", "precomputed", "synthetic"), default="embed",
                    help="how to fill the big stores (see the module docstring)")
    ap.add_argument("--no-startup", action="store_true", help="skip the start-up measurement (section 1)")
    ap.add_argument("--no-throughput", action="store_true", help="skip the remember throughput (section 2)")
    ap.add_argument("--million", action="store_true",
                    help="only the 1,000,000-memory run (store built once under $CONTINUUM_BENCH_CACHE, reused)")
    ap.add_argument("--million-size", type=int, default=1_000_000, help="size of the --million store")
    args = ap.parse_args(argv)
    if args.quick:
        sizes, args.startup_runs, args.queries, single, batched = [500], 1, 20, 20, 256
        if "--sizes" in (argv if argv is not None else sys.argv[1:]):
            sizes = [int(s) for s in args.sizes.split(",") if s]
    else:
        sizes, single, batched = [int(s) for s in args.sizes.split(",") if s], 300, 4096
    sizes = sorted(sizes)

    print(f"Machine: {machine()}; load average {load()}", flush=True)
    load_start = load()

    # 1. First, before this process loads the model, so the server has the CPU to itself.
    st = None if args.no_startup or args.million else bench_startup(args.startup_runs)
    if st is not None:
        print_startup(st)
    if args.startup_only:
        return 0

    from continuum_mcp.config import Settings
    from continuum_mcp.memory.store import MemoryStore
    from embeddings import SentenceTransformerEmbedder

    t0 = time.perf_counter()
    embedder = SentenceTransformerEmbedder()
    embedder.wait()
    load_s = time.perf_counter() - t0
    turns, questions = locomo()
    queries = questions or [f"What did {n} say about {p}?" for n in NAMES for p in PROJECTS]
    texts = Texts(text_stream(turns))
    vectors = None if args.fill == "embed" else Vectors(embedder, turns) if args.fill == "synthetic" \
        else (lambda chunk, pos: embedder.encode(chunk))
    if args.million:
        return bench_million(embedder, turns, queries, args, Vectors(embedder, turns))

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        store = MemoryStore(Settings(data_dir=Path(tmp)), embedder)
        try:
            # 2. Throughput on a fresh store.
            tp = bench_throughput(store, texts, 0 if args.no_throughput else single,
                                  0 if args.no_throughput else batched, args.batch)
            print(f"remember: one by one {tp['single_rate']:.0f}/s ({tp['single']} calls), remember_many "
                  f"{tp['batch_rate']:.0f}/s ({tp['batched']} in batches of {tp['batch']}); "
                  f"model load {load_s:.1f} s", flush=True)
            # 3. Recall latency at each size.
            rows: list[tuple[int, dict[str, Any], dict[str, tuple[float, float, float]], str]] = []
            for size in sizes:
                fl = fill(store, texts, size, args.batch, vectors)
                lat = bench_recall(store, queries, args.queries, args.k)
                kind = store.stats().index_kind
                rows.append((size, fl, lat, kind))
                print(f"size {fl['count']}: fill {fl['rate']:.0f}/s ({fl['cpu_rate']:.0f} per CPU-second; "
                      f"{fl['folded']} near-/exact duplicates folded; load {load()}), "
                      f"index {kind}; " + "; ".join(f"{m} p50 {v[0]:.1f} ms p95 {v[1]:.1f} ms" for m, v in lat.items())
                      + f"; semantic/floor {lat['semantic'][0] / lat['floor'][0]:.2f}x, hybrid/semantic "
                      f"{lat['hybrid'][0] / lat['semantic'][0]:.2f}x",
                      flush=True)
        finally:
            store.close()
    peak = rss_mib()

    print("\n## Benchmark results\n")
    import torch

    print(f"Machine: {machine()}; 1-min load average {load_start} at start, {load()} at end "
          f"(other work on the machine slows every figure). Model: {embedder.model_id} on CPU, "
          f"{torch.get_num_threads()} torch thread(s). "
          f"Fill: {FILL_LABEL[args.fill]}, "
          f"batches of {args.batch}, de-duplication on (threshold 0.95). Recall: k={args.k}, {args.queries} LoCoMo "
          f"questions per mode and size, query embedding included.\n")
    print("| measure | value |")
    print("|---|---|")
    if st is not None:
        print(f"| start-up to `tools/list` answer (stdio, median of {st['runs']}) | {st['list_median'] * 1000:.0f} ms |")
        print(f"| same for a one-tool `MCPServer`, interleaved; ratio (target <= 1.2x) | {st['ref_median'] * 1000:.0f} "
              f"ms; {st['ratio']:.2f}x |")
        print(f"| start-up to first `remember` answer (model load included) | {st['remember_median'] * 1000:.0f} ms |")
        for mod, sec in st["imports"].items():
            print(f"| for comparison: a fresh interpreter importing `{mod}` | {sec * 1000:.0f} ms |")
    print(f"| `remember` one by one | {tp['single_rate']:.0f} memories/s |")
    print(f"| `remember_many`, batches of {tp['batch']} | {tp['batch_rate']:.0f} memories/s |")
    for size, fl, lat, kind in rows:
        print(f"| fill rate up to {size:,} memories ({args.fill}) | {fl['rate']:.0f} memories/s "
              f"({fl['cpu_rate']:.0f} per CPU-second) |")
        for mode in MODES:
            p50, p95, _ = lat[mode]
            print(f"| recall `{mode}` at {size:,} ({kind}) p50 / p95 | {p50:.1f} / {p95:.1f} ms |")
        floor, sem, hyb = lat["floor"][0], lat["semantic"][0], lat["hybrid"][0]
        print(f"| at {size:,}: encode + search alone p50; semantic / that; hybrid / semantic | "
              f"{floor:.1f} ms; {sem / floor:.2f}x; {hyb / sem:.2f}x |")
    print(f"| peak RSS, benchmark process (model + {sizes[-1]:,} memories) | {peak:.0f} MiB |")
    if st is not None:
        print(f"| peak RSS, `continuum-mcp serve` after first remember | {st['server_peak_rss']:.0f} MiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
