"""Measure the scrubber on the Presidio synthetic PII set, and scrub/generalise throughput.

Usage (from the project root)::

    .venv/bin/python benchmarks/bench_scrub.py [--data ../shared/eval/presidio_synth_dataset_v2.json]
        [--locomo ../shared/eval/locomo10.json] [--no-generalize] [--show-leaks N]

Definitions (span level):
- **recall**: a labelled span is *leaked* if its whole value, or any of its tokens (runs of
  letters/digits) of 3+ characters that is not a stop word, still occurs (case-insensitively) in
  the scrubbed text; recall = 1 - leaked / labelled spans.
- **precision**: fraction of the scrubber's spans that overlap a labelled PII span by at least
  one character (a span that removed nothing labelled is a false positive).
- **F2** = 5 P R / (4 P + R), recall weighted twice as much as precision.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from continuum_mcp.privacy.scrub import STOP_WORDS, Scrubber  # noqa: E402

TOKEN_RE = re.compile(r"[^\W_]+")


def leaked(value: str, scrubbed: str) -> bool:
    low = scrubbed.lower()
    if value.strip().lower() in low:
        return True
    out_tokens = set(TOKEN_RE.findall(low))
    for tok in TOKEN_RE.findall(value.lower()):
        if len(tok) >= 3 and tok not in STOP_WORDS and tok in out_tokens:
            return True
    return False


def evaluate(data: list[dict], scrubber: Scrubber, show_leaks: int = 0) -> dict:
    per_type_total: Counter[str] = Counter()
    per_type_leak: Counter[str] = Counter()
    n_pred = n_pred_ok = 0
    examples: dict[str, list[str]] = defaultdict(list)
    t0 = time.perf_counter()
    results = [scrubber.scrub(r["full_text"]) for r in data]
    elapsed = time.perf_counter() - t0
    fps: list[str] = []
    for r, res in zip(data, results):
        for sp in r["spans"]:
            et = sp["entity_type"]
            per_type_total[et] += 1
            if leaked(sp["entity_value"], res.text):
                per_type_leak[et] += 1
                if len(examples[et]) < show_leaks:
                    examples[et].append(f"{sp['entity_value']!r} -> {res.text!r}")
        for ps in res.spans:
            n_pred += 1
            if any(ps.start < sp["end_position"] and sp["start_position"] < ps.end for sp in r["spans"]):
                n_pred_ok += 1
            elif len(fps) < show_leaks * 3:
                fps.append(f"{r['full_text'][ps.start:ps.end]!r} ({ps.type})")
    total = sum(per_type_total.values())
    leaks = sum(per_type_leak.values())
    recall = 1 - leaks / total
    precision = n_pred_ok / n_pred if n_pred else 1.0
    f2 = 5 * precision * recall / (4 * precision + recall) if precision + recall else 0.0
    return dict(per_type_total=per_type_total, per_type_leak=per_type_leak, recall=recall,
                precision=precision, f2=f2, n_pred=n_pred, elapsed=elapsed, examples=examples,
                fps=fps, n=len(data))


def print_table(m: dict) -> None:
    print(f"{'entity type':<20}{'spans':>7}{'leaked':>8}{'recall':>9}")
    for et, n in sorted(m["per_type_total"].items(), key=lambda kv: -kv[1]):
        lk = m["per_type_leak"][et]
        print(f"{et:<20}{n:>7}{lk:>8}{1 - lk / n:>9.3f}")
    total = sum(m["per_type_total"].values())
    print(f"{'OVERALL':<20}{total:>7}{sum(m['per_type_leak'].values()):>8}{m['recall']:>9.3f}")
    print(f"precision {m['precision']:.3f} ({m['n_pred']} scrubbed spans)  recall {m['recall']:.3f}  "
          f"F2 {m['f2']:.3f}")
    print(f"scrub throughput: {m['n'] / m['elapsed']:.0f} memories/s "
          f"({m['n']} sentences in {m['elapsed']:.2f} s, one process)")


def bench_generalize(locomo: Path, scrubber: Scrubber) -> None:
    from datetime import datetime, timezone

    from continuum_mcp.privacy.generalize import Generalizer
    from continuum_mcp.memory.models import Memory
    from embeddings import SentenceTransformerEmbedder

    sample = json.loads(locomo.read_text())[0]
    conv = sample["conversation"]
    now = datetime.now(timezone.utc)
    memories: list[Memory] = []
    k = 1
    while f"session_{k}" in conv:
        for turn in conv[f"session_{k}"]:
            memories.append(Memory(id=len(memories) + 1, text=turn["text"], created_at=now,
                                   updated_at=now, content_hash=str(len(memories))))
        k += 1
    embedder = SentenceTransformerEmbedder()
    embedder.encode(["warm up"])
    gen = Generalizer(embedder, scrubber)
    t0 = time.perf_counter()
    patterns = gen.generalize(memories)
    dt = time.perf_counter() - t0
    multi = sum(1 for p in patterns if p.support > 1)
    print(f"generalise: {len(memories)} LoCoMo turns ({sample['sample_id']}) -> {len(patterns)} patterns "
          f"({multi} with support > 1) in {dt:.2f} s: {len(memories) / dt:.0f} memories/s, "
          f"{len(patterns) / dt:.0f} patterns/s (embedding included, CPU)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/eval/presidio_synth_dataset_v2.json")
    ap.add_argument("--locomo", type=Path, default=ROOT.parent / "shared/eval/locomo10.json")
    ap.add_argument("--no-generalize", action="store_true")
    ap.add_argument("--show-leaks", type=int, default=0, help="print N leaked examples per type")
    args = ap.parse_args()
    data = json.loads(args.data.read_text())
    scrubber = Scrubber()
    scrubber.scrub("warm up")  # loads the gazetteers outside the timing
    m = evaluate(data, scrubber, args.show_leaks)
    print_table(m)
    if args.show_leaks:
        for et, ex in m["examples"].items():
            print(f"--- leaks {et}")
            for e in ex:
                print("   ", e)
        print("--- false positives")
        for e in m["fps"]:
            print("   ", e)
    if not args.no_generalize and args.locomo.exists():
        bench_generalize(args.locomo, scrubber)


if __name__ == "__main__":
    main()
