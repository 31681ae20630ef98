"""Secure aggregation costs: per-client and server CPU time, bytes sent, for d = 384 x 32 slots.

Runs the real client and server state machines in one process (``continuum_mcp.secagg.simulate``);
every message is serialised to JSON and parsed back as a transport would. CPU time is
``time.process_time`` around each party's own protocol steps (parsing of *received* messages by the
simulated transport is not attributed to anyone). Bytes are the sizes of the JSON messages each
party sends (the server's include relaying the key roster, share inboxes and survivor list).

Usage:
    python benchmarks/bench_secagg.py                    # n = 10, 100, 500; dropouts 0 %, 30 %
    python benchmarks/bench_secagg.py --sizes 10,100     # skip n = 500
    python benchmarks/bench_secagg.py --extrapolate-to 500 --sizes 10,100
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

from continuum_mcp.privacy.dp import gaussian_sigma
from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.secagg import SecAggParams, simulate


def make_params(roster: list[str], dim: int, epsilon: float, delta: float) -> SecAggParams:
    """Noise calibrated by the analytic Gaussian mechanism to the *quantised* sensitivity."""
    first = SecAggParams.create("bench", 1, roster, dim, 1.0, gaussian_sigma(epsilon, delta, 1.0))
    sigma = gaussian_sigma(epsilon, delta, first.quantised_sensitivity)
    return SecAggParams.create("bench", 1, roster, dim, 1.0, sigma, frac_bits=first.frac_bits)


def run(n: int, dropout: float, dim: int, epsilon: float, delta: float) -> dict[str, float]:
    identities = [Identity.generate() for _ in range(n)]
    params = make_params([i.instance_id for i in identities], dim, epsilon, delta)
    rng = np.random.default_rng(n)
    inputs = {}
    for ident in identities:
        x = rng.normal(size=dim)
        inputs[ident.instance_id] = x / np.linalg.norm(x)
    k = int(round(dropout * n))
    # Dropouts after sharing keys: the expensive case (their pairwise masks must be recovered).
    drops = {identities[-1 - j].instance_id: "after_share_keys" for j in range(k)}
    wall = time.perf_counter()
    report = simulate(params, identities, inputs, Verifier(MemoryReplayGuard()), drops)  # type: ignore[arg-type]
    wall = time.perf_counter() - wall
    survivors = report.result.contributors
    cpu = [report.client_cpu[c] for c in survivors]
    sent = [report.client_bytes_sent[c] for c in survivors]
    return {
        "n": n,
        "dropout": dropout,
        "t": params.threshold,
        "survivors": len(survivors),
        "frac_bits": params.frac_bits,
        "sigma": params.noise_sigma,
        "client_cpu_mean": statistics.fmean(cpu),
        "client_cpu_max": max(cpu),
        "client_bytes_mean": statistics.fmean(sent),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--dropouts", default="0,0.3")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--delta", type=float, default=1e-6)
    parser.add_argument("--extrapolate-to", type=int, default=0,
                        help="also print an EXTRAPOLATION to this n from the two largest runs")
    args = parser.parse_args()
    bench_shamir(500)
    d = args.dim * args.slots
    sizes = [int(s) for s in args.sizes.split(",")]
    dropouts = [float(x) for x in args.dropouts.split(",")]
    print(f"secure aggregation benchmark: d = {args.dim} x {args.slots} = {d}, "
          f"noise for epsilon {args.epsilon} at delta {args.delta} (analytic Gaussian)")
    header = (f"{'n':>4} {'drop':>5} {'t':>4} {'surv':>4} {'client CPU mean/max (s)':>24} "
              f"{'client sent':>12} {'server CPU (s)':>14} {'server sent':>12} {'wall (s)':>9}")
    print(header)
    rows = []
    for n in sizes:
        for dropout in dropouts:
            r = run(n, dropout, d, args.epsilon, args.delta)
            rows.append(r)
            print(f"{n:>4} {dropout:>5.0%} {r['t']:>4} {r['survivors']:>4} "
                  f"{r['client_cpu_mean']:>11.3f} / {r['client_cpu_max']:<10.3f} "
                  f"{fmt_bytes(r['client_bytes_mean']):>12} {r['server_cpu']:>14.2f} "
                  f"{fmt_bytes(r['server_bytes']):>12} {r['wall']:>9.1f}", flush=True)
    print(f"(sigma of the float sum = {rows[-1]['sigma']:.3f} for the last run, "
          f"fixed point 2^{rows[-1]['frac_bits']})")
    if args.extrapolate_to and len(sizes) >= 2:
        big, small = sizes[-1], sizes[-2]
        target = args.extrapolate_to
        print(f"\nEXTRAPOLATION (not measured) to n = {target} from n = {small} and {big}:")
        for dropout in dropouts:
            a = next(r for r in rows if r["n"] == small and r["dropout"] == dropout)
            b = next(r for r in rows if r["n"] == big and r["dropout"] == dropout)
            for key in ("client_cpu_mean", "server_cpu", "server_bytes", "client_bytes_mean"):
                # Fit cost = c * n^k through the two points.
                k = math.log(max(b[key], 1e-9) / max(a[key], 1e-9)) / math.log(big / small)
                est = b[key] * (target / big) ** k
                print(f"  drop {dropout:.0%} {key}: ~{est:.3g} (growth exponent {k:.2f})")


if __name__ == "__main__":
    main()
