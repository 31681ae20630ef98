"""The coordinator's round engine as a state machine: no HTTP server, an injected clock.

Real store (SQLite in tmp_path), real identities, real secure aggregation state machines
(``SecAggClient`` on the member side, the engine's ``SecAggServer``); only time is ours.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.federation.coordinator import CoordinatorConfig, CoordinatorService, CoordinatorStore, RoundEngine
from continuum_mcp.federation.coordinator import _attempt_sql as asql
from continuum_mcp.federation.coordinator.release import IntNoise, discrete_noise
from continuum_mcp.federation.protocol import ContributionRequest, PatternSubmission, PhraseSubmission
from continuum_mcp.privacy.modes import default_policy
from continuum_mcp.secagg import SecAggClient, SecAggParams

#: every test runs on both coordinator backends (SQLite, PostgreSQL: tests/conftest.py)
pytestmark = pytest.mark.usefixtures("backend")

SLOTS, DIM = 4, 8


class Clock:
    """Engine time, advanced by the test (starts at the wall clock so signatures stay fresh)."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_engine(storage: Path, clock: Clock, noise: IntNoise | None = None, **options: object) -> RoundEngine:
    config = CoordinatorConfig(storage_path=storage, federation_id="fed-engine", privacy_mode="open",
                               min_contributors=3, slots=SLOTS, dim=DIM, round_interval_seconds=100,
                               phase_timeout_seconds=10, **options)  # type: ignore[arg-type]
    store = CoordinatorStore.from_config(config)
    store.ensure_federation(config.federation_id)
    engine = RoundEngine(store, config, Verifier(MemoryReplayGuard()), default_policy(), now=clock, noise=noise)
    engine.recover()
    return engine


def members(engine: RoundEngine, n: int) -> list[Identity]:
    out = []
    for _ in range(n):
        ident = Identity.generate()
        engine.store.admit(ident.instance_id, ident.public_key, "standard", "open", None, private=False,
                           now=engine.now())
        out.append(ident)
    return out


def submit(engine: RoundEngine, who: list[Identity], slot: int = 1) -> None:
    round_id = engine.state(None).round_id
    for ident in who:
        engine.submit(ident.instance_id, ContributionRequest(
            round_id=round_id, patterns=[PatternSubmission(slot=slot, confidence=0.9, phrases=[])]))


def vector(params: SecAggParams, slot: int, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(params.dim)
    x[slot * DIM:(slot + 1) * DIM] = rng.standard_normal(DIM)
    return x * (params.clip_norm / np.linalg.norm(x))


def s_norm(v: list[float]) -> float:
    return float(np.linalg.norm(np.asarray(v)))


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def test_round_closes_on_schedule_and_not_before(tmp_path: Path, clock: Clock) -> None:
    engine = make_engine(tmp_path, clock)
    submit(engine, members(engine, 3))
    clock.advance(99)
    engine.tick()
    assert engine.state(None).phase == "collecting"
    clock.advance(2)
    engine.tick()
    st = engine.state(None)
    assert st.phase == "advertise" and st.round_id == 0
    assert SecAggParams.model_validate(st.params).n == 3


def test_too_few_submitters_carry_over_and_lose_nothing(tmp_path: Path, clock: Clock) -> None:
    engine = make_engine(tmp_path, clock)
    who = members(engine, 2)  # below the roster floor max(3, min_contributors)
    submit(engine, who)
    clock.advance(101)
    engine.tick()
    st = engine.state(None)
    assert (st.round_id, st.phase, st.submissions) == (0, "collecting", 2)
    row = engine.store.current_round()
    assert row is not None and row.next_close_at == pytest.approx(clock.t + 100)
    assert engine.store.pending_snapshot(who[0].instance_id) == [(0, 0, 1)]
    submit(engine, members(engine, 1))  # a third submitter arrives: the next close fixes a roster
    clock.advance(101)
    engine.tick()
    assert engine.state(None).phase == "advertise"


def test_too_few_survivors_abort_and_carry_submissions_over(tmp_path: Path, clock: Clock) -> None:
    engine = make_engine(tmp_path, clock)
    who = members(engine, 3)
    submit(engine, who)
    engine.close_round()
    params = engine.current_params()
    assert params is not None
    first = SecAggClient(who[0], params)
    engine.receive(0, "advertise", who[0].instance_id, first.advertise_keys())  # the other two never post
    clock.advance(9)
    engine.tick()
    assert engine.state(None, 0).phase == "advertise"
    clock.advance(2)
    engine.tick()
    assert engine.state(None, 0).phase == "aborted"
    with engine.store.reading() as conn:  # the aborted attempt's log is gone with it (superseded)
        assert asql.records_after(conn, params.session_id, -1) == []
    nxt = engine.state(None)
    assert (nxt.round_id, nxt.phase, nxt.submissions) == (1, "collecting", 3)
    assert engine.store.pending_snapshot(who[1].instance_id) == [(1, 0, 1)]  # ciphertexts stay bound to round 0


def test_full_round_in_process_releases_and_opens_the_next(tmp_path: Path, clock: Clock) -> None:
    # release v2: a slot is released only with one of its phrases (no separate slot selection), and
    # open mode's phrases need tau = 7 under DP: 12 members share one phrase, the noise is seeded
    engine = make_engine(tmp_path, clock, noise=discrete_noise(np.random.default_rng(1)))
    who = members(engine, 12)
    round_id = engine.state(None).round_id
    for ident in who:
        engine.submit(ident.instance_id, ContributionRequest(round_id=round_id, patterns=[PatternSubmission(
            slot=2, confidence=0.9, phrases=[PhraseSubmission(token="ab" * 32, ciphertext="Y3Q=")])]))
    engine.close_round()
    params = engine.current_params()
    assert params is not None
    rng = np.random.default_rng(3)
    clients = {m.instance_id: SecAggClient(m, params) for m in who}
    for m in who:
        engine.receive(0, "advertise", m.instance_id, clients[m.instance_id].advertise_keys())
    for m in who:
        engine.receive(0, "share_keys", m.instance_id,
                       clients[m.instance_id].share_keys(engine.key_roster(0, m.instance_id)))
    for m in who:
        inbox = engine.inbox(0, m.instance_id)
        engine.receive(0, "masked_input", m.instance_id,
                       clients[m.instance_id].masked_input(inbox, vector(params, 2, rng)))
    for m in who:
        engine.receive(0, "unmask", m.instance_id, clients[m.instance_id].unmask(engine.survivors(0, m.instance_id)))
    st = engine.state(who[0].instance_id, 0)
    assert st.phase == "released" and st.submissions is None and st.you_submitted  # a member sees only itself
    assert engine.state(None, 0).submissions == 12  # the operator sees the count
    assert engine.state(None).round_id == 1
    slots = CoordinatorService(engine.config, engine.store, engine, engine.policy).slots().slots
    assert [s.slot for s in slots] == [2] and s_norm(slots[0].vector) == pytest.approx(1.0, abs=1e-5)
    assert slots[0].released_at_round == 0


def test_contributions_racing_a_round_close_are_in_its_roster_or_refused(tmp_path: Path, clock: Clock) -> None:
    """Contributions take only their member's lock, never the store's: still, none acknowledged for
    a round may miss its roster. Members re-post in a loop on one engine while another engine on
    the same database (a second process) closes the round once posts are being acknowledged: every
    acknowledged member is in the roster, and every member's next post after the close is refused
    with WrongPhase (each member posts until it is refused, so the close always lands mid-stream)."""
    import threading

    from continuum_mcp.errors import WrongPhase

    engine = make_engine(tmp_path, clock)
    closer = make_engine(tmp_path, clock)
    who = members(engine, 12)
    acked: set[str] = set()
    refused: set[str] = set()
    start = threading.Barrier(len(who) + 1)
    posting = threading.Event()
    deadline = time.monotonic() + 120  # a close that never lands fails the test instead of hanging

    def post(ident: Identity) -> None:
        start.wait()
        while time.monotonic() < deadline:
            try:
                engine.submit(ident.instance_id, ContributionRequest(
                    round_id=0, patterns=[PatternSubmission(slot=1, confidence=0.9, phrases=[])]))
            except WrongPhase:
                refused.add(ident.instance_id)
                return
            acked.add(ident.instance_id)
            if len(acked) >= 3:
                posting.set()
            time.sleep(0.001)  # a real client does not spin: leave the closer room to take the lock

    threads = [threading.Thread(target=post, args=(m,)) for m in who]
    for t in threads:
        t.start()
    start.wait()
    assert posting.wait(60), "no contribution was acknowledged"
    closer.close_round()
    for t in threads:
        t.join()
    params = closer.current_params()
    assert params is not None
    assert len(acked) >= 3 and acked <= set(params.roster)  # nothing acknowledged is left out of the round
    assert refused == {m.instance_id for m in who}  # after the close, every member's post is refused
    engine.store.close()
    closer.store.close()
