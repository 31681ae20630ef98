"""Auto-sync takes part in the learning sessions the member opted in to, and only in those.

Real instances (``FederationClient`` over a real ``MemoryStore`` and the bundled embedder, each
with its own data directory, identity and ledger) against an in-process coordinator on
127.0.0.1; they opt in with signed statements and then leave it to their auto-sync thread, with
an interval of an hour: the pass that sees the discussion running asks for the next one at its
end, and a pass cut short by its time bound while a session runs asks for the next at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import Invite, generate_federation_key
from continuum_mcp.federation.client import FederationClient, SessionSync, SyncResult
from continuum_mcp.federation.client._autosync import MIN_PAUSE_SECONDS, next_pass_seconds
from continuum_mcp.federation.client._governance import Governance, member_governance
from continuum_mcp.federation.coordinator import _governance_sql as gsql
from continuum_mcp.federation.governance.guarantee import session_label
from continuum_mcp.federation.learning import SessionParams
from continuum_mcp.memory.store import MemoryStore
from continuum_mcp.privacy.accounting import compose_gdp, gdp_epsilon
from continuum_mcp.privacy.ledger import PrivacyLedger
from govkit import FED, GovKit

HOUR = 60.0  # minutes: the auto-sync interval of these members


class Instances:
    """``n`` joined instances of the kit's federation."""

    def __init__(self, kit: GovKit, tmp: Path, embedder, n: int) -> None:
        self.kit, key = kit, generate_federation_key()
        self.stores: list[MemoryStore] = []
        self.clients: list[FederationClient] = []
        for i, token in enumerate(kit.coord.create_admission_tokens(n)):
            settings = Settings(data_dir=tmp / f"instance-{i}")
            self.stores.append(store := MemoryStore(settings, embedder))
            client = FederationClient(store, settings, codebook=kit.codebook, policy=kit.coord.policy,
                                      poll_seconds=0.1)
            client.join(Invite.build(kit.coord.url, FED, token, key).format(), privacy_mode="open")
            self.clients.append(client)

    def gov(self, c: FederationClient) -> Governance:
        return member_governance(c)

    def wait_phase(self, pid: str, phases: set[str], timeout: float) -> str:
        """The coordinator's phase of ``pid`` once it is one of ``phases``."""
        def phase() -> str:
            return str(self.clients[0].api().call("gov_report", proposal_id=pid).summary.phase)

        wait_until(f"{pid} in {phases}", lambda: phase() in phases, timeout)
        return phase()

    def close(self) -> None:
        for closing in [*self.clients, *self.stores]:  # the clients first: their threads use the stores
            closing.close()


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[GovKit]:
    """Phases of 8 s: an auto-sync pass looks every 2 s for the first round (a quarter of it), and
    on a loaded machine ten members must all post their keys before the phase ends."""
    k = GovKit(tmp_path, phase_timeout=8.0)
    yield k
    k.close()


def consent(govs: Sequence[Governance], pid: str) -> None:
    """Each approves and opts in, four at a time, as members act on their own."""
    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(lambda g=g: (g.vote(pid, "approve"), g.opt_in(pid))) for g in govs]:
            f.result()


def learning_charges(c: FederationClient) -> list[str]:
    """The attempts this instance's own ledger charged under the learning purpose."""
    with PrivacyLedger(c.dir / "ledger.db", identity=c.instance_id, budget_epsilon=1000.0) as ledger:
        return [e.round_id for e in ledger.history() if e.purpose == "learning"]


def posted(kit: GovKit, pid: str) -> set[str]:
    """The instances that posted a secure-aggregation message in an attempt of the session whose
    log is still kept (an ended attempt's log is dropped: :class:`Senders` watches it meanwhile)."""
    with kit.coord.store.reading() as conn:
        rows = conn.execute("SELECT DISTINCT instance_id FROM secagg_log WHERE session_id LIKE ? AND instance_id "
                            "IS NOT NULL", (session_label(FED, pid) + "/%",)).fetchall()
    return {str(r[0]) for r in rows}


class Senders:
    """Everyone who posts in the session's attempts while they run (the log, read every 0.1 s;
    the advertise phase waits its whole timeout for a missing member, so no advertiser is missed)."""

    def __init__(self, kit: GovKit, pid: str) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(kit, pid), daemon=True)
        self._thread.start()

    def _run(self, kit: GovKit, pid: str) -> None:
        while not self._stop.wait(0.1):
            self.seen |= posted(kit, pid)

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(10)
        return self.seen


def wait_until(what: str, cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"never: {what}")


def propose(gov: Governance, discussion: int, rounds: int = 1) -> str:
    return gov.propose("usage_statistics", title="hours of use", expected_benefit="know the federation",
                       discussion_seconds=discussion, rounds=rounds).proposal_id


def rounds_eps(n: int) -> float:
    params = SessionParams.build(kind="usage_statistics")
    return gdp_epsilon(compose_gdp([params.mu_per_round] * n), params.delta)


@pytest.mark.slow
def test_auto_sync_alone_takes_opted_in_members_through_every_round_and_no_one_else(
        kit: GovKit, tmp_path: Path, embedder) -> None:
    """Ten members turn auto-sync on (hourly) before the proposal exists, then opt in: they take
    part in both rounds through their auto-sync threads alone. One opted in but only syncs by
    hand (told the session runs, never charged), one never opted in and one opted out before the
    end of the discussion run auto-sync too and neither post nor are charged."""
    inst = Instances(kit, tmp_path, embedder, 13)
    try:
        auto, (manual, never, left) = inst.clients[:10], inst.clients[10:]
        for c in [*auto, never, left]:
            c.enable_auto_sync(interval_minutes=HOUR, contribute_on_sync=False, query_on_sync=False)
        govs = {c.instance_id: inst.gov(c) for c in inst.clients}
        pid = propose(govs[auto[0].instance_id], discussion=20, rounds=2)
        consent([govs[c.instance_id] for c in [*auto, manual, left]], pid)
        govs[left.instance_id].opt_out(pid)
        assert govs[left.instance_id].standing_opt_ins() == []
        senders = Senders(kit, pid)

        inst.wait_phase(pid, {"running", "completed", "halted"}, timeout=40)
        noted = manual.sync(timeout_seconds=1)  # a manual sync says the session runs and waits for no round
        assert [(s.proposal_id, s.status) for s in noted.sessions] == [(pid, "running")]
        assert f"take-part {pid}" in noted.sessions[0].note and f"take-part {pid}" in noted.message
        assert inst.wait_phase(pid, {"completed", "halted"}, timeout=120) == "completed"

        with kit.coord.store.reading() as conn:
            records = gsql.rounds(conn, pid)
        ids = {c.instance_id for c in auto}
        assert [r.outcome for r in records] == ["released", "released"]
        assert [set(r.participants) for r in records] == [ids, ids]
        assert senders.stop() == ids
        for c in auto:
            assert len(learning_charges(c)) == 2
            with PrivacyLedger(c.dir / "ledger.db", identity=c.instance_id, budget_epsilon=1000.0) as ledger:
                assert ledger.status().total_epsilon == pytest.approx(rounds_eps(2))
            assert c.auto_sync_running
        for c in (manual, never, left):
            assert learning_charges(c) == []
        # the session is over: every auto member's next pass drops its standing opt-in
        wait_until("the standing opt-ins dropped", lambda: all(inst.gov(c).standing_opt_ins() == [] for c in auto),
                   timeout=30)
    finally:
        inst.close()


@pytest.mark.slow
def test_an_opt_out_mid_session_stops_auto_sync_from_the_next_round(kit: GovKit, tmp_path: Path, embedder) -> None:
    """Eleven opt in and leave it to auto-sync; one opts out once its first round is charged: it
    is charged for that round only, and the second round goes on without it."""
    inst = Instances(kit, tmp_path, embedder, 11)
    try:
        govs = [inst.gov(c) for c in inst.clients]
        pid = propose(govs[0], discussion=20, rounds=2)
        consent(govs, pid)
        for c in inst.clients:
            c.enable_auto_sync(interval_minutes=HOUR, contribute_on_sync=False, query_on_sync=False)
        quitter, gov_q = inst.clients[3], govs[3]
        wait_until("the quitter's first round charged", lambda: len(learning_charges(quitter)) >= 1, timeout=60)
        gov_q.opt_out(pid)
        assert inst.wait_phase(pid, {"completed", "halted"}, timeout=120) == "completed"
        with kit.coord.store.reading() as conn:
            records = gsql.rounds(conn, pid)
        assert [r.outcome for r in records] == ["released", "released"]
        assert quitter.instance_id in records[0].participants
        assert set(records[1].participants) == {c.instance_id for c in inst.clients} - {quitter.instance_id}
        assert len(learning_charges(quitter)) == 1 and gov_q.standing_opt_ins() == []
        for c in inst.clients:
            if c is not quitter:
                assert len(learning_charges(c)) == 2
        # and its next passes fetch nothing about the session: it has no standing opt-in left
        assert quitter.auto_sync_once().sessions == []
    finally:
        inst.close()


def test_a_pass_with_no_running_session_takes_part_in_none_and_says_when_to_look_again(
        kit: GovKit, tmp_path: Path, embedder) -> None:
    """A pass over a session in discussion starts no round and asks for the next pass at its end;
    over a rejected one it drops the standing opt-in; without any opt-in it fetches no report."""
    inst = Instances(kit, tmp_path, embedder, 2)
    try:
        a, c = inst.clients
        ga = inst.gov(a)
        long_pid = propose(ga, discussion=3600)
        short_pid = propose(ga, discussion=2)  # one opt-in of the ten needed: rejected at its deadline
        for pid in (short_pid, long_pid):
            ga.opt_in(pid)
        inst.wait_phase(short_pid, {"rejected"}, timeout=20)

        result = a.auto_sync_once()
        assert isinstance(result, SyncResult) and result.release_error is None
        by_pid = {s.proposal_id: s for s in result.sessions}
        assert by_pid[long_pid].status == "waiting" and by_pid[long_pid].phase == "discussion"
        assert 3000 < (by_pid[long_pid].next_check_seconds or 0) <= 3600  # at the deadline: no wait now
        assert by_pid[short_pid].status == "over" and by_pid[short_pid].rounds_taken == []
        assert ga.standing_opt_ins() == [long_pid]
        assert next_pass_seconds(result, 900) == 900  # an hour away: a 15-minute interval decides
        assert next_pass_seconds(result, 7200) == by_pid[long_pid].next_check_seconds  # a 2-hour one: the deadline
        report = ga.verified(long_pid).report
        assert report.rounds == [] and report.summary.round == 0 and posted(kit, long_pid) == set()
        assert learning_charges(a) == []

        assert c.auto_sync_once().sessions == []  # no standing opt-in: nothing about sessions is fetched
    finally:
        inst.close()


def test_one_turn_per_session_on_an_instance_across_its_processes(kit: GovKit, tmp_path: Path, embedder) -> None:
    """While one turn holds a session (here: the test, as auto-sync would), a take-part call of
    the same instance, in this process or in its CLI, returns at once without taking part: two
    secure-aggregation states under one identity would spoil the round for everyone."""
    inst = Instances(kit, tmp_path, embedder, 1)
    try:
        (a,) = inst.clients
        ga = inst.gov(a)
        pid = propose(ga, discussion=3600)
        ga.opt_in(pid)
        with a.session_seats.seat(pid) as held:
            assert held is not None
            turn = ga.participate(pid, timeout_seconds=600)
            assert turn.refused_code == "busy" and turn.rounds_taken == []
            r = subprocess.run([sys.executable, "-m", "continuum_mcp.cli.main", "federation", "take-part", pid,
                                "--seconds", "600", "--json", "--data-dir", str(a.settings.data_dir)],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["refused_code"] == "busy"
        assert ga.participate(pid, timeout_seconds=0.5).refused_code == ""  # free again: it waits for the start
    finally:
        inst.close()


def test_the_next_pass_comes_at_the_interval_or_when_a_session_asks_for_it() -> None:
    def result(*checks: float | None) -> SyncResult:
        return SyncResult(sessions=[SessionSync(proposal_id=f"p{i}", status="waiting", next_check_seconds=s)
                                    for i, s in enumerate(checks)])

    assert next_pass_seconds(None, 900) == 900  # a failed pass: the interval
    assert next_pass_seconds(result(), 900) == 900
    assert next_pass_seconds(result(None, 5000), 900) == 900
    assert next_pass_seconds(result(None, 120.0), 900) == 120.0  # a discussion ending in two minutes
    assert next_pass_seconds(result(0.0, 120.0), 900) == MIN_PAUSE_SECONDS  # a session still running
    assert next_pass_seconds(result(0.0), 0.6) == 0.6  # a shorter interval stays what it is
