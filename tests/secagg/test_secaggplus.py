"""SecAgg+ (sparse Harary graph) with the real state machines and real cryptography."""

from __future__ import annotations

import base64
import math
import os
from typing import Any

import numpy as np
import pytest

from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.errors import AggregationAborted, CryptoError
from continuum_mcp.secagg import KeyRoster, SecAggClient, SecAggParams, SecAggServer, simulate
from continuum_mcp.secagg._graph import MaskGraph, MerkleTree, _Permutation, round_digest
from continuum_mcp.secagg.guarantees import SparseDesign, choose_graph, guarantee
from continuum_mcp.secagg.messages import advert_leaf

_IDS: list[Identity] = [Identity.generate() for _ in range(200)]


def _params(n: int, dim: int = 16, k: int | None = None, t: int | None = None) -> SecAggParams:
    design = SparseDesign(min_roster=3, neighbours=k, threshold=t)
    return SecAggParams.create("s+", 3, [i.instance_id for i in _IDS[:n]], dim, 1.0, 0.0, sparse=design)


def _inputs(n: int, dim: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    return {i.instance_id: rng.normal(size=dim) / math.sqrt(dim) for i in _IDS[:n]}


def _dropouts(n: int, fraction: float) -> dict[str, Any]:
    points = ("after_share_keys", "after_advertise")
    return {_IDS[n - 1 - j].instance_id: points[j % 2] for j in range(int(round(fraction * n)))}


def _exact(n: int, params: SecAggParams, fraction: float) -> None:
    drops = _dropouts(n, fraction)
    report = simulate(params, _IDS[:n], _inputs(n, params.dim), Verifier(MemoryReplayGuard()), drops)
    res = report.result
    assert res.contributors == sorted(set(params.roster) - set(drops))
    assert sorted(res.recovered_dropouts) == sorted(c for c, p in drops.items() if p == "after_share_keys")
    assert np.array_equal(res.int_sum, sum(report.clients[c].quantised_input for c in res.contributors))
    # Nobody sent more than k ciphertexts: the sharing really is sparse.
    assert all(len(c._points) <= params.neighbours + 1 for c in report.clients.values())


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3])
def test_exact_sum_n50(fraction: float) -> None:
    params = _params(50, k=24, t=7)
    assert params.sparse and params.min_survivors == 34
    _exact(50, params, fraction)


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3])
def test_exact_sum_n200_default_design(fraction: float) -> None:
    params = SecAggParams.create("s+", 3, [i.instance_id for i in _IDS], 16, 1.0, 0.0,
                                 sparse=SparseDesign())
    chosen = choose_graph(200, SparseDesign())
    assert (params.neighbours, params.threshold) == (chosen.neighbours, chosen.threshold)
    assert params.neighbours < 199
    _exact(200, params, fraction)


def test_small_rosters_and_default_params_stay_bonawitz() -> None:
    roster = [i.instance_id for i in _IDS[:50]]
    plain = SecAggParams.create("s", 1, roster, 8, 1.0, 0.5)
    assert not plain.sparse and "neighbours" not in plain.model_dump()
    # Below min_roster the design is ignored: same parameters, same digest, same wire form.
    assert SecAggParams.create("s", 1, roster, 8, 1.0, 0.5, sparse=SparseDesign()) == plain
    assert SecAggParams.create("s", 1, roster, 8, 1.0, 0.5, sparse=SparseDesign()).digest() == plain.digest()
    sparse = _params(50, k=24, t=7)
    assert SecAggParams.model_validate_json(sparse.model_dump_json()).digest() == sparse.digest()
    with pytest.raises(Exception):
        SecAggParams.model_validate({**sparse.model_dump(), "neighbours": 23})  # odd degree
    # A participant refuses a graph thinner than its design implies (or none at all).
    design = SparseDesign(min_roster=3, neighbours=24, threshold=7)
    sparse.require_design(design)
    thin = SecAggParams.model_validate({**sparse.model_dump(), "neighbours": 4, "threshold": 2})
    with pytest.raises(CryptoError, match="design"):
        thin.require_design(design)
    with pytest.raises(CryptoError, match="design"):
        plain.require_design(SparseDesign(min_roster=3, neighbours=24, threshold=7))
    plain.require_design(None)


# --------------------------------------------------------------------------- step by step


class SparseRun:
    def __init__(self, n: int, k: int, t: int) -> None:
        self.ids = _IDS[:n]
        self.params = _params(n, k=k, t=t)
        self.server = SecAggServer(self.params, Verifier(MemoryReplayGuard()),
                                   {i.instance_id: i.public_key for i in self.ids})
        self.clients = {i.instance_id: SecAggClient(i, self.params) for i in self.ids}
        self.inputs = _inputs(n, self.params.dim)
        for cl in self.clients.values():
            self.server.receive_advertisement(cl.advertise_keys())
        self.rosters = self.server.close_key_rosters()

    def share(self, skip: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
        self.shares = {c: cl.share_keys(self.rosters[c]) for c, cl in self.clients.items()}
        for c, msg in self.shares.items():
            if c not in skip:
                self.server.receive_shares(msg)
        return self.server.close_shares()


def test_each_client_deals_only_with_its_neighbours() -> None:
    run = SparseRun(60, k=10, t=5)
    inboxes = run.share()
    k = run.params.neighbours
    for c, cl in run.clients.items():
        holders = run.server.holders(c)
        assert len(holders) == k + 1 and c in holders
        assert cl._points == holders  # the client derived exactly the server's graph and points
        roster = run.rosters[c]
        assert {m.envelope.instance_id for m in roster.adverts} == set(holders)
        assert set(run.shares[c].payload["ciphertexts"]) == set(holders) - {c}
        assert set(inboxes[c].senders) == set(holders)
        assert set(inboxes[c].ciphertexts) == set(holders) - {c}
        for v in holders:  # the relation is symmetric: v holds c's shares iff c holds v's
            assert c in run.server.holders(v)


def test_abort_below_the_neighbour_threshold() -> None:
    run = SparseRun(60, k=10, t=5)
    target = run.params.roster[0]
    neighbours = [v for v in run.server.holders(target) if v != target]
    inboxes = run.share(skip=set(neighbours[: 10 - 5 + 2]))  # t - 1 holders left (with itself)
    with pytest.raises(AggregationAborted, match="shared keys; 5 needed"):
        run.clients[target].masked_input(inboxes[target], run.inputs[target])
    # Server side: a survivor whose holders stay silent while unmasking cannot be unmasked.
    run = SparseRun(60, k=10, t=5)
    inboxes = run.share()
    for c, cl in run.clients.items():
        run.server.receive_masked_input(cl.masked_input(inboxes[c], run.inputs[c]))
    survivors = run.server.close_survivor_lists()
    target = run.params.roster[0]
    silent = [v for v in run.server.holders(target) if v != target][:11 - 5 + 1]  # 4 answer
    for c, cl in run.clients.items():
        if c not in silent:
            run.server.receive_unmasking(cl.unmask(survivors[c]))
    with pytest.raises(AggregationAborted, match="holders of .* answered; 5 are needed"):
        run.server.finalize()


def _forged_roster(run: SparseRun, owner: str, members: list[str]) -> KeyRoster:
    """A key roster for ``owner`` built honestly, except over another list of advertisements."""
    adverts = {m.envelope.instance_id: m for r in run.rosters.values() for m in r.adverts}
    leaves = [advert_leaf(adverts[m]) for m in members]
    tree = MerkleTree(leaves)
    digest = round_digest(run.params.digest(), tree.root)
    graph = MaskGraph(tree.size, run.params.neighbours, bytes.fromhex(digest))
    indices = sorted(graph.closed(members.index(owner)))
    return KeyRoster(session_id=run.params.session_id, round_id=run.params.round_id,
                     adverts=[adverts[members[j]] for j in indices], recipient=owner,
                     roster_root=base64.b64encode(tree.root).decode(), roster_size=tree.size,
                     leaf_indices=indices,
                     proofs=[base64.b64encode(b"".join(tree.proof(j))).decode() for j in indices])


def _twin(run: SparseRun, owner: str) -> SecAggClient:
    """A fresh client state for ``owner`` at step 1 with the keys it advertised (one client
    state machine takes each step once, so every forged roster gets its own twin)."""
    original = run.clients[owner]
    twin = SecAggClient(original.identity, run.params)
    twin._c_key, twin._s_key, twin._step = original._c_key, original._s_key, 1
    return twin


def test_the_server_cannot_choose_the_graph() -> None:
    run = SparseRun(40, k=8, t=4)
    owner = run.params.roster[5]
    u1 = sorted(run.clients)
    honest = _forged_roster(run, owner, u1)
    assert honest == run.rosters[owner]  # the forger reproduces the honest roster exactly
    # Another leaf order: the client sees leaves out of id order.
    with pytest.raises(CryptoError, match="not in id order"):
        _twin(run, owner).share_keys(_forged_roster(run, owner, u1[::-1]))
    # A proof that does not lead to the committed root.
    bad = honest.model_copy(update={"proofs": [honest.proofs[1], *honest.proofs[1:]]})
    with pytest.raises(CryptoError, match="Merkle proof"):
        _twin(run, owner).share_keys(bad)
    # A neighbour left out, or a stranger swapped in, is not this client's neighbourhood.
    short = honest.model_copy(update={k: v[:-1] for k, v in
                                      (("adverts", honest.adverts), ("leaf_indices", honest.leaf_indices),
                                       ("proofs", honest.proofs))})
    with pytest.raises(CryptoError, match="graph neighbours"):
        _twin(run, owner).share_keys(short)
    # A substituted key breaks the signature (and the Merkle leaf).
    adverts = list(honest.adverts)
    adverts[0] = adverts[0].model_copy(update={"payload": {**adverts[0].payload,
                                                           "s_public_key": adverts[1].payload["s_public_key"]}})
    with pytest.raises(CryptoError):
        _twin(run, owner).share_keys(honest.model_copy(update={"adverts": adverts}))
    # Omitting an advertiser gives a valid-looking roster with another graph, but another round
    # digest: the honest server (and every neighbour) rejects what the client then sends.
    fewer = [m for m in u1 if m != u1[-1]]
    msg = _twin(run, owner).share_keys(_forged_roster(run, owner, fewer))
    with pytest.raises(CryptoError, match="different aggregation parameters"):
        run.server.receive_shares(msg)


def test_the_graph_is_a_k_regular_permuted_harary_graph() -> None:
    for size in (1, 2, 3, 7, 64, 65, 300):
        perm = _Permutation(os.urandom(32), size)
        image = [perm(i) for i in range(size)]
        assert sorted(image) == list(range(size))
        assert [perm.inverse(y) for y in image] == list(range(size))
    graph = MaskGraph(101, 10, os.urandom(32))
    closed = graph.all_closed()
    for i in range(101):
        assert closed[i] == graph.closed(i)  # the server's one-pass view equals each client's
        assert len(closed[i]) == 11 and closed[i][i] == 6
        for j, point in closed[i].items():
            assert closed[j][i] == graph.mirror_point(point, i)
    # Two seeds give different graphs: the graph depends on the committed roster.
    assert MaskGraph(101, 10, os.urandom(32)).all_closed() != closed


# --------------------------------------------------------------------------- the guarantees


def _honest_survivors_connected(graph: MaskGraph, good: np.ndarray) -> bool:
    nodes = np.flatnonzero(good)
    if nodes.size == 0:
        return True
    seen, stack = {int(nodes[0])}, [int(nodes[0])]
    while stack:
        for j in graph.neighbour_indices(stack.pop()):
            if good[j] and j not in seen:
                seen.add(j)
                stack.append(j)
    return len(seen) == nodes.size


@pytest.mark.slow
def test_bounds_hold_on_sampled_graphs() -> None:
    """The union bounds of ``guarantees`` against 200 sampled graphs, corrupt and dropout sets,
    at a small k where the events are frequent enough to count."""
    n, k, trials = 100, 8, 200
    design = SparseDesign(dropout=0.3, corrupt=0.1)
    rng = np.random.default_rng(7)
    for t in (3, 4):
        g = guarantee(n, k, t, design)
        corrupt_hits = fail_hits = split_hits = 0
        for _ in range(trials):
            graph = MaskGraph(n, k, rng.bytes(32))
            corrupt = np.zeros(n, bool)
            corrupt[rng.choice(n, int(design.corrupt * n), replace=False)] = True
            dropped = np.zeros(n, bool)
            dropped[rng.choice(n, int(design.dropout * n), replace=False)] = True
            nbrs = [graph.neighbour_indices(i) for i in range(n)]
            corrupt_hits += any(corrupt[nbrs[i]].sum() >= t for i in range(n) if not corrupt[i])
            fail_hits += any((~dropped[nbrs[i]]).sum() < t for i in range(n))
            split_hits += not _honest_survivors_connected(graph, ~corrupt & ~dropped)
        for hits, bound in ((corrupt_hits, g.p_corrupt_threshold), (fail_hits, g.p_failure),
                            (split_hits, g.p_disconnected)):
            slack = 3 * math.sqrt(max(bound, 1 / trials) / trials)
            assert hits / trials <= min(1.0, bound) + slack, (t, hits, bound)
        assert corrupt_hits + fail_hits > 0  # the regime is one where the events do occur


def test_chosen_parameters_meet_the_targets_and_grow_like_log_n() -> None:
    design = SparseDesign()
    chosen = {n: choose_graph(n, design) for n in (1_000, 100_000, 1_000_000)}
    for n, g in chosen.items():
        assert g is not None and g.neighbours % 2 == 0
        assert g.p_privacy_loss <= 2.0**-design.privacy_bits
        assert g.p_failure <= 2.0**-design.failure_bits
        # The next smaller k meets no threshold: the choice is the smallest that works.
        assert all(
            guarantee(n, g.neighbours - 2, t, design).p_privacy_loss > 2.0**-40
            or guarantee(n, g.neighbours - 2, t, design).p_failure > 2.0**-20
            for t in range(1, g.neighbours - 1)
        )
    assert chosen[1_000_000].neighbours < 1.5 * chosen[1_000].neighbours  # O(log n), not O(n)
