"""The federation client against a real coordinator on 127.0.0.1.

Real parts throughout: ``FederationCoordinator`` (uvicorn in a thread, open mode, min_contributors
3, short phase timeouts), several ``FederationClient`` each with its own data dir, identity and
real ``MemoryStore``, the bundled embedding model (one per session, from conftest), real
encryption and secure aggregation. The MCP tools are driven through the ``mcp`` client in-process.
"""

from __future__ import annotations

import concurrent.futures
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_calls import call, error

from continuum_mcp.config import Settings
from continuum_mcp.federation.coordinator import FederationCoordinator
from continuum_mcp.crypto.cipher import Invite, generate_federation_key
from continuum_mcp.errors import (
    BadInvite,
    CoordinatorUnavailable,
    Forbidden,
    InvalidInput,
    NotFound,
    NotJoined,
    PrivacyBudgetExceeded,
    VerificationRefused,
)
from continuum_mcp.federation.client import QUERY_PADDED_SLOTS, FederationClient, federated_confidence, pad_with_decoys
from continuum_mcp.server import build_server
from continuum_mcp.memory.store import MemoryStore
from continuum_mcp.privacy.modes import default_policy
from embeddings import SentenceTransformerEmbedder

#: every test runs on both coordinator backends (SQLite, PostgreSQL: tests/conftest.py)
pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("backend")]

#: Release v2 needs ~8 contributors per phrase at open mode's real epsilon; these federations have
#: 3-4 members, so coordinator and clients share open mode with a large window budget (tau = 2).
SMALL_FEDERATION = default_policy().with_mode("open", budget_epsilon=400.0)

FED = "fed-client-test"
ADMIN = "admin-token-for-tests"

SHARED = [  # the fact several members hold, in slightly varied words
    "I prefer a dark theme in my code editor",
    "My code editor always runs a dark theme",
    "I switched my code editor back to a dark theme",
]
PERSONAL = {
    "a": ["My sister Alice Johnson lives at 12 Baker Street, call her on +44 20 7946 0958",
          "Meeting with Bob Smith about the Acme merger on 3 March", "My email is a.person@example.com"],
    "b": ["My doctor, Dr. Carol White, said my blood pressure is fine",
          "The wifi password at home is hunter2-Xk9!pQ", "I live in Springfield near Oak Avenue"],
    "c": ["Dave Miller owes me 250 dollars since last Friday", "My son Eric starts at Lincoln High School in September",
          "Card 4111 1111 1111 1111 expires 09/27"],
    "d": ["I like a dark theme for my editor when coding", "My manager Frank Green wants the report by Monday"],
}


class Fed:
    """A coordinator plus clients, cleaned up at the end."""

    def __init__(self, tmp: Path, embedder: SentenceTransformerEmbedder) -> None:
        self.tmp, self.embedder = tmp, embedder
        self.key = generate_federation_key()
        self.coord: FederationCoordinator | None = None
        self.clients: dict[str, FederationClient] = {}
        self.stores: list[MemoryStore] = []
        self.port = 0

    def start(self, **kw: Any) -> FederationCoordinator:
        opts: dict[str, Any] = dict(
            port=self.port, storage_path=self.tmp / "coord", privacy_mode="open", min_contributors=3,
            require_contribution=False, federation_id=FED, admin_token=ADMIN, phase_timeout_seconds=20,
            policy=SMALL_FEDERATION)
        opts.update(kw)
        self.coord = FederationCoordinator(**opts)
        self.coord.start()
        self.port = self.coord.port
        return self.coord

    def stop(self) -> None:
        if self.coord is not None:
            self.coord.stop()
            self.coord = None

    def invite(self) -> str:
        assert self.coord is not None
        token = self.coord.create_admission_tokens(1)[0]
        return Invite.build(self.coord.url, FED, token, self.key).format()

    def client(self, name: str, memories: list[str] | None = None, **kw: Any) -> FederationClient:
        settings = Settings(data_dir=self.tmp / name)
        store = MemoryStore(settings, self.embedder)
        self.stores.append(store)
        for text in memories if memories is not None else SHARED + PERSONAL.get(name, []):
            store.remember(text, tags=["prefs"] if "dark" in text.lower() else ["misc"])
        kw.setdefault("max_retries", 1)
        kw.setdefault("backoff_seconds", 0.05)
        kw.setdefault("policy", SMALL_FEDERATION)
        c = FederationClient(store, settings, **kw)
        self.clients[name] = c
        return c

    def close(self) -> None:
        for c in self.clients.values():
            c.close()
        for s in self.stores:
            s.close()
        self.stop()


@pytest.fixture
def fed(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> Iterator[Fed]:
    f = Fed(tmp_path, embedder)
    yield f
    f.close()


def sync_all(clients: list[FederationClient]) -> list[Any]:
    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(lambda c: c.sync(timeout_seconds=90), clients))


def coordinator_text(storage: Path) -> bytes:
    """Every byte of the coordinator's storage (databases, WAL files)."""
    return b"".join(p.read_bytes() for p in sorted(storage.rglob("*")) if p.is_file())


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.slow
def test_join_contribute_round_query_credits_verify_vote_delete_leave(fed: Fed) -> None:
    fed.start()
    a, b, c = (fed.client(n) for n in "abc")
    d = fed.client("d")  # holds a similar fact in its own words; contributes nothing
    for cl in (a, b, c, d):
        j = cl.join(fed.invite(), contribution_level="minimal", privacy_mode="open")
        assert j.instance_id == cl.instance_id and j.federation_mode == "open" and "k-anonymity" in j.note
    key_file = a.dir / "identity.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((a.dir / "membership.json").stat().st_mode) == 0o600

    # dry run: plain text of exactly what would leave, nothing sent
    preview = a.contribute(min_confidence=0.6, dry_run=True)
    assert preview.status == "dry_run" and preview.patterns >= 1
    shared = [p for p in preview.preview if "dark theme" in (p.statement or "")]
    assert len(shared) == 1 and "dark theme" in " ".join(shared[0].phrases)
    assert all("Alice" not in (p.statement or "") and "Baker" not in (p.statement or "") for p in preview.preview)
    assert fed.coord is not None
    assert fed.coord.engine.state(None).submissions == 0  # nothing was sent

    for cl in (a, b, c):
        r = cl.contribute(min_confidence=0.6)
        assert r.status == "sent" and r.round_id == 0 and r.patterns >= 1, r
    assert a.status().outbox_waiting == 0
    # what arrived is exactly what the preview announced: the same slots, confidences, phrase counts
    with fed.coord.store.reading() as con:
        rows = con.execute("SELECT s.slot, s.confidence, COUNT(p.token), s.statement_ct IS NOT NULL "
                           "FROM submissions s LEFT JOIN phrases p ON p.submission_id = s.id "
                           "WHERE s.instance_id = ? GROUP BY s.id ORDER BY s.slot", (a.instance_id,)).fetchall()
    assert rows == sorted((p.slot, p.confidence, len(p.phrases), 1) for p in preview.preview)

    state = fed.coord.close_round()
    assert state.phase == "advertise"
    results = sync_all([a, b, c])
    for r in results:
        assert r.released and r.steps_posted == ["advertise", "share_keys", "masked_input", "unmask"], r
        assert r.privacy_spent_round
    st = a.status()
    # release v2: one window's release spends the window's whole budget, in one shot
    assert st.last_round == 0 and st.privacy_spent_epsilon == pytest.approx(st.privacy_budget_epsilon, rel=1e-6)
    assert st.credits is not None and st.credits.available >= 1

    # the coordinator never saw PII, raw memory text or the shared phrase in plain text
    blob = coordinator_text(fed.tmp / "coord")
    for secret in ["Alice", "Baker Street", "hunter2", "4111 1111", "Lincoln", "dark theme", "code editor",
                   "a.person@example.com", *SHARED]:
        assert secret.encode() not in blob, secret

    # d queries and gets the shared fact back, decrypted and ranked locally
    found = d.query("Which editor theme do people prefer?", min_confidence=0.3)
    assert found, "the shared fact should be released and found"
    top = found[0]
    assert "dark theme" in top.summary and top.contributor_count >= 3 and top.source == "federated"
    assert top.confidence == pytest.approx(federated_confidence(top.similarity, top.contributor_count, 3), abs=2e-3)
    assert d.search_cache("dark editor theme", 3)[0].pattern_id == top.pattern_id

    # verification: d's own memory supports it; a contributed it (coordinator refuses);
    # a member whose memory does not hold it is refused locally
    v = d.verify(top.pattern_id)
    assert v.verified and v.similarity >= 0.7 and v.credits is not None and v.credits.available >= 0.5
    a.query("Which editor theme do people prefer?", min_confidence=0.3)
    with pytest.raises(Forbidden):
        a.verify(top.pattern_id)
    e = fed.client("e", memories=["I grow tomatoes on the balcony"])
    e.join(fed.invite(), contribution_level="minimal", privacy_mode="open")
    e.query("editor theme", min_confidence=0.0)
    with pytest.raises(VerificationRefused):
        e.verify(top.pattern_id)
    vote = d.vote(top.pattern_id, up=True)
    assert "1 up" in vote.detail
    assert d.get_credits().earned_this_month >= 0.5

    # deletion (release v2): recorded at once, but nothing released changes on request (an
    # immediate recompute would show exactly what a had contributed); the next scheduled release
    # withdraws what fell under the floor (test_coordinator and test_release_v2 run that release)
    dele = a.delete_contributions()
    assert dele.deleted_submissions >= 1 and dele.withdrawn_patterns == 0
    s = d.sync()
    assert s.withdrawn_from_cache == 0
    assert any(p.pattern_id == top.pattern_id for p in d.query("editor theme", min_confidence=0.0))

    # leaving forgets the federation key and membership, keeps identity and ledger
    left = b.leave()
    assert left.federation_id == FED
    assert not (b.dir / "membership.json").exists() and (b.dir / "identity.key").exists()
    assert b.status().joined is False
    with pytest.raises(NotJoined):
        b.query("anything")


@pytest.mark.slow
def test_outbox_waits_while_coordinator_is_down_and_drains_later(fed: Fed) -> None:
    fed.start()
    cl = fed.client("a")
    cl.join(fed.invite(), contribution_level="minimal", privacy_mode="open")
    fed.stop()
    r = cl.contribute(min_confidence=0.6)
    assert r.status == "queued" and r.patterns >= 1 and "nothing is lost" in r.message
    assert cl.outbox_size() == 1
    with pytest.raises(CoordinatorUnavailable):
        cl.sync()
    assert cl.outbox_size() == 1  # still there after a failed sync
    st = cl.status()
    assert st.coordinator_reachable is False and st.outbox_waiting == 1

    coord = fed.start()  # same storage, same port
    s = cl.sync()
    assert s.outbox_sent == r.patterns and s.outbox_waiting == 0
    state = coord.engine.state(cl.instance_id)
    assert state.you_submitted and state.round_id == 0


@pytest.mark.slow
def test_privacy_budget_refusal_says_when_budget_returns(fed: Fed) -> None:
    fed.start()
    cl = fed.client("a")
    cl.join(fed.invite(), contribution_level="minimal", privacy_mode="open")
    mode = cl.policy.mode("open")
    n = 0
    with cl.ledger() as ledger:
        while ledger.check(mode.round_spend()).allowed:  # real spends of earlier (simulated) rounds
            ledger.spend(mode.round_spend(), round_id=f"{FED}/old{n}")
            n += 1
    assert n == 1  # release v2: one window's release spends the window's whole budget
    dry = cl.contribute(min_confidence=0.6, dry_run=True)
    assert dry.privacy is not None and dry.privacy.allowed is False and dry.patterns >= 1
    with pytest.raises(PrivacyBudgetExceeded, match="returns at"):
        cl.contribute(min_confidence=0.6)
    assert cl.outbox_size() == 0
    assert fed.coord is not None and fed.coord.engine.state(None).submissions == 0


def test_join_refusals(fed: Fed) -> None:
    fed.start()
    cl = fed.client("a")
    with pytest.raises(InvalidInput, match="your mode high forbids it"):
        cl.join(fed.invite(), privacy_mode="high")
    bad = Invite.build(fed.coord.url, FED, "no-such-token", fed.key).format()  # type: ignore[union-attr]
    with pytest.raises(BadInvite):
        cl.join(bad, privacy_mode="open")
    with pytest.raises(InvalidInput):
        cl.join("not an invite")
    with pytest.raises(NotJoined):
        cl.contribute()
    assert cl.membership() is None


# ------------------------------------------------------------------------------------------ MCP


@pytest.mark.slow
def test_mcp_tools_join_status_preview_query_and_errors(fed: Fed, embedder: SentenceTransformerEmbedder) -> None:
    fed.start()
    settings = Settings(data_dir=fed.tmp / "mcp")
    invite = fed.invite()

    async def go() -> None:
        async with Client(build_server(settings, embedder)) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            fed_tools = {"federation_join", "federation_status", "federation_contribute", "federation_sync",
                         "federation_query", "federation_credits", "federation_verify", "federation_vote",
                         "federation_leave", "federation_auto_sync", "preview_patterns"}
            assert "federation_join" in tools and not (fed_tools - {"federation_join"}) & set(tools)  # shown once joined
            assert "not_joined" in await error(c, "federation_status", {})
            assert "not_joined" in await error(c, "federation_query", {"query": "x"})
            for text in SHARED + PERSONAL["a"]:
                await call(c, "remember", {"text": text})

            j = await call(c, "federation_join", {"invite": invite, "contribution_level": "minimal",
                                                   "privacy_mode": "open"})
            assert j["instance_id"].startswith("fed-")
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert fed_tools - {"federation_join"} <= set(tools)
            for name in fed_tools - {"federation_join"}:
                t = tools[name]
                assert t.title and t.description and t.output_schema and t.annotations is not None, name
            assert tools["federation_query"].annotations.open_world_hint is True
            assert tools["preview_patterns"].annotations.open_world_hint is False
            prev = await call(c, "preview_patterns", {"min_confidence": 0.6})
            assert any("dark theme" in p["statement"] for p in prev["patterns"])
            dry = await call(c, "federation_contribute", {"min_confidence": 0.6, "dry_run": True})
            assert dry["status"] == "dry_run" and dry["patterns"] >= 1
            assert fed.coord is not None and fed.coord.engine.state(None).submissions == 0
            st = await call(c, "federation_status", {})
            assert st["joined"] and st["federation_mode"] == "open" and st["coordinator_reachable"] is True
            assert (await call(c, "federation_query", {"query": "editor theme", "min_confidence": 0.0}))["patterns"] == []
            assert "invalid_input" in await error(c, "federation_query", {"query": "x", "min_confidence": 3})
            assert "invalid_input" in await error(c, "federation_contribute", {"min_confidence": -1})
            rec = await call(c, "recall", {"query": "editor theme", "include_federated": True})
            assert rec["hits"] and rec.get("federated") == []

            fed.stop()
            msg = await error(c, "federation_credits", {})
            assert "coordinator_unavailable" in msg
            queued = await call(c, "federation_contribute", {"min_confidence": 0.6, "dry_run": False})
            assert queued["status"] == "queued"

    anyio.run(go)


def test_error_mapping_identity_persistence_and_private_files(fed: Fed) -> None:
    fed.start()
    cl = fed.client("a", memories=[])
    cl.join(fed.invite(), contribution_level="minimal", privacy_mode="open")
    with pytest.raises((NotFound, InvalidInput)):  # the coordinator's error body, as a typed exception
        cl.vote("p-999999", up=True)
    with pytest.raises(NotFound, match="not in the local cache"):
        cl.verify("p-1")
    # a client that has not joined cannot act
    other = fed.client("z", memories=[])
    with pytest.raises(NotJoined):
        other.get_credits()
    # the identity persists across client objects; the ledger db is private
    cl2 = FederationClient(fed.stores[0], Settings(data_dir=fed.tmp / "a"))
    try:
        assert cl2.instance_id == cl.instance_id and cl2.membership() is not None
    finally:
        cl2.close()
    assert stat.S_IMODE((cl.dir / "outbox.db").stat().st_mode) == 0o600


@pytest.mark.slow
def test_auto_sync_contributes_in_the_background_and_is_persisted(fed: Fed) -> None:
    import time

    coord = fed.start()
    cl = fed.client("a")
    cl.join(fed.invite(), contribution_level="minimal", privacy_mode="open")
    s = cl.enable_auto_sync(interval_minutes=0.01)
    assert s.enabled and cl.auto_sync_running
    deadline = time.monotonic() + 30
    while not coord.engine.state(cl.instance_id).you_submitted and time.monotonic() < deadline:
        time.sleep(0.2)
    assert coord.engine.state(cl.instance_id).you_submitted
    assert cl.has_new_patterns() is False  # what it would send now is what it sent
    cl.close()
    again = FederationClient(fed.stores[0], Settings(data_dir=fed.tmp / "a"))
    try:
        assert again.membership().auto_sync.enabled  # type: ignore[union-attr]
        assert again.start_auto_sync() and again.auto_sync_running
        off = again.disable_auto_sync()
        assert off.enabled is False and not again.auto_sync_running
        assert again.membership().auto_sync.enabled is False  # type: ignore[union-attr]
    finally:
        again.close()
    fed.clients.pop("a")


@pytest.mark.slow
def test_cli_federation_commands_and_exit_codes(fed: Fed, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from continuum_mcp.cli.main import main

    fed.start()
    data = fed.tmp / "cli"
    store = MemoryStore(Settings(data_dir=data), fed.embedder)
    for text in SHARED:
        store.remember(text)
    store.close()
    d = ["--data-dir", str(data), "--json"]
    assert main(["federation", "status", *d]) == 0
    assert json.loads(capsys.readouterr().out)["joined"] is False
    assert main(["federation", "query", "x", *d]) == 8  # not joined
    capsys.readouterr()
    assert main(["federation", "join", fed.invite(), "--level", "minimal", "--mode", "open", *d]) == 0
    joined = json.loads(capsys.readouterr().out)
    assert joined["federation_id"] == FED
    assert main(["federation", "contribute", "--dry-run", "--min-confidence", "0.6", *d]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["status"] == "dry_run" and any("dark theme" in (p["statement"] or "") for p in dry["preview"])
    assert fed.coord is not None and fed.coord.engine.state(None).submissions == 0
    assert main(["patterns", "--preview", *d]) == 0
    assert json.loads(capsys.readouterr().out)["patterns"]
    assert main(["federation", "join", "garbage", *d]) == 2
    fed.stop()
    assert main(["federation", "credits", *d]) == 7  # coordinator unavailable
    err = capsys.readouterr().err
    assert "coordinator_unavailable" in err


def test_query_slots_are_padded_with_decoys_to_a_fixed_count() -> None:
    for released in ([3, 9], list(range(0, 200, 5))):
        wanted = released[:2]
        for k in range(20):
            padded = pad_with_decoys(wanted, released, 256, bytes([k]) * 32)
            assert len(padded) == QUERY_PADDED_SLOTS == len(set(padded)) and set(wanted) <= set(padded)
            # decoys are drawn from released slots first, so wanted ones do not stand out
            assert len(set(padded) & set(released)) == min(len(released), QUERY_PADDED_SLOTS)
