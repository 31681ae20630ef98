"""The federation end to end, as users run it.

A real coordinator *process* on 127.0.0.1 (started with `continuum-mcp coordinator`, killed with
SIGKILL and restarted mid-round), 23 instances each with its own data dir, identity and client:
3 are separate `continuum-mcp serve` processes driven through the `mcp` client over stdio, 20 are
FederationClients over real MemoryStores in this process. Release in `open` is DP-selected, so the
test first computes, from the members' own previews and the mode's calibration, that the shared fact
is released with probability above 1 - 1e-9; fewer holders would make it a coin toss, not a test. Nothing of our own is mocked.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from fedkit import admin_api
from mcp import Client, StdioServerParameters
from mcp_calls import call, error

from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import Invite, generate_federation_key
from continuum_mcp.errors import CoordinatorUnavailable, Forbidden, InsufficientCredits
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.client import FederationClient
from continuum_mcp.memory.store import MemoryStore
from continuum_mcp.privacy.modes import default_policy
from embeddings import SentenceTransformerEmbedder

pytestmark = pytest.mark.slow  # real processes and a full round with a restart: minutes, not seconds

FED = "e2e-federation"
N_MCP = 3          # instances 0-2: separate server processes over stdio
N_MEMBERS = 22     # instances 0-21 contribute; instance 22 only consumes
CONSUMER = N_MEMBERS
N_INSTANCES = N_MEMBERS + 1
DROPOUTS = {18, 19, 20, 21}  # a fifth of the round's 22 participants never take part in aggregation
N_FACT_A = 18      # instances 0-17 hold the shared fact: all of them are in the aggregation

FACT_A = [  # one fact, in ten users' own words; the first sentence recurs, which open mode
    # releases as a statement (a statement needs min_contributors contributors of its own)
    "Always run the database migrations before deploying the backend service",
    "Always run the database migrations before deploying the backend service",
    "Always run the database migrations before deploying the backend service",
    "Never deploy the backend before the database migrations have run",
    "The database migrations have to run before we deploy the backend",
    "Before deploying the backend service, run the database migrations",
    "Backend deploys go after the database migrations, always",
    "Remember to run database migrations prior to deploying the backend",
    "We run the database migrations and only then deploy the backend service",
    "Database migrations before backend deployment, every single time",
]
FACT_B = ["Our team's favourite hiking trail is the ridge path above Lake Moraine",  # only two members
          "The ridge path above Lake Moraine is the team's favourite hiking trail"]
PEOPLE = [("Dana Whitfield", "+44 20 7946 0958", "dana.whitfield@example.com"),
          ("Ravi Shankar", "+1 415 555 0132", "ravi.s@example.net"),
          ("Ingrid Solberg", "+47 22 33 44 55", "ingrid@solberg.example.org"),
          ("Mateo Alvarez", "+34 912 345 678", "mateo.alvarez@example.es"),
          ("Chloe Dubois", "+33 1 42 68 53 00", "chloe.dubois@example.fr"),
          ("Kenji Watanabe", "+81 3 1234 5678", "kenji.w@example.jp"),
          ("Amara Okafor", "+234 803 555 0199", "amara.okafor@example.ng"),
          ("Lukas Becker", "+49 30 901820", "lukas.becker@example.de"),
          ("Sofia Rossi", "+39 06 6982 1234", "sofia.rossi@example.it"),
          ("Noah Thompson", "+1 212 555 0187", "noah.t@example.com"),
          ("Priya Natarajan", "+91 98765 43210", "priya.n@example.in"),
          ("Oliver Smith", "+44 161 496 0321", "oliver.smith@example.co.uk"),
          ("Ana Pereira", "+351 21 123 4567", "ana.pereira@example.pt"),
          ("Jakub Nowak", "+48 22 555 0143", "jakub.nowak@example.pl"),
          ("Fatima Zahra", "+212 522 555 018", "fatima.zahra@example.ma"),
          ("Liam O'Connor", "+353 1 555 0167", "liam.oconnor@example.ie"),
          ("Mei Chen", "+86 10 5555 0123", "mei.chen@example.cn"),
          ("Erik Lindqvist", "+46 8 555 012 34", "erik.lindqvist@example.se"),
          ("Zanele Dlamini", "+27 21 555 0198", "zanele.dlamini@example.za"),
          ("Tomas Novak", "+420 2 5555 0176", "tomas.novak@example.cz"),
          ("Hana Suzuki", "+81 6 5555 0134", "hana.suzuki@example.jp"),
          ("Diego Fernandez", "+54 11 5555 0112", "diego.fernandez@example.ar"),
          ("Yara Haddad", "+961 1 123 456", "yara.haddad@example.lb")]


def memories_for(i: int) -> list[tuple[str, list[str]]]:
    name, phone, email = PEOPLE[i]
    out = [(f"Call {name} at {phone} about the contract renewal", ["work"]),
           (f"{name.split()[0]}'s email address is {email}", ["contacts"]),
           (f"My therapist appointment is every Tuesday, booked under {name}", ["health", "private"])]
    if i < N_FACT_A:
        out.append((FACT_A[i % len(FACT_A)], ["work"]))
    if i in (6, 7):
        out.append((FACT_B[i - 6], ["team"]))
    if i == CONSUMER:  # the consumer knows the fact too (and can verify it), but never contributed
        out.append(("Before a backend deploy the database migrations have to run", ["work"]))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CoordinatorProcess:
    """`continuum-mcp coordinator` as a child process that can be SIGKILLed and restarted."""

    def __init__(self, storage: Path) -> None:
        self.storage, self.port, self.admin_token = storage, free_port(), secrets.token_urlsafe(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "continuum_mcp.cli.main", "coordinator", "--port", str(self.port),
             "--storage", str(self.storage), "--min-contributors", "3", "--privacy-mode", "open",
             "--federation-id", FED, f"--admin-token={self.admin_token}", "--phase-timeout", "6"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "coordinator exited"
            try:
                with CoordinatorAPI(self.url, None, timeout_seconds=1, max_retries=0) as probe:
                    probe.health()
                return
            except CoordinatorUnavailable:
                time.sleep(0.1)
        raise AssertionError("coordinator did not start")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def admin(self) -> CoordinatorAPI:
        return admin_api(self.url, self.admin_token)


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[CoordinatorProcess]:
    c = CoordinatorProcess(tmp_path / "coordinator")
    c.start()
    yield c
    if c.proc and c.proc.poll() is None:
        c.proc.terminate()
        c.proc.wait(timeout=30)


def sync_until_released(client: FederationClient, deadline: float) -> None:
    """A member that keeps taking part, riding out a coordinator that is down for a while, until
    ``deadline`` (a thread cannot be cancelled: without it a round that never completes hangs)."""
    while time.monotonic() < deadline:
        try:
            if client.sync(timeout_seconds=20).released:
                return
        except CoordinatorUnavailable:
            time.sleep(0.3)


@pytest.mark.slow
def test_federation_end_to_end(tmp_path: Path, coordinator: CoordinatorProcess,
                               embedder: SentenceTransformerEmbedder) -> None:
    key = generate_federation_key()
    with coordinator.admin() as admin:
        tokens = admin.admin_invites(N_INSTANCES).admission_tokens
    invites = [Invite.build(coordinator.url, FED, t, key).format() for t in tokens]

    stores: dict[int, MemoryStore] = {}
    clients: dict[int, FederationClient] = {}
    for i in range(N_MCP, N_INSTANCES):
        settings = Settings(data_dir=tmp_path / f"instance-{i}")
        stores[i] = MemoryStore(settings, embedder)
        clients[i] = FederationClient(stores[i], settings)

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            mcp: dict[int, Client] = {}
            for i in range(N_MCP):
                params = StdioServerParameters(command=sys.executable, env=dict(os.environ), args=[
                    "-m", "continuum_mcp.cli.main", "serve", "--data-dir", str(tmp_path / f"instance-{i}")])
                mcp[i] = await stack.enter_async_context(Client(params, read_timeout_seconds=300))

            # --- remember, join, contribute -------------------------------------------------------
            for i in range(N_INSTANCES):
                for text, tags in memories_for(i):
                    if i in mcp:
                        await call(mcp[i], "remember", {"text": text, "tags": tags})
                    else:
                        stores[i].remember(text, tags=tags)
            ids: dict[int, str] = {}
            for i in range(N_INSTANCES):
                if i in mcp:
                    ids[i] = (await call(mcp[i], "federation_join", {
                        "invite": invites[i], "contribution_level": "minimal", "privacy_mode": "open"}))["instance_id"]
                else:
                    ids[i] = clients[i].join(invites[i], "minimal", "open").instance_id
            assert len(set(ids.values())) == N_INSTANCES

            preview = await call(mcp[0], "federation_contribute", {"dry_run": True, "min_confidence": 0.0})
            assert preview["status"] == "dry_run"
            sent_text = " ".join(p["statement"] or "" for p in preview["preview"]) + " ".join(
                " ".join(p["phrases"]) for p in preview["preview"])
            assert "Dana" not in sent_text and "7946" not in sent_text and "therapist" not in sent_text
            assert "<PERSON>" in sent_text and "<PHONE>" in sent_text

            # The release is DP-selected: compute, from what the aggregated members would send,
            # how surely the shared fact crosses the threshold (one (slot, phrase) is enough).
            holders: Counter[tuple[int, str]] = Counter()
            for i in range(N_MEMBERS):
                if i in DROPOUTS:
                    continue
                if i in mcp:
                    outgoing = (await call(mcp[i], "federation_contribute", {
                        "dry_run": True, "min_confidence": 0.0}))["preview"]
                    keys = {(p["slot"], ph) for p in outgoing for ph in p["phrases"]}
                else:
                    keys = {(p.slot, ph) for p in clients[i].contribute(min_confidence=0.0, dry_run=True).preview
                            for ph in p.phrases}
                holders.update(keys)
            best = max(n for (_, ph), n in holders.items() if "migration" in ph.lower())
            p_release = default_policy().mode("open").calibration.release_probability(best)
            assert p_release > 1 - 1e-9, f"only {best} holders of one phrase: released with p = {p_release}"

            contributed: dict[int, int] = {}
            for i in range(N_MEMBERS):
                if i in mcp:
                    r = await call(mcp[i], "federation_contribute", {"min_confidence": 0.0, "dry_run": False})
                    assert r["status"] == "sent"
                    contributed[i] = r["patterns"]
                else:
                    r2 = clients[i].contribute(min_confidence=0.0)
                    assert r2.status == "sent"
                    contributed[i] = r2.patterns
            assert all(n >= 2 for n in contributed.values())

            # --- the round: close, kill the coordinator mid-aggregation, restart, complete ----------
            with coordinator.admin() as admin:
                state = admin.admin_close_round()
            assert state.phase == "advertise" and state.submissions == N_MEMBERS
            round_seconds = 240
            deadline = time.monotonic() + round_seconds
            participants = [i for i in range(N_MCP, N_MEMBERS) if i not in DROPOUTS]

            async def mcp_sync(i: int) -> None:
                while True:
                    r = await mcp[i].call_tool("federation_sync", {"timeout_seconds": 20})
                    if not r.is_error and r.structured_content["released"]:
                        return
                    await anyio.sleep(0.3)

            async def kill_and_restart() -> None:
                await anyio.sleep(1.5)  # aggregation is under way (dropouts are still awaited)
                await anyio.to_thread.run_sync(coordinator.kill)
                await anyio.sleep(1.0)
                await anyio.to_thread.run_sync(coordinator.start)

            with anyio.fail_after(round_seconds + 30):
                async with anyio.create_task_group() as tg:
                    for i in range(N_MCP):
                        tg.start_soon(mcp_sync, i)
                    for i in participants:
                        tg.start_soon(anyio.to_thread.run_sync, sync_until_released, clients[i], deadline)
                    tg.start_soon(kill_and_restart)

            # No acknowledged contribution was lost: every survivor earned a credit per pattern.
            for i in range(N_MEMBERS):
                credits = (await call(mcp[i], "federation_credits")) if i in mcp else \
                    clients[i].get_credits().model_dump()
                if i in DROPOUTS:
                    assert credits["earned_this_month"] == 0  # their submissions wait for the next round
                else:
                    assert credits["earned_this_month"] == contributed[i], i
            status = await call(mcp[0], "federation_status")
            assert status["privacy_spent_epsilon"] > 0
            assert status["privacy_spent_epsilon"] <= status["privacy_budget_epsilon"]

            # --- query: useful patterns come back, sub-threshold facts never do --------------------
            consumer = clients[CONSUMER]
            found = consumer.query("what must happen before deploying the backend?", min_confidence=0.3)
            assert found, "the shared fact should be released and found"
            top = found[0]
            assert "migration" in (top.summary + " ".join(top.phrases)).lower()
            assert top.contributor_count >= 3
            for text in FACT_B:  # two contributors < min_contributors: never served
                for p in consumer.query(text, min_confidence=0.0):
                    assert "ridge" not in (p.summary + " ".join(p.phrases + p.statements)).lower()
            mcp_answer = await call(mcp[1], "federation_query", {
                "query": "deploying the backend and database migrations", "min_confidence": 0.3})
            assert any("migration" in p["summary"].lower() for p in mcp_answer["patterns"])

            # --- credits: free tier, then refused; verification earns; balance never negative -----
            with pytest.raises(InsufficientCredits):
                consumer.query("backend deploy order", min_confidence=0.0)  # 4th query: free tier used up
            verified = consumer.verify(top.pattern_id)
            assert verified.verified and verified.credits is not None and verified.credits.available == 0.5
            with pytest.raises(InsufficientCredits):
                consumer.query("backend deploy order", min_confidence=0.0)  # 0.5 credits < 1
            assert consumer.get_credits().available == 0.5
            vote = consumer.vote(top.pattern_id, up=True)
            assert vote.up
            with pytest.raises(Forbidden):
                clients[3].vote(top.pattern_id, up=True)  # a contributor cannot vote on its own pattern

            # Concurrent queries from one member never overspend.
            spender = clients[4]
            before = spender.get_credits()
            results: list[str] = []

            def one_query() -> None:
                try:
                    spender.query("database migrations", min_confidence=0.0)
                    results.append("ok")
                except InsufficientCredits:
                    results.append("refused")
            threads = [threading.Thread(target=one_query) for _ in range(10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after = spender.get_credits()
            assert after.available >= 0
            paid = results.count("ok") - before.free_queries_left_today
            assert paid == int(before.available) and after.available == before.available - paid
            assert results.count("ok") + results.count("refused") == 10

            # --- the network goes away: the outbox keeps the contribution until it is back ----------
            # (a dropout of the round: its window budget is unspent)
            coordinator.kill()
            stores[21].remember("Deploy the backend only after the database migrations ran green", tags=["work"])
            queued = clients[21].contribute(min_confidence=0.0)
            assert queued.status == "queued" and queued.patterns >= 1
            coordinator.start()
            drained = clients[21].sync(timeout_seconds=5)
            assert drained.outbox_sent >= 1 and drained.outbox_waiting == 0

            # --- deletion and leaving -------------------------------------------------------------
            deleted = clients[5].delete_contributions()
            assert deleted.deleted_submissions >= 1
            left = await call(mcp[2], "federation_leave")
            assert left["forgot_federation_key"] is True
            # leaving hides the member tools again: the model is told it is no longer a member
            assert (await error(mcp[2], "federation_status", {})).startswith("not_joined: ")

    try:
        anyio.run(scenario)
    finally:
        for c in clients.values():
            c.close()
        for s in stores.values():
            s.close()

    # --- what the coordinator holds: no PII, no raw memory text --------------------------------------
    blobs = [p.read_bytes() for p in coordinator.storage.rglob("*") if p.is_file()]
    assert sum(len(b) for b in blobs) > 0
    # Whole values only: a 4-letter first name turns up by chance in megabytes of base64 ciphertext.
    needles = {v for person in PEOPLE for v in person}
    needles |= {text for i in range(N_INSTANCES) for text, _ in memories_for(i)}
    needles |= {"therapist", "Moraine"}
    leaked = [n for n in needles if any(n.encode() in b or n.lower().encode() in b for b in blobs)]
    assert leaked == []
