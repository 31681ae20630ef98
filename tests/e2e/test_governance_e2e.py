"""Governance end to end: real coordinator *processes* (``continuum-mcp coordinator``, the
discussion minimum and the caps set by its CLI options) and real instances, each with its own data
dir and identity:

- a usage-statistics session from proposal to published histogram, run by twelve ``Continuum``
  instances through the core API the CLI and MCP tools call, and a member who did not opt in
  records nothing;
- a codebook-refinement session proposed and voted on by three ``continuum-mcp serve`` processes
  over MCP (the ``federation_governance`` tool) and run by twelve in-process ``FederationClient``s:
  approved by 87 % with 12 opt-ins, 3 rounds with two opt-outs after round 1 and a dropout, a new
  codebook adopted by vote, and the shared fact found again after re-slotting;
- with twelve ``FederationClient``s each: only 9 opt-ins (never runs), 70 % approval (never runs),
  a halt vote after round 1 (stops at the next round for every client), and a coordinator that says
  a rejected session runs and then forges ballots (its database altered while it runs), caught by
  every client, a ``serve`` process over MCP among them.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import numpy as np
import pytest
from fedkit import Member, admin_api, member_api, pattern, run_full_round
from mcp import Client, StdioServerParameters
from mcp_calls import call, error

from continuum_mcp._sqlite import connect, immediate
from continuum_mcp.app import Continuum
from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import FederationCipher, Invite, generate_federation_key
from continuum_mcp.errors import ContinuumError, CoordinatorUnavailable, CryptoError, InvalidInput, WrongPhase
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.client import FederationClient
from continuum_mcp.federation.client._governance import Governance, SessionTurn, member_governance
from continuum_mcp.federation.coordinator import _governance_sql as gsql
from continuum_mcp.federation.governance import GovernanceRules, SignedStatement, tally
from continuum_mcp.federation.learning import SIGNALS, SessionParams, usage_distributions
from continuum_mcp.federation.learning.recorder import USAGE_DB, UsageRecorder
from continuum_mcp.memory.store import MemoryStore
from continuum_mcp.privacy.accounting import compose_gdp, gdp_epsilon
from continuum_mcp.privacy.codebook import Codebook, slot_id, split_slot_id, version_tag
from continuum_mcp.privacy.ledger import PrivacyLedger
from continuum_mcp.privacy.modes import default_policy

FED = "fed-gov-e2e"
DISCUSSION = 60  # seconds: twelve instances vote, opt in and use their memories meanwhile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Coordinators:
    """Starts ``continuum-mcp coordinator`` child processes (each on its own port and storage) with
    the options a test needs; stops them all at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.procs = tmp, []  # type: list[subprocess.Popen[bytes]]
        self.storage: dict[str, Path] = {}  # url -> the coordinator's storage directory

    def start(self, *options: str, governance: dict[str, object]) -> tuple[str, str]:
        port, token = _free_port(), secrets.token_urlsafe(16)
        proc = subprocess.Popen(
            [sys.executable, "-m", "continuum_mcp.cli.main", "coordinator", "--port", str(port), "--storage",
             str(self.tmp / f"coordinator-{port}"), "--privacy-mode", "open", "--federation-id", FED,
             f"--admin-token={token}", "--governance", json.dumps(governance), *options],
            stdout=subprocess.DEVNULL, stderr=(log := open(self.tmp / f"coordinator-{port}.log", "wb")))
        log.close()  # the child has its own descriptor
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        self.storage[url] = self.tmp / f"coordinator-{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() >= deadline:
                tail = (self.tmp / f"coordinator-{port}.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"coordinator did not start (exit {proc.poll()}):\n{tail}")
            try:
                with CoordinatorAPI(url, None, timeout_seconds=1, max_retries=0) as probe:
                    probe.health()
                return url, token
            except CoordinatorUnavailable:
                time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)


@pytest.fixture
def coordinators(tmp_path: Path) -> Iterator[Coordinators]:
    c = Coordinators(tmp_path)
    yield c
    c.stop()


@pytest.mark.slow
def test_usage_statistics_session_end_to_end(tmp_path: Path, coordinators: Coordinators, embedder) -> None:
    url, admin_token = coordinators.start("--phase-timeout", "8", governance={"min_discussion_seconds": 5})
    key = generate_federation_key()
    with CoordinatorAPI(url, None, admin_token=admin_token, timeout_seconds=30) as admin:
        tokens = admin.admin_invites(13).admission_tokens
    invites = [Invite.build(url, FED, t, key).format() for t in tokens]
    apps = [Continuum(Settings(data_dir=tmp_path / f"m{i}"), embedder) for i in range(12)]
    served = tmp_path / "mcp"  # the thirteenth member: a `continuum-mcp serve` process, driven over MCP

    async def scenario() -> None:
        params = StdioServerParameters(command=sys.executable, env=dict(os.environ), args=[
            "-m", "continuum_mcp.cli.main", "serve", "--data-dir", str(served)])
        async with Client(params, read_timeout_seconds=300) as mcp:
            await call(mcp, "federation_join", {"invite": invites[12], "privacy_mode": "open"})
            for app, invite in zip(apps, invites):
                app.join(invite, privacy_mode="open")
            outsider = apps[11]  # joined, votes, never opts in
            kinds = {k.kind: k for k in apps[0].session_kinds()}
            assert kinds["usage_statistics"].guarantee["epsilon"] < 10
            prop = apps[0].propose("usage_statistics", title="how do we use our memories?",
                                   expected_benefit="know which tools matter", discussion_seconds=DISCUSSION)
            pid = prop.proposal_id
            for app in apps:
                app.vote_proposal(pid, "approve")
            await call(mcp, "federation_governance", {"action": "vote", "proposal_id": pid, "choice": "approve"})
            shown = [app.opt_in(pid).model_dump(mode="json") for app in apps[:11]]
            shown.append(await call(mcp, "federation_governance", {"action": "opt_in", "proposal_id": pid}))
            assert all("usage record" in v["data_description"] and v["guarantee"] for v in shown)
            # opted-in instances record their use of memory from now on; the outsider records nothing
            for i, app in enumerate(apps):
                for j in range(1 + i % 3):
                    app.remember(f"member {i} note {j}: the deploy runs on fridays")
                app.recall("deploy day", k=2)
                app.record_tool_call("recall")
            await call(mcp, "remember", {"text": "the served member's note: the deploy runs on fridays"})
            await call(mcp, "recall", {"query": "deploy day", "k": 2})
            assert not (Path(outsider.settings.data_dir) / USAGE_DB).exists()
            assert outsider.usage_record().events == []
            assert apps[0].session_report(pid).report.summary.phase == "discussion"
            # the opted-in instances take part on their own; each waits for the decision itself
            turns: dict[int, object] = {}
            threads = [threading.Thread(target=lambda i=i: turns.__setitem__(i, apps[i].take_part(
                pid, timeout_seconds=150))) for i in range(11)]
            for t in threads:
                t.start()
            # the served member is asked to take part once the session runs (one call takes part for
            # up to a minute: the whole of this one-round session)
            await anyio.to_thread.run_sync(lambda: wait_until("the session to run", lambda: outsider.session_report(
                pid).report.summary.phase in ("running", "completed"), DISCUSSION + 30))
            served_turn = await call(mcp, "federation_governance", {"action": "take_part", "proposal_id": pid})
            for t in threads:
                await anyio.to_thread.run_sync(t.join, 200)
            assert served_turn["rounds_taken"] == [1] and served_turn["refused"] in (None, "")
            # what each opted-in member's round used: its usage record (the served one read from its file)
            truth = {name: np.zeros(len(bins)) for name, bins in SIGNALS.items()}
            records = [app.usage_record().events for app in apps[:11]]
            records.append(UsageRecorder(served, opted_in=lambda: False).events())
            for events in records:
                assert events
                for name, dist in usage_distributions(events).items():
                    truth[name] += dist
            report = outsider.session_report(pid)  # results are free for every member, opted in or not
            assert report.report.summary.phase == "completed" and report.agrees
            assert [r.outcome for r in report.report.rounds] == ["released"], turns
            result = report.report.result["result"]
            for hist in result["histograms"]:  # no bin is grossly off (each within 1.5 x its 99 % bound) ...
                noisy = np.array(hist["noisy"])
                assert np.all(np.abs(noisy - truth[hist["signal"]]) <= hist["bound_99"] * 1.5), hist["signal"]
            # ... and the histogram is the truth plus noise of the predicted std, which a histogram of
            # zeros or of noise alone (also within those bounds: 12 members per signal) is not
            noisy = np.concatenate([np.array(h["noisy"]) for h in result["histograms"]])
            true = np.concatenate([truth[h["signal"]] for h in result["histograms"]])
            std, norm = result["histograms"][0]["std"], float(np.linalg.norm(true))
            assert norm >= 4 * std  # the signal stands well above the noise, so the next check can fail
            assert abs(float(noisy @ true) / norm ** 2 - 1) <= 3.5 * std / norm  # 1 +- std / norm when unbiased
            assert np.linalg.norm(noisy - true) <= std * (np.sqrt(noisy.size) + 3.5)  # chi, 47 degrees
            assert abs(result["noisy_participants"] - 12) <= 5 * result["participants_std"]
            # the session is over: nothing is recorded any more
            before = len(apps[0].usage_record().events)
            apps[0].remember("after the session")
            assert len(apps[0].usage_record().events) == before
            assert apps[0].delete_usage_record().deleted == before

    try:
        anyio.run(scenario)
    finally:
        for app in apps:
            app.close()


# --- codebook refinement ----------------------------------------------------------------------

N_MCP = 3    # `continuum-mcp serve` processes, driven over MCP with the federation_governance tool
N_PART = 12  # in-process FederationClients that opt in and take part
CB_DISCUSSION = 8  # seconds: fifteen members vote and twelve opt in meanwhile (about 1 s on a loaded machine)
#: each participant's memories: one fact in three wordings, so its one pattern falls in one codeword
DEPLOY = ["We always deploy the backend on Friday afternoons", "Backend deploys happen every Friday afternoon",
          "Friday afternoon is our backend deploy slot"]
#: twelve members cannot move a 384-dimensional codeword through noise multiplier 1.1 (a codeword
#: moves only when its noisy count promises a mean within cosine 0.9; the Utility section of
#: docs/governance.md computes from how many members it does). This federation and its in-process
#: members accept a far weaker guarantee so that twelve can: the mechanics are the same, only the
#: noise is smaller. The MCP members keep the card's cap, which the federation cannot relax.
WEAK_PARAMS = {"rounds": 3, "noise_multiplier": 0.1}
WEAK_RULES = GovernanceRules(min_discussion_seconds=0, max_session_epsilon=1e4)


def rounds_eps(n: int, params: SessionParams) -> float:
    return gdp_epsilon(compose_gdp([params.mu_per_round] * n), params.delta) if n else 0.0


def window_total(ledger: PrivacyLedger) -> float:
    """What the member's window spent, every purpose composed: ``total_epsilon`` once the ledger
    keeps purposes (releases and learning apart), ``spent_epsilon`` while it keeps one."""
    status = ledger.status()
    return float(getattr(status, "total_epsilon", status.spent_epsilon))


def wait_until(what: str, done: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def take_part(govs: dict[str, Governance], pid: str, timeout: float) -> dict[str, SessionTurn]:
    """Every member's ``participate`` in its own thread, as each instance syncs on its own."""
    turns: dict[str, SessionTurn] = {}

    def run(mid: str, gov: Governance) -> None:
        try:
            turns[mid] = gov.participate(pid, timeout_seconds=timeout)
        except (RuntimeError, ContinuumError) as exc:  # its client was closed: the instance went away
            turns[mid] = SessionTurn(proposal_id=pid, refused=f"went away: {exc}")

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in govs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 30)
    return turns


@pytest.mark.slow
def test_codebook_refinement_session_with_opt_outs_a_dropout_and_an_adoption_vote(
        tmp_path: Path, coordinators: Coordinators, embedder) -> None:
    url, admin_token = coordinators.start(
        "--phase-timeout", "10", "--budget-epsilon", "1e4", "--no-require-contribution",
        governance={"min_discussion_seconds": 3, "max_session_epsilon": 1e4})
    storage = coordinators.storage[url]
    policy = default_policy().with_mode("open", budget_epsilon=1e4)
    key = generate_federation_key()
    with admin_api(url, admin_token) as admin:
        tokens = admin.admin_invites(N_MCP + N_PART + 1 + 6).admission_tokens
    invites = [Invite.build(url, FED, t, key).format() for t in tokens]
    raw_tokens = tokens[N_MCP + N_PART + 1:]  # six identities that share a fact, three per release
    stores: list[MemoryStore] = []
    clients: list[FederationClient] = []
    members: list[FederationClient] = []  # the twelve that opt in; clients[N_PART] reads the shared facts
    govs: dict[str, Governance] = {}

    def join_members() -> None:
        for i in range(N_PART + 1):  # the last one holds no pattern
            settings = Settings(data_dir=tmp_path / f"member-{i}")
            stores.append(store := MemoryStore(settings, embedder))
            for text in DEPLOY if i < N_PART else []:
                store.remember(text, tags=["work"])
            clients.append(client := FederationClient(store, settings, policy=policy))
            client.governance_rules = WEAK_RULES
            client.join(invites[N_MCP + i], "minimal", "open")
        members.extend(clients[:N_PART])
        govs.update({c.instance_id: member_governance(c) for c in members})

    fact = Codebook.load("v0").vectors[2].astype(np.float64)

    def sharers(slot: int, toks: list[str]) -> list[Member]:
        out = [Member(api=member_api(url), patterns=[pattern(slot, ["friday deploys"], fact)], policy=policy)
               for _ in toks]
        for m, t in zip(out, toks):
            m.join(t, "standard", "open")
        return out

    def release(by: list[Member]) -> None:
        rid = by[0].api.round_current().round_id
        for m in by:
            assert m.contribute(rid, FederationCipher(key, FED), mode="open").accepted_patterns == 1
        with admin_api(url, admin_token) as admin:
            admin.admin_close_round()
        assert run_full_round(by).phase == "released"

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            mcp: list[Client] = []
            joining = stack.enter_context(ThreadPoolExecutor(1)).submit(join_members)  # meanwhile
            for i in range(N_MCP):
                params = StdioServerParameters(command=sys.executable, env=dict(os.environ), args=[
                    "-m", "continuum_mcp.cli.main", "serve", "--data-dir", str(tmp_path / f"mcp-{i}")])
                mcp.append(await stack.enter_async_context(Client(params, read_timeout_seconds=300)))
                await call(mcp[i], "federation_join", {"invite": invites[i], "contribution_level": "minimal",
                                                       "privacy_mode": "open"})
            await anyio.to_thread.run_sync(joining.result)
            reader, gov = clients[N_PART], list(govs.values())
            # a shared fact released under codebook v0 by three members, found by the reader
            first = sharers(2, raw_tokens[:3])
            release(first)
            assert any("friday deploys" in p.phrases for p in reader.query("when do we deploy on friday",
                                                                             min_confidence=0.0))
            # --- proposed and discussed over MCP; decided at the deadline the coordinator's CLI allows
            prop = await call(mcp[0], "federation_governance", {
                "action": "propose", "kind": "codebook_refinement", "title": "refine our codebook",
                "expected_benefit": "paraphrases land in the same slot", "discussion_days": CB_DISCUSSION / 86400,
                "params": WEAK_PARAMS})
            pid = prop["proposal_id"]
            for c in mcp:
                await call(c, "federation_governance", {"action": "vote", "proposal_id": pid, "choice": "approve"})
            # an MCP member's own cap (the card's epsilon 10) is not relaxed by the federation's
            assert "per-session cap" in await error(mcp[1], "federation_governance",
                                                    {"action": "opt_in", "proposal_id": pid})
            with ThreadPoolExecutor(4) as pool:  # 13 of 15 approve (87 %), all 12 in-process opt in
                jobs = [pool.submit(g.vote, pid, "approve") for g in gov[:10]]
                jobs += [pool.submit(g.vote, pid, "reject", "not needed") for g in gov[10:]]
                jobs += [pool.submit(g.opt_in, pid) for g in gov]
                for j in jobs:
                    j.result()
            phase = lambda: members[0].api().call("gov_report", proposal_id=pid).summary.phase  # noqa: E731
            wait_until("the decision", lambda: phase() in ("running", "completed", "rejected", "refused"),
                       CB_DISCUSSION + 20)
            assert phase() in ("running", "completed")
            version = run_session(pid)
            # MCP members count for themselves: a session over their cap is refused, and not followed
            assert "own tally" in await error(mcp[2], "federation_governance", {"action": "report", "proposal_id": pid})
            assert "own tally" in await error(mcp[0], "federation_sync", {"timeout_seconds": 2})
            check_reslotting(version, first[0])

    def run_session(pid: str) -> str:
        quitters, dropout = members[1:3], members[3]

        def after_round_one() -> None:
            wait_until("round one", lambda: bool(members[0].api().call("gov_report", proposal_id=pid).rounds))
            for q in quitters:
                assert "next round" in govs[q.instance_id].opt_out(pid).detail
            dropout.close()  # the instance goes away: its next request fails, it is dropped

        side = threading.Thread(target=after_round_one)
        side.start()
        turns = take_part(govs, pid, timeout=150)
        side.join()
        params = SessionParams.build(kind="codebook_refinement", **WEAK_PARAMS)
        report = govs[members[0].instance_id].verified(pid)
        assert report.report.summary.phase == "completed", (report.report.rounds, turns)
        t = report.tally  # counted by this client from the signed statements, as the coordinator did
        assert (t.approve, t.reject, t.opt_ins_at_deadline) == (13, 2, 12) and report.agrees
        rounds = report.report.rounds
        assert [r.outcome for r in rounds] == ["released"] * 3
        assert abs(rounds[0].noisy_participants - 12) < 3  # std ~0.5 at multiplier 0.1
        # the coordinator's record (read from its store): the opt-outs took part in round 1 only, the
        # dropout not in round 3, everyone else in all three
        with sqlite3.connect(f"file:{storage / 'coordinator.db'}?mode=ro", uri=True) as conn:
            charged = {r.round: set(r.participants) for r in gsql.rounds(conn, pid)}
        qids = {q.instance_id for q in quitters}
        assert qids <= charged[1] and not qids & charged[3]
        assert dropout.instance_id in charged[1] and dropout.instance_id not in charged[3]
        stayers = [m for m in members if m not in (*quitters, dropout)]
        assert all(m.instance_id in charged[r] for m in stayers for r in (1, 2, 3))
        for m in stayers + quitters:  # each client's own ledger agrees with the coordinator's
            taken = [r for r in (1, 2, 3) if m.instance_id in charged[r]]
            assert turns[m.instance_id].rounds_taken == taken
            with m.ledger() as own:
                assert window_total(own) == pytest.approx(rounds_eps(len(taken), params), rel=1e-6)
            with PrivacyLedger(storage / "ledger.db", identity=m.instance_id, budget_epsilon=1e4) as theirs:
                assert window_total(theirs) == pytest.approx(rounds_eps(len(taken), params), rel=1e-6)
        assert report.report.epsilon_spent_per_participant == pytest.approx(rounds_eps(3, params), rel=1e-6)
        # the result: a new codebook every member can download and check, adopted by vote
        result = report.report.result
        assert result is not None and result["version"] != "v0"
        assert rounds[0].result is not None and rounds[0].result["updated_slots"]  # the shared fact's codeword
        new = Codebook.from_b64(result["vectors_b64"], result["slots"], result["dim"], parent="v0")
        assert new.version == result["version"]
        live = [govs[m.instance_id] for m in members if m is not dropout]
        for g in live[:10]:
            g.adopt(pid)
        assert live[0].verified(pid).tally.adopted(result["version"], result["digest"])
        return str(result["version"])

    def check_reslotting(version: str, old_sharer: Member) -> None:
        reader = clients[N_PART]
        # the coordinator follows the vote, and so does the client, after counting the votes itself
        wait_until("the adoption", lambda: reader.api().federation().codebook_version == version, 30)
        reader.sync(timeout_seconds=2)
        assert reader.codebook.version == version
        # releases under two versions never mix: v0's release is not served under the new one
        new_ids = reader.codebook.ids
        assert [s.slot for s in reader.api().slots().slots] == new_ids and new_ids[0] == slot_id(version, 0)
        assert not reader.query("when do we deploy on friday", min_confidence=0.0)
        with pytest.raises(InvalidInput, match="slot id of the codebook in use"):
            old_sharer.contribute(old_sharer.api.round_current().round_id, FederationCipher(key, FED), mode="open")
        # members re-slot the shared fact under the adopted version, and its next release is found
        sid = int(reader.codebook.slot_ids(fact[None, :].astype(np.float32))[0])
        assert split_slot_id(sid) == (version_tag(version), reader.codebook.index_of(sid)) and sid >= 1 << 12
        release(sharers(sid, raw_tokens[3:]))
        hits = reader.query("when do we deploy on friday", min_confidence=0.0)
        assert any("friday deploys" in p.phrases and p.slot == sid for p in hits)
        assert {s.slot for s in reader.api().slots().slots if s.released_at_round >= 0} == {sid}

    try:
        anyio.run(scenario)
    finally:
        for c in clients:
            c.close()
        for s in stores:
            s.close()


# --- sessions that never run, a halt vote, a coordinator that lies -----------------------------

#: the short discussion these federations allow (the coordinator's CLI) and their proposals use:
#: twelve members post up to two statements each meanwhile (about 2 s on a loaded machine)
SHORT = {"min_discussion_seconds": 3}
SHORT_DISCUSSION = 8


class Federation:
    """A ``continuum-mcp coordinator`` process and ``n`` in-process ``FederationClient`` members,
    each with its own data dir, identity and ledger; ``spare`` invites left for MCP members."""

    def __init__(self, tmp: Path, coordinators: Coordinators, embedder, n: int = 12, spare: int = 0) -> None:
        self.url, admin_token = coordinators.start("--phase-timeout", "8", governance=SHORT)
        self.db = coordinators.storage[self.url] / "coordinator.db"
        key = generate_federation_key()
        with admin_api(self.url, admin_token) as admin:
            tokens = admin.admin_invites(n + spare).admission_tokens
        self.invites = [Invite.build(self.url, FED, t, key).format() for t in tokens]
        self.stores: list[MemoryStore] = []
        self.clients: list[FederationClient] = []
        for i in range(n):
            settings = Settings(data_dir=tmp / f"member-{i}")
            self.stores.append(store := MemoryStore(settings, embedder))
            self.clients.append(client := FederationClient(store, settings))
            client.join(self.invites[spare + i], "minimal", "open")
        self.govs = [member_governance(c) for c in self.clients]

    def propose(self, kind: str = "usage_statistics", **params: object) -> str:
        return self.govs[0].propose(kind, title=f"learn {kind}", expected_benefit="know the federation",
                                    discussion_seconds=SHORT_DISCUSSION, **params).proposal_id

    def post(self, jobs: list[Callable[[], object]]) -> None:
        """Statements signed and posted four at a time, as members act on their own."""
        with ThreadPoolExecutor(4) as pool:
            for f in [pool.submit(j) for j in jobs]:
                f.result()

    def phase(self, pid: str) -> str:
        return self.clients[0].api().call("gov_report", proposal_id=pid).summary.phase

    def decided(self, pid: str) -> str:
        """The coordinator's decision, once the discussion is over."""
        wait_until("the decision", lambda: self.phase(pid) not in ("discussion", "approved"), SHORT_DISCUSSION + 20)
        return self.phase(pid)

    def spent(self, i: int) -> float:
        with self.clients[i].ledger() as ledger:
            return window_total(ledger)

    def close(self) -> None:
        for c in self.clients:
            c.close()
        for s in self.stores:
            s.close()


@pytest.fixture
def federation(tmp_path: Path, coordinators: Coordinators, embedder) -> Iterator[Callable[..., Federation]]:
    made: list[Federation] = []

    def make(**kw: object) -> Federation:
        made.append(Federation(tmp_path, coordinators, embedder, **kw))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for f in made:
        f.close()


@pytest.mark.slow
def test_nine_opt_ins_never_run(federation: Callable[..., Federation]) -> None:
    fed = federation()
    pid = fed.propose()
    fed.post([(lambda g=g: g.vote(pid, "approve")) for g in fed.govs] + [(lambda g=g: g.opt_in(pid))
                                                                         for g in fed.govs[:9]])
    assert fed.decided(pid) == "rejected"
    for i, gov in enumerate(fed.govs):  # every client counts for itself, and none takes part
        v = gov.verified(pid)
        assert v.tally.decision == "rejected" and "9 opt-ins" in v.tally.reasons[0] and v.agrees
        turn = gov.participate(pid, timeout_seconds=2)
        assert turn.rounds_taken == [] and fed.spent(i) == 0.0
    with pytest.raises(WrongPhase):
        fed.govs[9].opt_in(pid)  # too late: the discussion is over


@pytest.mark.slow
def test_seventy_percent_approval_never_runs(federation: Callable[..., Federation]) -> None:
    fed = federation()
    pid = fed.propose()
    g = fed.govs
    fed.post([(lambda m=m: m.vote(pid, "approve")) for m in g[:7]]
             + [(lambda m=m: m.vote(pid, "reject", "not needed")) for m in g[7:10]]
             + [lambda: g[10].vote(pid, "abstain")] + [(lambda m=m: m.opt_in(pid)) for m in g])
    assert fed.decided(pid) == "rejected"
    for i, gov in enumerate(g):
        v = gov.verified(pid)
        t = v.tally
        assert (t.approve, t.reject, t.abstain, t.opt_ins_at_deadline) == (7, 3, 1, 12) and v.agrees
        assert t.decision == "rejected" and "70% approval" in t.reasons[0] and t.concerns == ["not needed"] * 3
        assert gov.participate(pid, timeout_seconds=2).rounds_taken == [] and fed.spent(i) == 0.0


@pytest.mark.slow
def test_a_halt_vote_stops_the_session_at_the_next_round(federation: Callable[..., Federation]) -> None:
    fed = federation()
    params = SessionParams.build(kind="usage_statistics", rounds=4)
    pid = fed.propose(rounds=4)
    fed.post([(lambda g=g: g.vote(pid, "approve")) for g in fed.govs] + [(lambda g=g: g.opt_in(pid))
                                                                         for g in fed.govs])
    assert fed.decided(pid) == "running"

    def halt_after_round_one() -> None:  # seven of twelve vote to halt once round one is published
        wait_until("round one", lambda: bool(fed.clients[0].api().call("gov_report", proposal_id=pid).rounds))
        fed.post([(lambda g=g: g.halt(pid)) for g in fed.govs[:7]])

    side = threading.Thread(target=halt_after_round_one)
    side.start()
    turns = take_part({c.instance_id: g for c, g in zip(fed.clients, fed.govs)}, pid, timeout=90)
    side.join()
    # a member's part of a round ends before the coordinator records it (at its next tick)
    wait_until("the halt", lambda: fed.phase(pid) == "halted", 30)
    with sqlite3.connect(f"file:{fed.db}?mode=ro", uri=True) as conn:
        charged = {r.round: set(r.participants) for r in gsql.rounds(conn, pid)}
    assert 1 <= len(charged) <= 2, charged  # the round running when the halt passed may finish; no later one
    for i, (c, gov) in enumerate(zip(fed.clients, fed.govs)):  # it stopped for every client
        v = gov.verified(pid)
        assert v.tally.halted and v.report.summary.phase == "halted" and v.agrees
        # in round 1, and in round 2's roster at most: a round 2 that fails because members saw the
        # halt and left before sending anything is recorded with nobody charged
        spent_in = [r for r in sorted(charged) if c.instance_id in charged[r]]
        assert 1 in spent_in and set(spent_in) <= set(turns[c.instance_id].rounds_taken) <= {1, 2}, charged
        assert fed.spent(i) == pytest.approx(rounds_eps(len(spent_in), params), rel=1e-6)


@pytest.mark.slow
def test_forged_ballot_and_miscount_are_caught_by_every_client(tmp_path: Path,
                                                               federation: Callable[..., Federation]) -> None:
    """Twelve in-process members and one ``continuum-mcp serve`` process: 7 approve, 6 reject (54 %,
    rejected). The coordinator (its database altered while it runs) first says the session runs
    anyway, then also turns three rejects into approvals (77 % in what it publishes); every
    client counts the signed statements itself, drops the forged ones and refuses to take part.
    The coordinator's own ticker does not run that session either, and goes on deciding the others."""
    fed = federation(spare=1)
    g = fed.govs

    def lie(pid: str, forge: int) -> None:
        conn = connect(fed.db)
        try:
            with immediate(conn):
                for raw in gsql.statements(conn, pid):
                    s = SignedStatement.model_validate_json(raw)
                    if forge and s.payload.get("choice") == "reject":
                        forged = s.model_copy(update={"payload": {**s.payload, "choice": "approve"}})
                        conn.execute("UPDATE gov_statements SET signed_json = ? WHERE signed_json = ?",
                                     (forged.model_dump_json(), raw))
                        forge -= 1
                gsql.set_proposal(conn, pid, phase="running")
        finally:
            conn.close()

    def every_client_refuses(pid: str, invalid: int) -> None:
        for i, gov in enumerate(g):
            with pytest.raises(CryptoError, match="own tally"):
                gov.verified(pid)
            turn = gov.participate(pid, timeout_seconds=2)
            assert "own tally" in turn.refused and turn.rounds_taken == [] and fed.spent(i) == 0.0
            report = fed.clients[i].api().call("gov_report", proposal_id=pid)  # what its count dropped
            own = tally(report.proposal, report.statements, report.members, federation_id=FED,
                        rules=gov.rules(), now=time.time(), epsilon=1.0)
            assert len([x for x in own.invalid if x.type == "ballot"]) == invalid
            assert (own.approve, own.reject, own.decision) == (7, 6 - invalid, "rejected")

    async def scenario() -> None:
        params = StdioServerParameters(command=sys.executable, env=dict(os.environ), args=[
            "-m", "continuum_mcp.cli.main", "serve", "--data-dir", str(tmp_path / "mcp")])
        async with Client(params, read_timeout_seconds=300) as mcp:
            await call(mcp, "federation_join", {"invite": fed.invites[0], "privacy_mode": "open"})
            pid = fed.propose()
            await call(mcp, "federation_governance", {"action": "vote", "proposal_id": pid, "choice": "reject",
                                                      "concern": "not needed"})
            await call(mcp, "federation_governance", {"action": "opt_in", "proposal_id": pid})
            await anyio.to_thread.run_sync(lambda: fed.post(
                [(lambda m=m: m.vote(pid, "approve")) for m in g[:7]]
                + [(lambda m=m: m.vote(pid, "reject", "not needed")) for m in g[7:]]
                + [(lambda m=m: m.opt_in(pid)) for m in g]))
            assert await anyio.to_thread.run_sync(fed.decided, pid) == "rejected"
            other = fed.propose()  # the coordinator goes on deciding its other proposals
            for forge in (0, 3):  # a miscount alone, then forged ballots as well
                lie(pid, forge)
                await anyio.to_thread.run_sync(every_client_refuses, pid, forge)
                assert "own tally" in await error(mcp, "federation_governance", {"action": "report",
                                                                                  "proposal_id": pid})
                turn = await call(mcp, "federation_governance", {"action": "take_part", "proposal_id": pid})
                assert "own tally" in turn["refused"] and turn["rounds_taken"] == []
            assert await anyio.to_thread.run_sync(fed.decided, other) == "rejected"  # no votes at all

    anyio.run(scenario)
