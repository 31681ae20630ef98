"""Slot ids carry the codebook version: a coordinator whose codebook in use is a learned version
accepts, aggregates, lists and serves only that version's tagged ids (``tag << 12 | index``), so
releases under two versions never mix. Real engine and service on real SQLite, real SecAggClients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.coordinator import CoordinatorConfig, CoordinatorService, CoordinatorStore, RoundEngine
from continuum_mcp.federation.coordinator.release import discrete_noise
from continuum_mcp.federation.protocol import ContributionRequest, PatternSubmission, PhraseSubmission, QueryRequest
from continuum_mcp.privacy.codebook import slot_id, split_slot_id, version_tag
from continuum_mcp.privacy.modes import default_policy
from continuum_mcp.secagg import SecAggClient

SLOTS, DIM, FED = 4, 8, "fed-versions"
pytestmark = pytest.mark.usefixtures("backend")  # SQLite file and PostgreSQL (slot ids above 2^31)
LEARNED = "c-" + "5f" * 12  # a learned codebook version's id (its slot ids are above 2^31)


def request(slot: int, round_id: int = 0) -> ContributionRequest:
    return ContributionRequest(round_id=round_id, patterns=[PatternSubmission(
        slot=slot, confidence=0.9, phrases=[PhraseSubmission(token="ab" * 32, ciphertext="Y3Q=")])])


def test_a_learned_version_s_round_takes_releases_and_serves_only_its_tagged_ids(tmp_path: Path) -> None:
    config = CoordinatorConfig(storage_path=tmp_path, federation_id=FED, privacy_mode="open", min_contributors=3,
                               slots=SLOTS, dim=DIM, codebook_version=LEARNED, require_contribution=False)
    store = CoordinatorStore.from_config(config)
    store.ensure_federation(FED)
    engine = RoundEngine(store, config, Verifier(MemoryReplayGuard()), default_policy(),
                         noise=discrete_noise(np.random.default_rng(1)))
    engine.recover()
    service = CoordinatorService(config, store, engine, engine.policy)
    engine.codebook_version = lambda: service.codebook_in_use()[0]  # as the coordinator node wires it
    sid = slot_id(LEARNED, 2)
    assert split_slot_id(sid) == (version_tag(LEARNED), 2) and sid >= 1 << 31
    who = [Identity.generate() for _ in range(12)]  # open mode releases a phrase above tau = 7
    stale = Identity.generate()
    for m in (*who, stale):
        store.admit(m.instance_id, m.public_key, "standard", "open", None, private=False, now=engine.now())
    with pytest.raises(InvalidInput, match="slot id of the codebook in use"):
        service.contribute(who[0].instance_id, request(2))  # v0's id of the same index
    assert store.pending_snapshot(who[0].instance_id) == []
    for m in who:
        assert service.contribute(m.instance_id, request(sid)).accepted_patterns == 1
    engine.submit(stale.instance_id, request(2))  # pending from before the adoption, under v0
    engine.close_round()
    params = engine.current_params()
    assert params is not None and sorted(params.roster) == sorted(m.instance_id for m in who)
    assert store.pending_snapshot(stale.instance_id) == []  # a round aggregates one version: dropped
    clients = {m.instance_id: SecAggClient(m, params) for m in who}
    rng = np.random.default_rng(3)
    common = rng.standard_normal(DIM)
    for m in clients:
        engine.receive(0, "advertise", m, clients[m].advertise_keys())
    for m in clients:
        engine.receive(0, "share_keys", m, clients[m].share_keys(engine.key_roster(0, m)))
    for m in clients:  # the secure sum is laid out by slot index: block 2
        x = np.zeros(params.dim)
        x[2 * DIM:3 * DIM] = common + 0.3 * rng.standard_normal(DIM)
        engine.receive(0, "masked_input", m, clients[m].masked_input(engine.inbox(0, m), x * params.clip_norm
                                                                     / np.linalg.norm(x)))
    for m in clients:
        engine.receive(0, "unmask", m, clients[m].unmask(engine.survivors(0, m)))
    assert engine.state(None, 0).phase == "released"
    listed = service.slots()
    assert listed.codebook_version == LEARNED and [s.slot for s in listed.slots] == [sid]
    assert float(np.dot(listed.slots[0].vector, common / np.linalg.norm(common))) > 0.9  # the block's centroid
    got = service.query(who[0].instance_id, QueryRequest(slots=[2, sid, 3]))
    assert [p.slot for p in got.patterns] == [sid] and got.patterns[0].pattern_id == f"p-{sid}"
