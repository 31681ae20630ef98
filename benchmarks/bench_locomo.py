"""LoCoMo retrieval benchmark for the memory store (protocol: ``../shared/eval/README.md``).

For each of the 10 LoCoMo conversations a fresh store is filled with one memory per dialogue
turn (``"[8 May, 2023] Caroline: ..."``), then every question of categories 1-4 that names
evidence turns is asked through :meth:`MemoryStore.recall` in each mode, and we score whether the
evidence turns come back: Recall@5, Recall@10, hit@10 and nDCG@10, per category (by number, as
the official ``task_eval/evaluation.py`` numbers them) and overall.

Why ``dedup_threshold=1.0``: the store folds only true restatements (same facts, cosine >= 0.95)
and links updates; a benchmark must keep every turn unlinked, so only exact duplicates by content
hash (which the store always folds) share a memory. Each dia_id maps to the memory id that
``remember_many`` returned for it, so a folded turn still counts as found when its twin is
retrieved. Each turn carries its session's time (``created_at``), as ``remember(at=...)`` allows.

After LoCoMo it runs the assistant-memory check (``tests/memory/fixtures/assistant_recall.json``:
paraphrased questions about assistant-style facts), where keyword matching helps far less; with
``--cv`` it cross-validates the fusion weight over conversations (choose on half, report on the
other half).

Run:  .venv/bin/python benchmarks/bench_locomo.py            (all 10 conversations)
      .venv/bin/python benchmarks/bench_locomo.py --cv       (and the 2-fold cross-validation)
      .venv/bin/python benchmarks/bench_locomo.py --quick    (first conversation only)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from machine import machine  # benchmarks/machine.py (the script's folder is on sys.path)

from continuum_mcp.config import Settings
from continuum_mcp.memory import search
from continuum_mcp.memory.models import SearchMode
from continuum_mcp.memory.store import MemoryInput, MemoryStore
from embeddings import Embedder, SentenceTransformerEmbedder

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "eval" / "locomo10.json"
ASSISTANT_SET = ROOT / "tests" / "memory" / "fixtures" / "assistant_recall.json"
MODES: tuple[SearchMode, ...] = ("semantic", "keyword", "hybrid")
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
# Published plain all-MiniLM-L6-v2 dense retrieval on LoCoMo (MTEB task): nDCG@10, Recall@10.
# Copied from ../shared/eval/README.md so the table can sit next to it; never used in scoring.
REFERENCE = {1: (0.209, 0.290), 2: (0.359, 0.515), 3: (0.179, 0.311), 4: (0.360, 0.539)}
_EVIDENCE_RE = re.compile(r"D:?(\d+):(\d+)")
_DATE_RE = re.compile(r"(\d{1,2}):(\d{2})\s*([ap]m)\s+on\s+(\d{1,2} \w+, \d{4})", re.IGNORECASE)


@dataclass
class Scores:
    """Per-question metric values, summed so they can be averaged per category and overall."""

    n: int = 0
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, values: dict[str, float]) -> None:
        self.n += 1
        for key, v in values.items():
            self.sums[key] += v

    def mean(self, key: str) -> float:
        return self.sums[key] / self.n if self.n else float("nan")


def repair_evidence(raw: list[Any]) -> list[str]:
    """Normalise evidence ids: split 'D8:6; D9:17' / 'D9:1 D4:4', fix 'D:11:26' and 'D30:05'."""
    out: list[str] = []
    for item in raw:
        for sess, turn in _EVIDENCE_RE.findall(str(item)):
            did = f"D{int(sess)}:{int(turn)}"
            if did not in out:
                out.append(did)
    return out


def session_date(stamp: str) -> tuple[str, datetime | None]:
    """'1:56 pm on 8 May, 2023' -> ('8 May, 2023', datetime) ; unknown formats keep the raw text."""
    m = _DATE_RE.search(stamp)
    if not m:
        return stamp.strip(), None
    hour, minute, ampm, day = int(m.group(1)), int(m.group(2)), m.group(3).lower(), m.group(4)
    hour = hour % 12 + (12 if ampm == "pm" else 0)
    try:
        when = datetime.strptime(day, "%d %B, %Y").replace(hour=hour, minute=minute, tzinfo=timezone.utc)
    except ValueError:
        when = None
    return day, when


def turn_memories(conversation: dict[str, Any]) -> list[tuple[str, MemoryInput]]:
    """One (dia_id, MemoryInput) per turn; a shared photo's caption is part of what was said."""
    out: list[tuple[str, MemoryInput]] = []
    sessions = sorted((int(k.split("_")[1]), v) for k, v in conversation.items()
                      if re.fullmatch(r"session_\d+", k) and isinstance(v, list))
    for num, turns in sessions:
        day, when = session_date(str(conversation.get(f"session_{num}_date_time", "")))
        for t in turns:
            text = str(t.get("text", "")).strip()
            if t.get("blip_caption"):
                text = f"{text} [shares {t['blip_caption']}]".strip()
            out.append((t["dia_id"], MemoryInput(text=f"[{day}] {t['speaker']}: {text}", created_at=when,
                                                 metadata={"dia_id": t["dia_id"]}, source="locomo")))
    return out


def score(ranked: list[int], relevant: set[int]) -> dict[str, float]:
    """Recall@5/@10 (fraction of evidence found), hit@10, binary nDCG@10 and MRR@10 for one question."""
    top10 = ranked[:10]
    dcg = sum(1.0 / math.log2(i + 2) for i, mid in enumerate(top10) if mid in relevant)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    found10 = len(relevant & set(top10))
    return {"r5": len(relevant & set(ranked[:5])) / len(relevant), "r10": found10 / len(relevant),
            "hit10": float(found10 > 0), "ndcg10": dcg / idcg,
            "mrr": next((1.0 / (i + 1) for i, mid in enumerate(top10) if mid in relevant), 0.0)}


#: One question's fusion inputs for the cross-validation: (category, relevant ids, semantic pool,
#: keyword pool, cosine of every candidate).
Candidates = tuple[int, set[int], list[tuple[int, float]], list[tuple[int, float]], dict[int, float]]
CV_GRID = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # semantic weights tried, 0.50..0.95
CV_FOLDS = {"even": (0, 2, 4, 6, 8), "odd": (1, 3, 5, 7, 9)}  # conversations by position in the file


def candidates(store: MemoryStore, question: str, category: int, relevant: set[int], pool: int = 50) -> Candidates:
    """What hybrid recall fuses for this question (its pool of 50 for k = 10), from the store's own searches."""
    sem = [(h.memory.id, float(h.similarity or 0.0)) for h in store.recall(question, k=pool, mode="semantic").hits]
    kw = [(h.memory.id, h.score) for h in store.recall(question, k=pool, mode="keyword").hits]
    cos = dict(sem) | search.cosines(store._conn, store._embed([question])[0], [m for m, _ in kw])
    return category, relevant, sem, kw, cos


def cross_validate(per_conv: list[list[Candidates]], floor: float) -> str:
    """2-fold cross-validation of ``SEMANTIC_WEIGHT`` over conversations: choose the weight with the
    best Recall@10 on one half, report it on the other half, both ways."""
    def evaluate(convs: tuple[int, ...], w: float) -> dict[int, Scores]:
        out: dict[int, Scores] = defaultdict(Scores)
        for ci in convs:
            for cat, rel, sem, kw, cos in per_conv[ci]:
                ranked = [m for m, _ in search.fuse(sem, kw, cos, floor, semantic_weight=w)]
                out[cat].add(score(ranked, rel))
                out[0].add(score(ranked, rel))
        return out

    folds = {name: tuple(c for c in convs if c < len(per_conv)) for name, convs in CV_FOLDS.items()}
    curves = {name: {w: evaluate(convs, w) for w in CV_GRID} for name, convs in folds.items()}
    lines = ["| tuning half | Recall@10 on it, w = " + " / ".join(f"{w:.2f}" for w in CV_GRID) + " |", "|---|---|"]
    lines += [f"| {name} | " + " / ".join(f"{curve[w][0].mean('r10'):.3f}" for w in CV_GRID) + " |"
              for name, curve in curves.items()]
    lines += ["", "| chosen on | w | reported on | R@5 | R@10 | nDCG@10 | MRR | R@10 per category 1/2/3/4 |",
              "|---|---|---|---|---|---|---|---|"]
    for tune, test in (("even", "odd"), ("odd", "even")):
        best = max(CV_GRID, key=lambda w: curves[tune][w][0].mean("r10"))
        r = curves[test][best]
        per_cat = " / ".join(f"{r[c].mean('r10'):.3f}" for c in sorted(CATEGORIES))
        lines.append(f"| {tune} | {best:.2f} | {test} | {r[0].mean('r5'):.3f} | {r[0].mean('r10'):.3f} | "
                     f"{r[0].mean('ndcg10'):.3f} | {r[0].mean('mrr'):.3f} | {per_cat} |")
    return "\n".join(lines)


def run_sample(sample: dict[str, Any], embedder: Embedder, modes: tuple[SearchMode, ...],
               results: dict[str, dict[int, Scores]], counts: dict[str, int], batch: int,
               max_questions: int | None = None, cv: list[Candidates] | None = None) -> None:
    """Fill a fresh store with one conversation and score its questions in every mode (and, for
    ``cv``, collect each question's fusion inputs)."""
    with tempfile.TemporaryDirectory(prefix="locomo-") as tmp:
        store = MemoryStore(Settings(data_dir=Path(tmp), dedup_threshold=1.0), embedder)
        try:
            turns = turn_memories(sample["conversation"])
            dia_to_mem: dict[str, int] = {}
            t0 = time.perf_counter()
            for start in range(0, len(turns), batch):
                chunk = turns[start:start + batch]
                for (did, _), res in zip(chunk, store.remember_many([m for _, m in chunk])):
                    dia_to_mem[did] = res.memory.id
                    counts["folded"] += res.status not in ("created", "updated")
            counts["fill_s"] += time.perf_counter() - t0  # type: ignore[assignment]
            counts["turns"] += len(turns)
            t0 = time.perf_counter()
            qas = sample["qa"]
            if max_questions and len(qas) > max_questions:  # evenly spaced, so every category shows up
                qas = qas[::math.ceil(len(qas) / max_questions)]
            for qa in qas:
                cat = qa.get("category")
                if cat not in CATEGORIES:
                    continue
                evidence = repair_evidence(qa.get("evidence") or [])
                relevant = {dia_to_mem[d] for d in evidence if d in dia_to_mem}
                counts["missing_ids"] += sum(d not in dia_to_mem for d in evidence)
                if not relevant:
                    counts["skipped"] += 1
                    continue
                for mode in modes:
                    hits = store.recall(str(qa["question"]), k=10, mode=mode).hits
                    results[mode][cat].add(score([h.memory.id for h in hits], relevant))
                if cv is not None:
                    cv.append(candidates(store, str(qa["question"]), cat, relevant))
                counts["questions"] += 1
            counts["query_s"] += time.perf_counter() - t0  # type: ignore[assignment]
        finally:
            store.close()


def run_assistant(embedder: Embedder, modes: tuple[SearchMode, ...], path: Path = ASSISTANT_SET) -> dict[str, Scores]:
    """The assistant-memory check: a store filled like an assistant fills it (default settings, so
    updates are linked to what they supersede), questions that paraphrase the facts; the answer is
    the memory (or the current version of the fact) the question is about."""
    data = json.loads(path.read_text())
    out: dict[str, Scores] = {m: Scores() for m in modes}
    with tempfile.TemporaryDirectory(prefix="assistant-") as tmp:
        with MemoryStore(Settings(data_dir=Path(tmp)), embedder) as store:
            ids = {key: store.remember(text).memory.id for key, text in data["memories"]}
            for question, key in data["questions"]:
                for mode in modes:
                    hits = store.recall(question, k=10, mode=mode).hits
                    out[mode].add(score([h.memory.id for h in hits], {ids[key]}))
    return out


def assistant_table(results: dict[str, Scores]) -> str:
    lines = ["| mode | n | Recall@5 | Recall@10 | nDCG@10 | MRR |", "|---|---|---|---|---|---|"]
    lines += [f"| {mode} | {s.n} | {s.mean('r5'):.3f} | {s.mean('r10'):.3f} | {s.mean('ndcg10'):.3f} | {s.mean('mrr'):.3f} |"
              for mode, s in results.items()]
    return "\n".join(lines)


def table(results: dict[str, dict[int, Scores]], modes: tuple[SearchMode, ...]) -> str:
    """The README table: one row per mode and category, with the published reference beside it."""
    lines = ["| mode | category | n | Recall@5 | Recall@10 | hit@10 | nDCG@10 | MRR | published nDCG@10 / Recall@10 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        overall = Scores()
        for cat in sorted(CATEGORIES):
            s = results[mode][cat]
            overall.n += s.n
            for key, v in s.sums.items():
                overall.sums[key] += v
            ref = f"{REFERENCE[cat][0]:.3f} / {REFERENCE[cat][1]:.3f}" if mode == "semantic" else ""
            lines.append(f"| {mode} | {cat} {CATEGORIES[cat]} | {s.n} | {s.mean('r5'):.3f} | {s.mean('r10'):.3f} "
                         f"| {s.mean('hit10'):.3f} | {s.mean('ndcg10'):.3f} | {s.mean('mrr'):.3f} | {ref} |")
        lines.append(f"| {mode} | **overall (1-4)** | {overall.n} | **{overall.mean('r5'):.3f}** | "
                     f"**{overall.mean('r10'):.3f}** | **{overall.mean('hit10'):.3f}** | "
                     f"**{overall.mean('ndcg10'):.3f}** | **{overall.mean('mrr'):.3f}** | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path to locomo10.json")
    ap.add_argument("--samples", type=int, default=None, help="use only the first N conversations")
    ap.add_argument("--quick", action="store_true", help="first conversation, first 40 questions (smoke test)")
    ap.add_argument("--max-questions", type=int, default=None, help="score at most N evenly spaced questions per conversation")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of semantic,keyword,hybrid")
    ap.add_argument("--batch", type=int, default=256, help="memories per remember_many call")
    ap.add_argument("--assistant-only", action="store_true", help="run only the assistant-memory check")
    ap.add_argument("--cv", action="store_true", help="also cross-validate the fusion weight (2 folds of conversations)")
    args = ap.parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    if not set(modes) <= set(MODES):
        ap.error(f"--modes must be drawn from {', '.join(MODES)}")
    if not args.data.is_file():
        ap.error(f"{args.data} not found (the LoCoMo file from ../shared/eval/)")
    samples = json.loads(args.data.read_text())
    limit = 1 if args.quick else args.samples
    max_q = 40 if args.quick and args.max_questions is None else args.max_questions
    if limit is not None:
        samples = samples[:limit]

    load_start = f"{os.getloadavg()[0]:.2f}"
    embedder = SentenceTransformerEmbedder()
    embedder.wait()
    if args.assistant_only:
        print(assistant_table(run_assistant(embedder, modes)))
        return 0
    results: dict[str, dict[int, Scores]] = {m: defaultdict(Scores) for m in modes}
    counts: dict[str, int] = defaultdict(int)
    t0 = time.perf_counter()
    per_conv: list[list[Candidates]] = []
    for sample in samples:
        per_conv.append([])
        run_sample(sample, embedder, modes, results, counts, args.batch, max_q, per_conv[-1] if args.cv else None)
        print(f"  {sample['sample_id']}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    print(f"LoCoMo retrieval, {len(samples)} conversation(s), {counts['turns']} turns stored as memories "
          f"({counts['folded']} folded into an identical twin), {counts['questions']} questions of categories "
          f"1-4 scored ({counts['skipped']} without usable evidence skipped, {counts['missing_ids']} evidence ids "
          f"not in the conversation dropped).")
    print(f"Model {embedder.model_id}; store dedup_threshold=1.0; fill {counts['fill_s']:.1f} s, "
          f"queries {counts['query_s']:.1f} s ({len(modes)} mode(s)).")
    print(f"Machine: {machine()}; 1-min load average {load_start} at start, {os.getloadavg()[0]:.2f} at end.")
    print("Published reference: plain all-MiniLM-L6-v2 dense retrieval, MTEB LoCoMo task.\n")
    print(table(results, modes))
    print(f"\nAssistant-memory check ({ASSISTANT_SET.relative_to(ROOT)}: paraphrased questions about "
          "assistant-style facts and updated facts; not LoCoMo):\n")
    print(assistant_table(run_assistant(embedder, modes)))
    if args.cv:
        print("\nCross-validation of the fusion's semantic weight (the shipped value is "
              f"{search.SEMANTIC_WEIGHT}):\n")
        print(cross_validate(per_conv, Settings().relevance_floor))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
