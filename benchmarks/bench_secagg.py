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
    python benchmarks/bench_secagg.py                 # default: ~450 s of CPU (7.5 min idle 2-core)
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
from continuum_mcp.secagg.guarantees import SparseDesign, choose_graph, guarantee
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


def _timed(fn, repeats: int = 50) -> float:  # noqa: ANN001
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def unit_costs(dim: int) -> dict[str, float]:
    """Measured per-unit CPU seconds and JSON bytes, from one small SecAgg+ round (n = 40, k = 8)
    driven step by step, for the scale model (docs/scale.md)."""
    import os

    import nacl.bindings

    from continuum_mcp.crypto.cipher import aead_decrypt, aead_encrypt
    from continuum_mcp.crypto.shamir import Reconstructor, ShamirDealer
    from continuum_mcp.crypto.signing import verify_signature_only
    from continuum_mcp.privacy.dp import discrete_gaussian
    from continuum_mcp.secagg import SecAggClient, SecAggServer, quantise
    from continuum_mcp.secagg._graph import _Permutation, leaf_hash
    from continuum_mcp.secagg._masks import prg_uint32

    ids = [Identity.generate() for _ in range(40)]
    params = SecAggParams.create("unit", 1, [i.instance_id for i in ids], dim, 1.0, 1.0,
                                 sparse=SparseDesign(min_roster=3, neighbours=8, threshold=4))
    server = SecAggServer(params, Verifier(MemoryReplayGuard()), {i.instance_id: i.public_key for i in ids})
    clients = [SecAggClient(i, params) for i in ids]
    adverts = [c.advertise_keys() for c in clients]
    for m in adverts:
        server.receive_advertisement(m)
    rosters = server.close_key_rosters()
    shares = [c.share_keys(rosters[c.instance_id]) for c in clients]
    for m in shares:
        server.receive_shares(m)
    inboxes = server.close_shares()
    vec = np.full(dim, 0.5 / math.sqrt(dim))
    masked = [c.masked_input(inboxes[c.instance_id], vec) for c in clients]
    for m in masked:
        server.receive_masked_input(m)
    survivors = server.close_survivor_lists()
    unmask = [c.unmask(survivors[c.instance_id]) for c in clients]
    k = params.neighbours or 0
    roster = rosters[ids[0].instance_id]
    proof_len = len(roster.proofs[0]) / max(1, len(base64_bytes(roster.proofs[0])) // 32)  # per level
    key, seed = os.urandom(32), os.urandom(32)
    sk, pk = os.urandom(32), nacl.bindings.crypto_scalarmult_base(os.urandom(32))
    dealer = ShamirDealer(k + 1, params.threshold)
    # Reconstruction at the shape of n = 1,000 (k = 80, t = 27, 70 % of holders answer): one
    # reconstructor per owner, since every owner's holders have other points.
    big = choose_graph(1000, SparseDesign())
    assert big is not None
    big_dealer = ShamirDealer(big.neighbours + 1, big.threshold)
    dealt = big_dealer.split_serialised([os.urandom(32)])
    rec_points = list(range(1, int(0.7 * big.neighbours) + 2))
    perm = _Permutation(seed, 1 << 20)
    return {
        "advert_bytes": adverts[0].wire_size(),
        "proof_bytes_per_level": proof_len,
        "ciphertext_bytes": (shares[0].wire_size() - adverts[0].wire_size()) / k,
        "vector_message_bytes": masked[0].wire_size(),
        "unmask_share_bytes": (unmask[0].wire_size() - adverts[0].wire_size()) / k,
        "inbox_bytes_per_sender": len(inboxes[ids[0].instance_id].model_dump_json()) / (k + 1),
        "survivor_bytes_per_member": len(survivors[ids[0].instance_id].model_dump_json()) / (k + 1),
        "x25519": _timed(lambda: nacl.bindings.crypto_scalarmult(sk, pk)),
        "verify": _timed(lambda: verify_signature_only(adverts[0].envelope, adverts[0].body())),
        "sign": _timed(lambda: ids[0].sign("SECAGG", "/x", b"{}")),
        "sha256": _timed(lambda: leaf_hash(b"x" * 64), 2000),
        "prp": _timed(lambda: perm(12345), 500),
        "prg": _timed(lambda: prg_uint32(seed, dim), 20),
        "aead": _timed(lambda: aead_decrypt(key, aead_encrypt(key, b"x" * 100, b"ad"), b"ad")),
        "noise_quantise": _timed(lambda: (discrete_gaussian(3e5, dim), quantise(vec, params)), 10),
        "shamir_split": _timed(lambda: dealer.split_serialised([os.urandom(32), os.urandom(32)])),
        "shamir_reconstruct": _timed(lambda: Reconstructor(rec_points, big.threshold).reconstruct_many(
            [[dealt[p - 1][0] for p in rec_points]])),
        "t_reconstruct": big.threshold,
        "k_unit": k,
    }


def base64_bytes(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def scale_model(dim: int, dropout: float, sizes: tuple[int, ...] = (1_000, 100_000, 1_000_000)) -> None:
    """Bytes and CPU per client and per server per SecAgg+ round, from measured unit costs."""
    u = unit_costs(dim)
    print(f"\nunit costs (d = {dim}): " + ", ".join(
        f"{key} {val * 1e6:.1f} us" if key not in ("k_unit", "t_reconstruct") and not key.endswith("bytes")
        and not key.endswith("level") and not key.endswith("member") and not key.endswith("sender")
        else f"{key} {val:.0f}" for key, val in u.items()))
    print(f"SecAgg+ scale model (dropout {dropout:.0%} after sharing keys; k, t from SparseDesign()):")
    print(f"{'n':>9} {'k':>4} {'t':>3} {'client CPU':>11} {'client sent':>12} {'client recv':>12} "
          f"{'server CPU':>11} {'server sent':>12} {'server recv':>12}")
    for n in sizes:
        g = choose_graph(n, SparseDesign())
        assert g is not None
        k, t = g.neighbours, g.threshold
        levels = max(1, (n - 1).bit_length())
        per_nbr = (u["verify"] + levels * u["sha256"] + 2 * u["x25519"] + u["aead"] + u["prg"]
                   + u["prp"])
        client_cpu = (4 * u["sign"] + k * per_nbr + u["shamir_split"] * (k + 1) / (u["k_unit"] + 1)
                      + u["noise_quantise"] + u["prg"])
        sent = u["advert_bytes"] * 2 + k * u["ciphertext_bytes"] + u["vector_message_bytes"] + k * u["unmask_share_bytes"]
        recv = ((k + 1) * (u["advert_bytes"] + levels * u["proof_bytes_per_level"])
                + (k + 1) * u["inbox_bytes_per_sender"] + (k + 1) * u["survivor_bytes_per_member"])
        surv, dropped = (1 - dropout) * n, dropout * n
        server_cpu = (4 * n * u["verify"] + surv * u["prg"] + n * u["shamir_reconstruct"] * (t / u["t_reconstruct"]) ** 2
                      + dropped * (1 - dropout) * k * (u["x25519"] + u["prg"])
                      + n * (2 + k * levels / 8) * u["sha256"] + n * u["prp"])
        print(f"{n:>9} {k:>4} {t:>3} {client_cpu:>9.3f} s {fmt_bytes(sent):>12} {fmt_bytes(recv):>12} "
              f"{server_cpu:>9.0f} s {fmt_bytes(n * recv):>12} {fmt_bytes(n * sent):>12}")


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
    parser.add_argument("--scale-model", action="store_true",
                        help="only measure unit costs and print the model for 1e3 / 1e5 / 1e6 members")
    args = parser.parse_args()
    if args.scale_model:
        print(f"machine: {machine()}")
        scale_model(args.dim * args.slots, 0.3)
        return
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
