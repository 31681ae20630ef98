"""The secure-aggregation attempt lives in the store, not in a process.

Several coordinator processes on one database: every request may land on any of them, and one may
be killed mid-round. Here two ``RoundEngine`` objects each open the same SQLite file through their
own ``CoordinatorStore`` (their own connection: exactly what two processes do; SQLite WAL and
``BEGIN IMMEDIATE`` serialise them), and members alternate between them message by message; a
subprocess coordinator is SIGKILLed after accepting the masked inputs and the other one finishes.
Real identities, real ``SecAggClient``s, real SQLite; only the clock is injected where deadlines matter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.errors import Conflict
from continuum_mcp.federation.coordinator import CoordinatorConfig, CoordinatorService, CoordinatorStore, RoundEngine
from continuum_mcp.federation.coordinator import _attempt_sql as asql
from continuum_mcp.federation.coordinator.release import discrete_noise
from continuum_mcp.federation.protocol import ContributionRequest, PatternSubmission, PhraseSubmission
from continuum_mcp.privacy.modes import default_policy
from continuum_mcp.secagg import SecAggClient, SecAggParams, SignedMessage, SparseDesign

SLOTS, DIM, FED = 4, 8, "fed-durable"
#: every test runs on both coordinator backends (SQLite files, PostgreSQL: tests/conftest.py); the
#: engines of one test share its database, as processes behind a load balancer do
pytestmark = pytest.mark.usefixtures("backend")


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def engine(storage: Path, clock: Clock | None = None, **options: object) -> RoundEngine:
    config = CoordinatorConfig(storage_path=storage, federation_id=FED, privacy_mode="open", min_contributors=3,
                               slots=SLOTS, dim=DIM, round_interval_seconds=100, phase_timeout_seconds=10,
                               **options)  # type: ignore[arg-type]
    store = CoordinatorStore.from_config(config)
    store.ensure_federation(FED)
    e = RoundEngine(store, config, Verifier(MemoryReplayGuard()), default_policy(), now=clock or time.time,
                    noise=discrete_noise(np.random.default_rng(1)))
    e.recover()
    return e


def founded(storage: Path, who: list[Identity], clock: Clock | None = None, **options: object) -> RoundEngine:
    """A coordinator whose members all submitted one pattern (slot 2, one shared phrase)."""
    e = engine(storage, clock, **options)
    for m in who:
        e.store.admit(m.instance_id, m.public_key, "standard", "open", None, private=False, now=e.now())
        e.submit(m.instance_id, ContributionRequest(round_id=0, patterns=[PatternSubmission(
            slot=2, confidence=0.9, phrases=[PhraseSubmission(token="ab" * 32, ciphertext="Y3Q=")])]))
    return e


def inputs(params: SecAggParams, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    common = rng.standard_normal(DIM)  # one shared direction, so the mean stands out of the DP noise
    out = []
    for _ in range(n):
        x = np.zeros(params.dim)
        x[2 * DIM:3 * DIM] = common + 0.5 * rng.standard_normal(DIM)
        out.append(x * (params.clip_norm / np.linalg.norm(x)))
    return out


def log_of(e: RoundEngine, session_id: str) -> list[asql.LogRecord]:
    with e.store.reading() as conn:
        return asql.records_after(conn, session_id, -1)


def released_slots(e: RoundEngine) -> dict[int, list[float]]:
    return {s.slot: s.vector for s in CoordinatorService(e.config, e.store, e, e.policy).slots().slots}


def released_alone(storage: Path, who: list[Identity], log: list[tuple[str, str, SignedMessage]],
                   **options: object) -> dict[int, list[float]]:
    """What one process on its own database (a SQLite file) releases from the same messages (the reference)."""
    one = founded(storage, who, database=None, **options)
    one.close_round()
    for kind, member, msg in log:
        one.receive(0, kind, member, msg)
    assert one.state(None, 0).phase == "released"
    return released_slots(one)


#: SecAgg+ from 5 members on, with a small fixed graph: per-member rosters, inboxes and survivor lists
SPARSE = dict(secaggplus_min_roster=5, secaggplus_design=SparseDesign(neighbours=4, threshold=2))


@pytest.mark.parametrize("graph", ["bonawitz", "secaggplus"])
def test_members_alternating_between_two_processes_release_what_one_process_releases(tmp_path: Path,
                                                                                     graph: str) -> None:
    options = SPARSE if graph == "secaggplus" else {}
    who = [Identity.generate() for _ in range(12)]  # open mode releases a phrase above tau = 7
    a = founded(tmp_path / "shared", who, **options)
    b = engine(tmp_path / "shared", **options)  # a second process on the same database
    a.close_round()
    params = b.current_params()  # b learns the attempt a opened from the store alone
    assert params is not None and params == a.current_params() and params.sparse == (graph == "secaggplus")
    clients = {m.instance_id: SecAggClient(m, params) for m in who}
    xs = dict(zip(clients, inputs(params, len(who)), strict=True))
    log: list[tuple[str, str, SignedMessage]] = []
    k = 0

    def post(kind: str, member: str, msg: SignedMessage) -> None:
        nonlocal k
        (a, b)[k % 2].receive(0, kind, member, msg)  # message by message, alternately
        log.append((kind, member, msg))
        k += 1

    for m in clients:
        post("advertise", m, clients[m].advertise_keys())
    for m in clients:  # each member reads its roster from the process it did *not* post to
        post("share_keys", m, clients[m].share_keys((b, a)[k % 2].key_roster(0, m)))
    for m in clients:
        post("masked_input", m, clients[m].masked_input((b, a)[k % 2].inbox(0, m), xs[m]))
    assert a.state(None, 0).phase == b.state(None, 0).phase == "unmask"
    for m in clients:
        post("unmask", m, clients[m].unmask((b, a)[k % 2].survivors(0, m)))
    for e in (a, b):
        st = e.state(None, 0)
        assert st.phase == "released" and st.submissions == 12
    assert a.current_params() is None and b.state(None).round_id == 1
    two = released_slots(b)
    assert two == released_slots(a) and list(two) == [2]

    # the same messages through one process on its own database release exactly the same centroid
    assert released_alone(tmp_path / "alone", who, log, **options) == two


def test_a_deadline_is_taken_once_by_whichever_process_ticks_first(tmp_path: Path) -> None:
    clock = Clock()
    who = [Identity.generate() for _ in range(5)]
    a = founded(tmp_path, who, clock)
    b = engine(tmp_path, clock)
    clock.t += 101
    b.tick()  # the schedule: b fixes the roster
    a.tick()  # a finds it taken
    params = a.current_params()
    assert params is not None and params.session_id == f"{FED}/r0/a0"
    clients = {m.instance_id: SecAggClient(m, params) for m in who}
    for m in clients:
        a.receive(0, "advertise", m, clients[m].advertise_keys())
    for m in clients:
        b.receive(0, "share_keys", m, clients[m].share_keys(a.key_roster(0, m)))
    late = sorted(clients)[0]  # drops out before its masked input
    for m, x in zip(sorted(clients)[1:], inputs(params, 4), strict=True):
        (a if m < sorted(clients)[3] else b).receive(0, "masked_input", m, clients[m].masked_input(b.inbox(0, m), x))
    clock.t += 11
    for e in (b, a, b):  # three ticks at the deadline: one phase close
        e.tick()
    st = a.state(late, 0)
    assert st.phase == "unmask" and st.you_pending is None
    with a.store.reading() as conn:
        closes = [r for r in asql.records_after(conn, params.session_id, -1) if r.kind == "close"]
    assert [json.loads(r.body)["closed"] for r in closes] == ["advertise", "share_keys", "masked_input"]
    assert json.loads(closes[-1].body)["expected"] == sorted(clients)[1:]
    for m in sorted(clients)[1:]:
        (b if m < sorted(clients)[3] else a).receive(0, "unmask", m, clients[m].unmask(a.survivors(0, m)))
    assert b.state(None, 0).phase == "released"
    assert a.store.pending_snapshot(late) == [(1, 0, 2)]  # the dropout's submission carries over


def test_a_message_accepted_by_one_process_is_refused_by_the_other(tmp_path: Path) -> None:
    who = [Identity.generate() for _ in range(3)]
    a = founded(tmp_path, who)
    b = engine(tmp_path)
    a.close_round()
    params = a.current_params()
    assert params is not None
    c = SecAggClient(who[0], params)
    msg = c.advertise_keys()
    a.receive(0, "advertise", who[0].instance_id, msg)
    with pytest.raises(Conflict):
        b.receive(0, "advertise", who[0].instance_id, msg)
    st = b.state(who[0].instance_id, 0)
    assert st.phase == "advertise" and st.you_pending is None


def test_restart_mid_aggregation_continues_the_same_attempt_and_its_log_goes_at_release(tmp_path: Path) -> None:
    who = [Identity.generate() for _ in range(4)]
    e = founded(tmp_path, who)
    e.close_round()
    params = e.current_params()
    assert params is not None
    clients = {m.instance_id: SecAggClient(m, params) for m in who}
    for m in clients:
        e.receive(0, "advertise", m, clients[m].advertise_keys())
    half = sorted(clients)[:2]
    for m in half:
        e.receive(0, "share_keys", m, clients[m].share_keys(e.key_roster(0, m)))
    e.store.close()  # the only process dies
    again = engine(tmp_path)
    st = again.state(None)
    assert (st.round_id, st.phase, st.attempt) == (0, "share_keys", 0)
    # the restarted process continued from the log: open, 4 keys, their close, 2 shares
    assert [r.kind for r in log_of(again, params.session_id)] == ["open", *["advertise"] * 4, "close",
                                                                  *["share_keys"] * 2]
    for m in sorted(clients)[2:]:
        again.receive(0, "share_keys", m, clients[m].share_keys(again.key_roster(0, m)))
    for m, x in zip(clients, inputs(params, 4), strict=True):
        again.receive(0, "masked_input", m, clients[m].masked_input(again.inbox(0, m), x))
    for m in clients:
        again.receive(0, "unmask", m, clients[m].unmask(again.survivors(0, m)))
    assert again.state(None, 0).phase == "released"
    assert log_of(again, params.session_id) == []  # released: nothing needs its messages any more
    with again.store.reading() as conn:
        assert conn.execute("SELECT COUNT(*) FROM secagg_log").fetchone()[0] == 0


def test_an_attempt_without_a_log_starts_afresh(tmp_path: Path) -> None:
    """A coordinator upgraded mid-round from one that kept the attempt in memory: nothing to
    continue from, so the round starts attempt 1 from the stored submissions (as before)."""
    who = [Identity.generate() for _ in range(3)]
    e = founded(tmp_path, who)
    e.close_round()
    with e.store.transaction() as conn:
        conn.execute("DELETE FROM secagg_log")
    e.store.close()
    again = engine(tmp_path)
    st = again.state(None)
    assert (st.round_id, st.phase, st.attempt) == (0, "advertise", 1)
    params = again.current_params()
    assert params is not None and params.session_id.endswith("/r0/a1")


_ACCEPTOR = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from continuum_mcp.crypto.identity import MemoryReplayGuard, Verifier
    from continuum_mcp.federation.coordinator import CoordinatorConfig, CoordinatorStore, RoundEngine
    from continuum_mcp.privacy.modes import default_policy
    from continuum_mcp.secagg import SignedMessage
    storage, fed = Path(sys.argv[1]), sys.argv[2]
    config = CoordinatorConfig(storage_path=storage, federation_id=fed, privacy_mode="open", min_contributors=3,
                               slots=4, dim=8, round_interval_seconds=100, phase_timeout_seconds=10)
    e = RoundEngine(CoordinatorStore.from_config(config), config, Verifier(MemoryReplayGuard()), default_policy())
    e.recover()
    for line in sys.stdin:
        member, msg = json.loads(line)
        e.receive(0, "masked_input", member, SignedMessage.model_validate(msg))
    print("ACCEPTED", e.state(None, 0).phase, flush=True)
    time.sleep(600)
""")


@pytest.mark.slow
def test_the_process_that_accepted_the_masked_inputs_is_killed_and_another_finishes(tmp_path: Path) -> None:
    who = [Identity.generate() for _ in range(12)]
    survivor = founded(tmp_path / "shared", who)
    survivor.close_round()
    params = survivor.current_params()
    assert params is not None
    clients = {m.instance_id: SecAggClient(m, params) for m in who}
    log: list[tuple[str, str, SignedMessage]] = []
    for kind in ("advertise", "share_keys"):
        for m in clients:
            msg = clients[m].advertise_keys() if kind == "advertise" else clients[m].share_keys(survivor.key_roster(0, m))
            survivor.receive(0, kind, m, msg)
            log.append((kind, m, msg))
    xs = dict(zip(clients, inputs(params, 12), strict=True))
    masked = {m: clients[m].masked_input(survivor.inbox(0, m), xs[m]) for m in clients}
    log += [("masked_input", m, msg) for m, msg in masked.items()]
    proc = subprocess.Popen([sys.executable, "-c", _ACCEPTOR, str(tmp_path / "shared"), FED], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("".join(json.dumps([m, msg.model_dump(mode="json")]) + "\n" for m, msg in masked.items()))
        proc.stdin.close()
        assert proc.stdout.readline().split() == ["ACCEPTED", "unmask"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-round, with every masked input only in what it committed
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # the surviving process serves the unmasking from the log the killed one wrote
    for m in clients:
        msg = clients[m].unmask(survivor.survivors(0, m))
        survivor.receive(0, "unmask", m, msg)
        log.append(("unmask", m, msg))
    st = survivor.state(None, 0)
    assert st.phase == "released" and st.submissions == 12
    got = released_slots(survivor)
    assert list(got) == [2] and got == released_alone(tmp_path / "alone", who, log)  # nothing lost


@pytest.mark.slow
def test_two_coordinator_nodes_on_one_database_serve_a_round_request_by_request(tmp_path: Path) -> None:
    """Two HTTP coordinators (each with its own ticking scheduler) on one storage: every member
    request goes to the other node than the one before, as a load balancer may send them."""
    from fedkit import admin_api, admit, expectations, member_api, pattern, rand_unit

    from continuum_mcp.crypto.cipher import FederationCipher, generate_federation_key
    from continuum_mcp.federation.client import step
    from continuum_mcp.federation.coordinator import FederationCoordinator
    from continuum_mcp.federation.participant import Wait

    opts = dict(storage_path=tmp_path, privacy_mode="open", min_contributors=3, federation_id=FED, admin_token="adm",
                slots=SLOTS, dim=DIM, phase_timeout_seconds=30,
                policy=default_policy().with_mode("open", budget_epsilon=400.0))
    nodes = [FederationCoordinator(**opts), FederationCoordinator(**opts)]  # type: ignore[arg-type]
    try:
        for node in nodes:
            node.start()
        cipher = FederationCipher(generate_federation_key(), FED)
        rng = np.random.default_rng(5)
        members = admit(nodes[0], 12)
        for k, m in enumerate(members):
            m.api = member_api(nodes[k % 2].url, m.identity)
            m.patterns = [pattern(3, ["shared phrase"], rand_unit(rng, DIM))]
            m.contribute(0, cipher)
        assert admin_api(nodes[1].url, "adm").admin_close_round().phase == "advertise"
        apis = {m.id: [member_api(n.url, m.identity) for n in nodes] for m in members}
        expect = expectations(members[0].api.federation(), members[0].policy)
        parts = {m.id: m.participant(expect) for m in members}
        turn = 0
        deadline = time.monotonic() + 120
        while live := [m for m in members if not parts[m.id].done]:
            assert time.monotonic() < deadline, {m.id: parts[m.id].outcome for m in live}
            idle = True
            for m in live:
                turn += 1
                idle = isinstance(step(apis[m.id][turn % 2], parts[m.id]), Wait) and idle
            if idle:
                time.sleep(0.1)
        assert all(p.outcome.released and p.outcome.steps_posted == ["advertise", "share_keys", "masked_input",
                                                                     "unmask"] for p in parts.values())
        for node in nodes:
            st = node.engine.state(None, 0)
            assert st.phase == "released" and st.submissions == 12
        assert [s.slot for s in nodes[0].service.slots().slots] == [3]
        for api_pair in apis.values():
            for api in api_pair:
                api.close()
    finally:
        for node in nodes:
            node.stop()
