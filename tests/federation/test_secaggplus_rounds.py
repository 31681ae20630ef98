"""Rounds above the coordinator's SecAgg+ threshold use the sparse graph; participants check it.

The coordinator's ``secaggplus_min_roster`` (200 by default) is set low here so a small roster
runs SecAgg+ with a small fixed k; members take part with real ``SecAggClient``s after checking
the round with ``check_params`` against the same design, and everything after the secure sum
(dropouts, release, carry-over) is the unchanged engine.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.errors import CryptoError
from continuum_mcp.federation.coordinator import CoordinatorConfig, CoordinatorService, CoordinatorStore, RoundEngine
from continuum_mcp.federation.coordinator.release import discrete_noise
from continuum_mcp.federation.participant import RoundExpectations, check_params, round_params
from continuum_mcp.federation.protocol import ContributionRequest, PatternSubmission, PhraseSubmission, RoundState
from continuum_mcp.privacy.modes import default_policy
from continuum_mcp.secagg import SecAggClient, SecAggServer, SignedMessage, SparseDesign

SLOTS, DIM, FED = 4, 8, "fed-plus"
MODE = default_policy().mode("open")
#: a small fixed graph for a small roster (a real federation lets choose_graph pick k for n >= 200)
SMALL = SparseDesign(min_roster=5, neighbours=4, threshold=2)


def expect(design: SparseDesign | None) -> RoundExpectations:
    return RoundExpectations.for_mode(FED, SLOTS, DIM, MODE, sparse=design)


def state(params_json: dict[str, object], round_id: int = 0) -> RoundState:
    return RoundState(round_id=round_id, attempt=0, phase="advertise", phase_deadline=None, submissions=None,
                      you_submitted=True, you_in_roster=True, you_pending="advertise", params=params_json,
                      epsilon_spent=None)


@pytest.mark.usefixtures("backend")
def test_a_round_above_the_threshold_runs_secaggplus_and_releases_with_a_dropout(tmp_path: Path) -> None:
    config = CoordinatorConfig(storage_path=tmp_path, federation_id=FED, privacy_mode="open", min_contributors=3,
                               slots=SLOTS, dim=DIM, round_interval_seconds=100, phase_timeout_seconds=10,
                               secaggplus_min_roster=5, secaggplus_design=SparseDesign(neighbours=4, threshold=2))
    store = CoordinatorStore.from_config(config)
    store.ensure_federation(FED)
    t = [time.time()]
    engine = RoundEngine(store, config, Verifier(MemoryReplayGuard()), default_policy(), now=lambda: t[0],
                         noise=discrete_noise(np.random.default_rng(1)))
    engine.recover()
    who = [Identity.generate() for _ in range(14)]  # 13 contributors release a phrase above open mode's tau
    for m in who:
        store.admit(m.instance_id, m.public_key, "standard", "open", None, private=False, now=t[0])
        engine.submit(m.instance_id, ContributionRequest(round_id=0, patterns=[PatternSubmission(
            slot=2, confidence=0.9, phrases=[PhraseSubmission(token="cd" * 32, ciphertext="Y3Q=")])]))
    engine.close_round()
    st = engine.state(None)
    for m in who:  # every member accepts the round against the federation's design
        params = check_params(st, m.instance_id, expect(SMALL))
    assert params.sparse and params.neighbours == 4 and params.threshold == 2 and params.min_survivors == 10
    clients = {m.instance_id: SecAggClient(m, params) for m in who}
    ids = sorted(clients)
    log: list[tuple[str, str, SignedMessage]] = []

    def post(kind: str, m: str, msg: SignedMessage) -> None:
        engine.receive(0, kind, m, msg)
        log.append((kind, m, msg))

    for m in ids:
        post("advertise", m, clients[m].advertise_keys())
    for m in ids:
        roster = engine.key_roster(0, m)
        assert roster.recipient == m and len(roster.adverts) == 5  # its closed neighbourhood, not everyone
        post("share_keys", m, clients[m].share_keys(roster))
    rng = np.random.default_rng(7)
    common = rng.standard_normal(DIM)
    total = np.zeros(DIM)
    dropout = ids[3]
    for m in ids:
        if m == dropout:
            continue  # goes away after sharing its keys: its masks are removed from its neighbours' shares
        x = np.zeros(params.dim)
        x[2 * DIM:3 * DIM] = common + 0.5 * rng.standard_normal(DIM)
        x *= params.clip_norm / np.linalg.norm(x)
        total += x[2 * DIM:3 * DIM]
        post("masked_input", m, clients[m].masked_input(engine.inbox(0, m), x))
    t[0] += 11
    engine.tick()  # the masked-input deadline passes without the dropout
    for m in ids:
        if m != dropout:
            post("unmask", m, clients[m].unmask(engine.survivors(0, m)))
    final = engine.state(None, 0)
    assert final.phase == "released" and final.submissions == 13
    released = {s.slot: np.asarray(s.vector)
                for s in CoordinatorService(config, store, engine, engine.policy).slots().slots}
    # exactly the sum a lone SecAggServer computes from the same messages (its sums are exact, tested
    # with sigma = 0 in tests/secagg), released as the unit vector of the slot's noisy block ...
    ref = SecAggServer(params, Verifier(MemoryReplayGuard()), {m.instance_id: m.public_key for m in who})
    steps = [ref.close_key_rosters, ref.close_shares, ref.close_survivor_lists, ref.finalize]
    for kind, step in zip(("advertise", "share_keys", "masked_input", "unmask"), steps, strict=True):
        for k, _m, msg in log:
            if k == kind:
                {"advertise": ref.receive_advertisement, "share_keys": ref.receive_shares,
                 "masked_input": ref.receive_masked_input, "unmask": ref.receive_unmasking}[k](msg)
        result = step()
    block = np.asarray(result.float_sum[2 * DIM:3 * DIM])  # type: ignore[union-attr]
    assert result.recovered_dropouts == [dropout]  # type: ignore[union-attr]
    assert np.allclose(released[2], block / np.linalg.norm(block), atol=1e-6)
    # ... which points the survivors' way (the mode's DP noise is about a third of the signal here)
    assert float(released[2] @ (total / np.linalg.norm(total))) > 0.5
    assert store.pending_snapshot(dropout) == [(1, 0, 2)]  # the dropout's submission waits for round 1


def test_rosters_below_the_threshold_keep_bonawitz() -> None:
    roster = [Identity.generate().instance_id for _ in range(8)]
    params = round_params(FED, 0, 0, roster, SLOTS, DIM, MODE, sparse=SparseDesign(min_roster=9, neighbours=4,
                                                                                    threshold=2))
    assert not params.sparse and params.threshold == 6
    assert params == round_params(FED, 0, 0, roster, SLOTS, DIM, MODE)  # the same parameters and digest as before


def test_a_participant_refuses_a_smaller_k_or_t_than_its_design_implies() -> None:
    roster = [Identity.generate().instance_id for _ in range(8)]
    me = roster[0]
    sparse = round_params(FED, 0, 0, roster, SLOTS, DIM, MODE, sparse=SMALL).model_dump(mode="json")
    assert check_params(state(sparse), me, expect(SMALL)).neighbours == 4
    for design, why in [(SparseDesign(min_roster=5, neighbours=6, threshold=2), "k 4 < 6"),
                        (SparseDesign(min_roster=5, neighbours=4, threshold=3), "t 2 < 3"),
                        (SparseDesign(), "SecAgg+ below the design's 200 members"),
                        (None, "a client that accepts only the complete graph")]:
        with pytest.raises(CryptoError, match="graph is not the one the design implies"):
            check_params(state(sparse), me, expect(design))
        # Bonawitz (every member keyed to every other, t = ceil(2n/3)) is always accepted: it is stronger
        bonawitz = round_params(FED, 0, 0, roster, SLOTS, DIM, MODE).model_dump(mode="json")
        assert not check_params(state(bonawitz), me, expect(design)).sparse, why
    # a server that keeps the design's graph but lowers the global survivor floor (less noise per client)
    lowered = dict(sparse, min_survivors=4)
    with pytest.raises(CryptoError):
        check_params(state(lowered), me, expect(SMALL))


@pytest.mark.slow
def test_the_default_design_at_250_members_is_accepted_by_default_participants() -> None:
    roster = sorted(Identity.generate().instance_id for _ in range(250))
    config = CoordinatorConfig(federation_id=FED, privacy_mode="open", slots=SLOTS, dim=DIM)
    params = round_params(FED, 0, 0, roster, SLOTS, DIM, MODE, sparse=config.sparse_design())
    assert params.sparse and params.neighbours is not None and params.neighbours < 100
    assert check_params(state(params.model_dump(mode="json")), roster[0], expect(SparseDesign())) == params
