"""Secure aggregation costs, Bonawitz (complete graph) beside SecAgg+ (sparse Harary graph).

Runs the real client and server state machines in one process (``continuum_mcp.secagg.simulate``);
every message is serialised to JSON and parsed back as a transport would. CPU time is
``time.process_time`` around each party's own protocol steps (parsing of *received* messages by the
simulated transport is not attributed to anyone). Bytes are the sizes of the JSON messages: a
client's "sent" (its four messages), "recv" (its key roster, share inbox and survivor list) and the
server's total sent (the sum of every client's "recv"). "kx" is a client's sent bytes without the
masked vector (the part that depends on n). Dropouts happen after sharing keys (the expensive case:
their pairwise masks must be recovered). SecAgg+ uses ``SparseDesign()`` (a third may drop, 5 %
corrupt, P(privacy loss) <= 2^-40, P(failure) <= 2^-20) with ``min_roster`` lowered so that
n = 100 is sparse too. Growth exponents are least-squares fits of log(cost) on log(n).

Usage:
    python benchmarks/bench_secagg.py                 # default: ~5 min on 2 cores
    python benchmarks/bench_secagg.py --sizes 100,500 --dropouts 0,0.3 --bonawitz-max 500
    python benchmarks/bench_secagg.py --dim 64 --slots 16   # smaller d (label it when quoting)
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.privacy.dp import gaussian_sigma
from continuum_mcp.secagg import SecAggParams, simulate
from continuum_mcp.secagg.guarantees import SparseDesign, guarantee
from machine import machine  # benchmarks/machine.py (the script's folder is on sys.path)

DESIGN = SparseDesign(min_roster=50)


def make_params(roster: list[str], dim: int, epsilon: float, delta: float,
                sparse: SparseDesign | None) -> SecAggParams:
    """Noise calibrated by the analytic Gaussian mechanism to the *quantised* sensitivity."""
    first = SecAggParams.create("bench", 1, roster, dim, 1.0, gaussian_sigma(epsilon, delta, 1.0),
                                sparse=sparse)
    sigma = gaussian_sigma(epsilon, delta, first.quantised_sensitivity)
    return SecAggParams.create("bench", 1, roster, dim, 1.0, sigma, frac_bits=first.frac_bits,
                               sparse=sparse)


def run(n: int, dropout: float, dim: int, epsilon: float, delta: float,
        sparse: SparseDesign | None) -> dict[str, float]:
    identities = [Identity.generate() for _ in range(n)]
    params = make_params([i.instance_id for i in identities], dim, epsilon, delta, sparse)
    rng = np.random.default_rng(n)
    inputs = {}
    for ident in identities:
        x = rng.normal(size=dim)
        inputs[ident.instance_id] = x / np.linalg.norm(x)
    k = int(round(dropout * n))
    drops = {identities[-1 - j].instance_id: "after_share_keys" for j in range(k)}
    wall = time.perf_counter()
    report = simulate(params, identities, inputs, Verifier(MemoryReplayGuard()), drops)  # type: ignore[arg-type]
    wall = time.perf_counter() - wall
    survivors = report.result.contributors
    cpu = [report.client_cpu[c] for c in survivors]
    sent = [report.client_bytes_sent[c] for c in survivors]
    recv = [report.client_bytes_received[c] for c in survivors]
    vector = report.bytes_by_kind["masked_input"] / len(report.result.contributors)
    return {
        "protocol": "secagg+" if params.sparse else "bonawitz",
        "n": n, "dropout": dropout,
        "k": params.neighbours or n - 1,
        "t": params.threshold,
        "survivors": len(survivors),
        "frac_bits": params.frac_bits,
        "sigma": params.noise_sigma,
        "client_cpu_mean": statistics.fmean(cpu),
        "client_cpu_max": max(cpu),
        "client_bytes_mean": statistics.fmean(sent),
        "client_kx_bytes": statistics.fmean(sent) - vector,
        "client_recv_mean": statistics.fmean(recv),
        "server_cpu": report.server_cpu,
        "server_bytes": report.server_bytes_sent,
        "wall": wall,
    }


def bench_shamir(n: int, repeats: int = 20) -> None:
    """Shamir costs at the secure-aggregation shape: 2 secrets to n holders, t = ceil(2n/3)."""
    import os

    from continuum_mcp.secagg import threshold_for
    from continuum_mcp.crypto.shamir import Reconstructor, ShamirDealer

    t = threshold_for(n)
    dealer = ShamirDealer(n, t)
    start = time.process_time()
    dealt = [dealer.split_serialised([os.urandom(32), os.urandom(32)]) for _ in range(repeats)]
    split = (time.process_time() - start) / repeats
    holders = list(range(1, int(n * 0.7) + 1)) if int(n * 0.7) >= t else list(range(1, n + 1))
    owners = [dealt[i % repeats] for i in range(n)]
    start = time.process_time()
    rec = Reconstructor(holders, t)
    rec.reconstruct_many([[d[h - 1][0] for h in holders] for d in owners])
    recon = time.process_time() - start
    print(f"shamir n = {n}, t = {t}: one client's split of 2 x 32-byte secrets {split * 1e3:.1f} ms; "
          f"server reconstruction of {n} secrets from {len(holders)} holders {recon:.2f} s")


def fmt_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if b < 1024 or unit == "GB":
            return f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GB"


def exponent(rows: list[dict[str, float]], key: str) -> float:
    """Least-squares slope of log(cost) on log(n)."""
    x = np.log([r["n"] for r in rows])
    y = np.log([max(r[key], 1e-12) for r in rows])
    return float(np.polyfit(x, y, 1)[0])


def log_slope(rows: list[dict[str, float]], key: str) -> float:
    """Least-squares b of cost = a + b ln n (bytes per e-fold of n)."""
    return float(np.polyfit(np.log([r["n"] for r in rows]), [r[key] for r in rows], 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", default="100,500,1000,2000")
    parser.add_argument("--dropouts", default="0.3")
    parser.add_argument("--bonawitz-max", type=int, default=500,
                        help="largest n run with the complete graph (its cost grows as n^2)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--delta", type=float, default=1e-6)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    bench_shamir(500)
    d = args.dim * args.slots
    sizes = [int(s) for s in args.sizes.split(",")]
    dropouts = [float(x) for x in args.dropouts.split(",")]
    print(f"secure aggregation benchmark: d = {args.dim} x {args.slots} = {d}, "
          f"noise for epsilon {args.epsilon} at delta {args.delta} (analytic Gaussian); "
          f"Bonawitz capped at n <= {args.bonawitz_max}")
    print(f"{'protocol':>8} {'n':>5} {'drop':>4} {'k':>4} {'t':>4} {'surv':>4} "
          f"{'client CPU mean/max (s)':>23} {'sent':>9} {'kx':>8} {'recv':>9} "
          f"{'server CPU (s)':>14} {'server sent':>11} {'wall (s)':>8}")
    rows = []
    for n in sizes:
        for dropout in dropouts:
            for sparse in (None, DESIGN):
                if sparse is None and n > args.bonawitz_max:
                    continue
                r = run(n, dropout, d, args.epsilon, args.delta, sparse)
                rows.append(r)
                print(f"{r['protocol']:>8} {n:>5} {dropout:>4.0%} {r['k']:>4} {r['t']:>4} "
                      f"{r['survivors']:>4} {r['client_cpu_mean']:>11.3f} / {r['client_cpu_max']:<9.3f} "
                      f"{fmt_bytes(r['client_bytes_mean']):>9} {fmt_bytes(r['client_kx_bytes']):>8} "
                      f"{fmt_bytes(r['client_recv_mean']):>9} {r['server_cpu']:>14.2f} "
                      f"{fmt_bytes(r['server_bytes']):>11} {r['wall']:>8.1f}", flush=True)
    print(f"(sigma of the float sum = {rows[-1]['sigma']:.3f} for the last run, "
          f"fixed point 2^{rows[-1]['frac_bits']})")
    print("\nfitted growth exponents (cost ~ n^e, least squares over the sizes run):")
    for proto in ("bonawitz", "secagg+"):
        for dropout in dropouts:
            sel = [r for r in rows if r["protocol"] == proto and r["dropout"] == dropout]
            if len(sel) < 2:
                continue
            fits = ", ".join(f"{key} n^{exponent(sel, key):.2f}" for key in
                             ("server_bytes", "server_cpu", "client_bytes_mean", "client_kx_bytes",
                              "client_recv_mean", "client_cpu_mean"))
            print(f"  {proto:>8} drop {dropout:.0%} (n = {sel[0]['n']}..{sel[-1]['n']}): {fits}")
            if proto == "secagg+":
                print(f"  {'':>8} client kx bytes ~ a + {log_slope(sel, 'client_kx_bytes'):.0f} ln n; "
                      f"client recv ~ a + {log_slope(sel, 'client_recv_mean'):.0f} ln n")
    print("\nSecAgg+ guarantees of the runs (computed by continuum_mcp.secagg.guarantees):")
    for r in rows:
        if r["protocol"] == "secagg+" and r["dropout"] == dropouts[-1]:
            g = guarantee(int(r["n"]), int(r["k"]), int(r["t"]), DESIGN)
            print(f"  n = {r['n']}: k = {g.neighbours}, t = {g.threshold}, P(fail) <= {g.p_failure:.2g}, "
                  f"P(privacy loss) <= {g.p_privacy_loss:.2g} (dropout {DESIGN.dropout:.2f}, "
                  f"corrupt {DESIGN.corrupt:.2f})")


if __name__ == "__main__":
    main()
