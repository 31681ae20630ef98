"""Codebook refinement utility: codebook v0 against the codebook a DP refinement session learns.

A federation of n simulated instances (the memories of ``bench_privacy_utility.py``: 20 shared
facts in 6-8 paraphrases each, held with popularities 0.08-0.65, plus personal memories full of
PII) runs one ``codebook_refinement`` session with the card's defaults (3 rounds, noise multiplier
1.1, clip 1, one Lloyd step per round, sybil fraction 1/3) over the pattern embeddings each
instance's own pipeline produces (``federation.learning.pattern_embeddings``). Then:

1. paraphrase figure: the share of paraphrase pairs whose patterns land in the same slot, under
   v0 and under the refined codebook, on (a) the 40 public pairs of ``build_codebook.py`` and (b)
   every pair of paraphrases of the same fact in ``bench_privacy_utility.FACTS``, each embedded as
   the pattern a single memory of that text yields;
2. recall@10 of ``bench_privacy_utility.py`` (one release window, mode ``high``, n members) with
   each codebook (its ``run_cell``: real coordinator over HTTP, real pipeline and release code,
   secure-aggregation sum simulated).

REAL: the pattern pipeline, the session kind's local computation (assignment, per-codeword sums and
counts, the clip) and post-processing, the accountant's guarantee, the release benchmark's code.
SIMULATED: the session's secure aggregation is replaced by its exact output
(``federation.learning.simulate_round_sum``: each vector quantised as the secagg client does, summed,
plus one discrete Gaussian of the survivors' total std); the coordinator of the recall benchmark
takes the refined vectors under slot tag 0 (a fresh coordinator per cell, so no versions mix;
coordinator support for versioned slot ids is integration work). A non-private Lloyd step (the
same sums without noise) is shown as the ceiling.

Usage:
    python benchmarks/bench_codebook_refinement.py               # n = 100, mode high
    python benchmarks/bench_codebook_refinement.py --sizes 1000 --rounds 1 --no-recall   # where DP starts to move codewords
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench_privacy_utility import FACTS, CachingEmbedder, Member, check_keywords, instance_memories, plan, run_cell
from build_codebook import PARAPHRASES
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.federation.learning import (
    CodebookInputs, CodebookRefinementResult, SessionContext, SessionParams, get_kind, pattern_embeddings,
    session_guarantee, session_round_params, simulate_session,
)
from continuum_mcp.federation.learning.codebook_refinement import COUNT_WEIGHT, CodebookRefinement
from continuum_mcp.memory.models import Memory
from continuum_mcp.privacy.codebook import Codebook
from continuum_mcp.privacy.generalize import Generalizer
from continuum_mcp.privacy.modes import default_policy
from continuum_mcp.privacy.scrub import Scrubber
from embeddings import SentenceTransformerEmbedder
from machine import machine

NOW = "2025-01-01T00:00:00+00:00"


def memories(texts: Sequence[str]) -> list[Memory]:
    return [Memory(id=n + 1, text=t, tags=[], metadata={}, source="bench", created_at=NOW, updated_at=NOW,
                   content_hash=str(n)) for n, t in enumerate(texts)]


def single_pattern(text: str, generalizer: Generalizer) -> np.ndarray:
    """The embedding of the pattern one memory of ``text`` yields (the text itself if none)."""
    got = pattern_embeddings(memories([text]), generalizer, min_confidence=0.0).embeddings
    return np.asarray(got[0] if got else generalizer.embedder.encode([text])[0], dtype=np.float32)  # type: ignore[attr-defined]


def same_slot(pairs: Sequence[tuple[np.ndarray, np.ndarray]], cb: Codebook) -> float:
    a = cb.nearest(np.stack([p[0] for p in pairs]))
    b = cb.nearest(np.stack([p[1] for p in pairs]))
    return float(np.mean(a == b))


def lloyd_without_noise(inputs: Sequence[CodebookInputs], cb: Codebook, params: SessionParams) -> Codebook:
    """The same session's Lloyd steps on the exact, un-noised sums (the non-private ceiling)."""
    kind = get_kind("codebook_refinement")
    ctx = SessionContext(codebook=cb)
    for _ in range(params.rounds):
        total = sum(kind.local_vector(x, ctx, params) for x in inputs)
        res = kind.postprocess(np.asarray(total), 0.0, ctx, params)
        ctx = kind.next_context(ctx, res)
    assert ctx.codebook is not None
    return ctx.codebook


def round_noise_std(n: int, dim: int, params: SessionParams) -> float:
    """Per-coordinate noise std of a session round's released sum with n participants, nobody
    dropping out (as ``simulate_round_sum`` adds it: sqrt(n) x each client's share)."""
    sa = session_round_params("noise", 0, 0, [f"m{i:06d}" for i in range(n)], dim, params)
    return math.sqrt(n) * sa.client_sigma_scaled / sa.scale


def exact_weights(inputs: Sequence[CodebookInputs], cb: Codebook, params: SessionParams) -> np.ndarray:
    """Per codeword: the un-noised weight (participant-scaled pattern count) of round one."""
    kind = get_kind("codebook_refinement")
    ctx = SessionContext(codebook=cb)
    total = sum(kind.local_vector(x, ctx, params) for x in inputs)
    return np.asarray(kind.layout(ctx).split(np.asarray(total))["counts"]) / COUNT_WEIGHT


def members_needed(per_member: float, dim: int, layout_dim: int, params: SessionParams,
                   limit: int = 10 ** 5) -> int | None:
    """The smallest federation whose codeword of mean weight ``per_member`` per member reaches the
    floor it needs to move (the floor is computed at that federation's own round noise)."""
    if per_member <= 0:
        return None
    def moves(n: int) -> bool:
        return per_member * n >= CodebookRefinement.min_count(round_noise_std(n, layout_dim, params), dim)
    lo, hi = params.min_participants, params.min_participants
    while not moves(hi):
        lo, hi = hi, hi * 2
        if hi > limit:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if not moves(mid) else (lo, mid)
    return hi


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100", help="federation sizes, comma-separated")
    ap.add_argument("--mode", default="high")
    ap.add_argument("--level", default="minimal")
    ap.add_argument("--min-confidence", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=None, help="session rounds (default: the kind's, 3)")
    ap.add_argument("--no-recall", action="store_true", help="skip the recall benchmark")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    check_keywords()
    t_all = time.perf_counter()
    print(f"Machine: {machine()}", flush=True)
    inner = SentenceTransformerEmbedder()
    inner.start()
    embedder = CachingEmbedder(inner)
    policy = default_policy()
    generalizer = Generalizer(embedder, Scrubber(), max_phrases=policy.max_phrases_per_pattern)  # type: ignore[arg-type]
    v0 = Codebook.load("v0")
    params = SessionParams.build(kind="codebook_refinement", rounds=args.rounds)
    g = session_guarantee(params)
    print(f"Session: {g.rounds} rounds, noise multiplier {g.noise_multiplier}, clip {g.clip}, "
          f"epsilon {g.epsilon:.2f} at delta {g.delta:g}", flush=True)

    public_pairs = [(single_pattern(a, generalizer), single_pattern(b, generalizer)) for a, b in PARAPHRASES]
    fact_vecs = [[single_pattern(p, generalizer) for p in f.paraphrases] for f in FACTS]
    fact_pairs = [(x, y) for vs in fact_vecs for x, y in itertools.combinations(vs, 2)]

    n_max = max(sizes)
    t0 = time.perf_counter()
    texts = [instance_memories(i, args.seed)[0] for i in range(n_max)]
    inputs = [pattern_embeddings(memories(t), generalizer, min_confidence=args.min_confidence) for t in texts]
    print(f"Pattern pipeline for {n_max} instances: {time.perf_counter() - t0:.1f} s, "
          f"{sum(len(x.embeddings) for x in inputs)} pattern embeddings", flush=True)

    rows: list[dict[str, object]] = []
    rows.append({"codebook": "v0", "n": 0, "updated": 0, "public_same": same_slot(public_pairs, v0),
                 "facts_same": same_slot(fact_pairs, v0), "version": v0.version})
    books: dict[str, Codebook] = {"v0": v0}
    rows_why: dict[int, dict[str, object]] = {}
    for n in sizes:
        t0 = time.perf_counter()
        results = simulate_session(get_kind("codebook_refinement"), inputs[:n], SessionContext(codebook=v0), params)
        last = results[-1]
        assert isinstance(last, CodebookRefinementResult)
        dp = last.codebook(v0 if last.version == "v0" else None)
        updated = sorted({s for r in results if isinstance(r, CodebookRefinementResult) for s in r.updated_slots})
        counts = np.asarray(last.noisy_counts)
        print(f"  DP session n={n}: {time.perf_counter() - t0:.1f} s; codewords moved in some round: {len(updated)}; "
              f"noisy count per codeword max {counts.max():.1f} (floor {last.min_count:.1f}); noisy participants "
              f"{last.noisy_participants:.1f} +- {last.participants_std:.1f}", flush=True)
        exact = lloyd_without_noise(inputs[:n], v0, params)
        layout_dim = get_kind("codebook_refinement").layout(SessionContext(codebook=v0)).dim
        std = round_noise_std(n, layout_dim, params)
        w = np.sort(exact_weights(inputs[:n], v0, params))[::-1] / n
        need = [members_needed(float(w[k]), v0.dim, layout_dim, params) for k in (0, 9) if k < len(w)]
        print(f"  why: round noise std {std:.2f} per coordinate, norm {std * math.sqrt(v0.dim):.1f} over a codeword's "
              f"{v0.dim} dimensions; floor {CodebookRefinement.min_count(std, v0.dim):.1f}; busiest codeword's exact "
              f"weight {w[0] * n:.1f} ({w[0]:.3f} per member), 10th {w[9] * n:.1f}. Members needed (same habits) for "
              f"the busiest codeword to move: {need[0]}, for 10 codewords: {need[1]}", flush=True)
        rows_why[n] = {"noise_std": std, "noise_norm": std * math.sqrt(v0.dim),
                       "floor": CodebookRefinement.min_count(std, v0.dim), "busiest_weight": float(w[0] * n),
                       "tenth_weight": float(w[9] * n), "members_for_first": need[0], "members_for_ten": need[1]}
        moved = int(np.sum(np.any(exact.vectors != v0.vectors, axis=1)))
        for name, cb, up in ((f"DP-refined (n = {n})", dp, len(updated)), (f"non-private Lloyd (n = {n})", exact, moved)):
            rows.append({"codebook": name, "n": n, "updated": up, "public_same": same_slot(public_pairs, cb),
                         "facts_same": same_slot(fact_pairs, cb), "version": cb.version})
            books[name] = cb

    recall: dict[str, float] = {}
    if not args.no_recall:
        n = sizes[0]
        for name, cb in books.items():
            if name != "v0" and not name.endswith(f"(n = {n})"):
                continue
            if name != "v0" and cb.version == "v0":
                recall[name] = recall["v0"]  # the same codebook: the same figure
                continue
            served = Codebook(cb.vectors, "v0")  # tag 0: see the module docstring
            members = [Member(Identity.generate(), plan(t, generalizer, served, policy, args.level, args.min_confidence))
                       for t in texts[:n]]
            work = Path(tempfile.mkdtemp(prefix="cbref-"))
            try:
                cell = run_cell(args.mode, members, embedder, served, args.level, False, work, policy)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            recall[name] = cell.recall
            print(f"  recall@10 {args.mode} n={n} with {name}: {cell.recall:.2f} (released {cell.released_slots} slots, "
                  f"{cell.released_phrases} phrases; {cell.seconds:.0f} s)", flush=True)

    print()
    print(f"Codebook refinement (SIMULATED secure aggregation, exact DP sum): session of {g.rounds} rounds at noise "
          f"multiplier {g.noise_multiplier}, clip {g.clip}, epsilon {g.epsilon:.2f} (delta {g.delta:g}); "
          f"{len(PARAPHRASES)} public paraphrase pairs, {len(fact_pairs)} fact paraphrase pairs; seed {args.seed}.")
    print()
    head = "| codebook | codewords moved | same slot: public pairs | same slot: fact pairs |"
    if recall:
        head += f" recall@10 ({args.mode}, n = {sizes[0]}) |"
    print(head)
    print("|---|---|---|---|" + ("---|" if recall else ""))
    for r in rows:
        line = f"| {r['codebook']} | {r['updated']} | {r['public_same']:.1%} | {r['facts_same']:.1%} |"
        if recall:
            line += f" {recall[str(r['codebook'])]:.2f} |" if str(r["codebook"]) in recall else " - |"
        print(line)
    print(f"\nTotal time {time.perf_counter() - t_all:.0f} s.")
    if args.json:
        print(json.dumps({"rows": rows, "recall": recall, "why": rows_why, "guarantee": g.model_dump(mode="json")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
