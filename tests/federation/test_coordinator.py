"""The federation coordinator against real HTTP, real identities, real secure aggregation.

Every test starts a real ``FederationCoordinator`` on 127.0.0.1 (uvicorn in a thread) and talks to
it with httpx, signing each request with a real Ed25519 identity. The client side of secure
aggregation is driven by the real ``SecAggClient`` state machines through the HTTP routes (a small
test-only driver below; the production client is ``continuum_mcp.federation.client._client``). Most tests use a
16-slot codebook (16 x 384 = 6144 secagg dimensions) to keep the run short; one test runs the full
256 x 384 layout.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from continuum_mcp.federation.coordinator.http import FederationCoordinator, main, openapi_document
from continuum_mcp.federation.coordinator.store import DB_NAME
from continuum_mcp.crypto.cipher import FederationCipher, generate_federation_key
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.federation.protocol import (
    ADMIN_TOKEN_HEADER,
    MAX_BODY_BYTES,
    ContributionRequest,
    CreditBalance,
    ErrorBody,
    JoinRequest,
    PatternSubmission,
    PhraseSubmission,
    QueryResponse,
    RoundState,
    SecAggPost,
)
from continuum_mcp.privacy.modes import default_policy
from continuum_mcp.secagg._core import KeyRoster, SecAggClient, SecAggParams, ShareInbox, SignedMessage, SurvivorList

pytestmark = pytest.mark.timeout(180)

FED = "fed-test"
ADMIN = "admin-secret-token"
SLOTS = 16
DIM = 384
#: Release v2 needs ~8 distinct contributors per phrase at open mode's real epsilon 30 per window;
#: these functional tests run federations of 4-7 members, so their coordinators use open mode with
#: a large window budget (tau = 2: three contributors release a phrase). The real calibration is
#: tested in test_release_v2 / test_accounting_v2 and by the high-mode test below.
SMALL_FEDERATION = default_policy().with_mode("open", budget_epsilon=400.0)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def embedder() -> Any:
    from embeddings import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder()
    emb.start()
    return emb


@pytest.fixture()
def make_coord(tmp_path: Path) -> Iterator[Any]:
    started: list[FederationCoordinator] = []

    def make(storage: Path | None = None, **kw: Any) -> FederationCoordinator:
        opts: dict[str, Any] = dict(
            storage_path=storage or tmp_path / "coord", privacy_mode="open", min_contributors=3,
            federation_id=FED, admin_token=ADMIN, slots=SLOTS, dim=DIM, phase_timeout_seconds=30,
            policy=SMALL_FEDERATION,
        )
        opts.update(kw)
        c = FederationCoordinator(**opts)
        c.start()
        started.append(c)
        return c

    yield make
    for c in started:
        try:
            c.stop()
        except Exception:
            pass


# ------------------------------------------------------------------------------------------ driver


@dataclass
class Pattern:
    slot: int
    phrases: list[str]
    statement: str | None
    vector: np.ndarray


@dataclass
class Member:
    """Test-only client: signs requests and runs SecAggClient steps over HTTP."""

    coord: FederationCoordinator
    cipher: FederationCipher
    identity: Identity = field(default_factory=Identity.generate)
    patterns: list[Pattern] = field(default_factory=list)
    secagg: SecAggClient | None = None

    @property
    def id(self) -> str:
        return self.identity.instance_id

    def request(self, method: str, path: str, body: Any = None, *, sign: bool = True,
                headers: dict[str, str] | None = None) -> httpx.Response:
        raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        h = {"content-type": "application/json"} if raw else {}
        if sign:
            h.update(self.identity.sign_request(method, path, raw))
        h.update(headers or {})
        return httpx.request(method, self.coord.url + path, content=raw, headers=h, timeout=60)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        r = self.request(method, path, body)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        return r.json()

    def join(self, token: str | None, level: str = "standard", mode: str = "open") -> httpx.Response:
        return self.request("POST", "/v1/join", JoinRequest(admission_token=token, contribution_level=level,
                                                            privacy_mode=mode).model_dump())

    def contribute(self, round_id: int) -> httpx.Response:
        subs = []
        for p in self.patterns:
            phrases = [PhraseSubmission(token=self.cipher.phrase_token(p.slot, ph),
                                        ciphertext=b64(self.cipher.encrypt(p.slot, round_id, ph))) for ph in p.phrases]
            st = None if p.statement is None else b64(self.cipher.encrypt(p.slot, round_id, p.statement))
            subs.append(PatternSubmission(slot=p.slot, confidence=0.9, phrases=phrases, statement_ciphertext=st))
        body = ContributionRequest(round_id=round_id, patterns=subs).model_dump()
        return self.request("POST", "/v1/contributions", body)

    def state(self, round_id: int | None = None) -> RoundState:
        path = "/v1/rounds/current" if round_id is None else f"/v1/rounds/{round_id}"
        return RoundState.model_validate(self.ok("GET", path))

    def credits(self) -> CreditBalance:
        return CreditBalance.model_validate(self.ok("GET", "/v1/credits"))

    def input_vector(self, params: SecAggParams) -> np.ndarray:
        x = np.zeros(params.dim)
        for p in self.patterns:
            x[p.slot * DIM_OF(params) : (p.slot + 1) * DIM_OF(params)] = p.vector
        n = float(np.linalg.norm(x))
        return x * (params.clip_norm / n) if n > 0 else x

    def post(self, round_id: int, kind: str, msg: SignedMessage) -> httpx.Response:
        return self.request("POST", f"/v1/rounds/{round_id}/secagg/{kind}",
                            SecAggPost(message=msg.model_dump(mode="json")).model_dump())


_DIMS: dict[int, int] = {}


def DIM_OF(params: SecAggParams) -> int:  # block size of a slot for this params' total length
    return _DIMS[params.dim]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wait_phase(m: Member, round_id: int, phases: Sequence[str], timeout: float = 30) -> RoundState:
    end = time.monotonic() + timeout
    while True:
        st = m.state(round_id)
        if st.phase in phases:
            return st
        assert time.monotonic() < end, f"round {round_id} stuck in {st.phase}, wanted {phases}"
        time.sleep(0.05)


def admin_close(coord: FederationCoordinator) -> RoundState:
    r = httpx.post(coord.url + "/v1/admin/rounds/close", headers={ADMIN_TOKEN_HEADER: ADMIN}, timeout=60)
    assert r.status_code == 200, r.text
    return RoundState.model_validate(r.json())


def run_secagg(members: Sequence[Member], round_id: int, drop: dict[str, str] | None = None) -> RoundState:
    """Drive one attempt of the current round; ``drop`` maps member id -> first phase it skips."""
    drop = drop or {}
    st = members[0].state(round_id)
    assert st.phase == "advertise", st
    params = SecAggParams.model_validate(st.params)
    roster = [m for m in members if m.id in params.roster]
    order = ["advertise", "share_keys", "masked_input", "unmask"]

    def active(phase: str) -> list[Member]:
        return [m for m in roster if m.id not in drop or order.index(drop[m.id]) > order.index(phase)]

    for m in roster:
        m.secagg = SecAggClient(m.identity, params)
    for m in active("advertise"):
        assert m.post(round_id, "advertise", m.secagg.advertise_keys()).status_code == 200
    st = wait_phase(roster[0], round_id, ["share_keys", "aborted"])
    if st.phase == "aborted":
        return st
    for m in active("share_keys"):
        kr = KeyRoster.model_validate(m.ok("GET", f"/v1/rounds/{round_id}/secagg/roster"))
        assert m.post(round_id, "share_keys", m.secagg.share_keys(kr)).status_code == 200
    st = wait_phase(roster[0], round_id, ["masked_input", "aborted"])
    if st.phase == "aborted":
        return st
    for m in active("masked_input"):
        inbox = ShareInbox.model_validate(m.ok("GET", f"/v1/rounds/{round_id}/secagg/inbox"))
        msg = m.secagg.masked_input(inbox, m.input_vector(params))
        assert m.post(round_id, "masked_input", msg).status_code == 200
    survivor = active("unmask")[0] if active("unmask") else roster[0]
    st = wait_phase(survivor, round_id, ["unmask", "aborted"])
    if st.phase == "aborted":
        return st
    for m in active("unmask"):
        sl = SurvivorList.model_validate(m.ok("GET", f"/v1/rounds/{round_id}/secagg/survivors"))
        assert m.post(round_id, "unmask", m.secagg.unmask(sl)).status_code == 200
    return wait_phase(survivor, round_id, ["released", "aborted"])


def new_members(coord: FederationCoordinator, cipher: FederationCipher, n: int, level: str = "standard") -> list[Member]:
    tokens = coord.create_admission_tokens(n)
    out = []
    for t in tokens:
        m = Member(coord, cipher)
        r = m.join(t, level=level)
        assert r.status_code == 200, r.text
        out.append(m)
    _DIMS[coord.config.slots * coord.config.dim] = coord.config.dim
    return out


def contributing_members(coord: FederationCoordinator, cipher: FederationCipher, n: int, slot: int, phrase: str,
                         rng: np.random.Generator) -> list[Member]:
    """``n`` new members, each having contributed one pattern (``slot``, ``phrase``) to round 0."""
    members = new_members(coord, cipher, n)
    for m in members:
        m.patterns = [Pattern(slot, [phrase], None, rand_unit(rng))]
        assert m.contribute(0).status_code == 202
    return members


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def rand_unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    return unit(rng.standard_normal(dim))


def db_snapshot(coord: FederationCoordinator) -> str:
    """Digest of every row of every table of coordinator.db (what a refused request must not change)."""
    conn = sqlite3.connect(str(coord.storage_path / DB_NAME))
    h = hashlib.sha256()
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        for row in conn.execute(f"SELECT * FROM {name} ORDER BY 1"):
            h.update(repr(row).encode())
    conn.close()
    return h.hexdigest()


def error(r: httpx.Response, status: int, code: str) -> ErrorBody:
    assert r.status_code == status, (r.status_code, r.text)
    body = ErrorBody.model_validate(r.json())
    assert body.code == code, body
    return body


@pytest.fixture()
def cipher() -> FederationCipher:
    return FederationCipher(generate_federation_key(), FED)


# ------------------------------------------------------------------------------------------ tests


def test_join_with_and_without_invites(make_coord: Any, cipher: FederationCipher, tmp_path: Path) -> None:
    coord = make_coord(privacy_mode="balanced")
    token, other = coord.create_admission_tokens(2)
    a, b = Member(coord, cipher), Member(coord, cipher)
    error(a.join(None, mode="balanced"), 403, "bad_invite")
    error(a.join("not-a-token", mode="balanced"), 403, "bad_invite")
    msg = error(a.join(token, mode="high"), 400, "invalid_input").message
    assert "balanced mode" in msg and "high forbids it" in msg
    r = a.join(token, mode="balanced")
    assert r.status_code == 200 and r.json()["instance_id"] == a.id
    assert r.json()["federation"]["privacy_mode"] == "balanced"
    error(b.join(token, mode="balanced"), 403, "bad_invite")  # single use
    assert a.join(None, mode="balanced").status_code == 200  # idempotent for the same member
    error(a.join(None, level="extensive", mode="balanced"), 409, "conflict")
    assert b.join(other, mode="open").status_code == 200  # open members may join a balanced federation
    # an open (invite-less) federation admits anyone
    open_coord = make_coord(storage=tmp_path / "open", private=False)
    c = Member(open_coord, cipher)
    assert c.join(None).status_code == 200
    info = c.ok("GET", "/v1/federation")
    assert info["private"] is False and info["slots"] == SLOTS


def test_cli_invite_tokens_admit(make_coord: Any, cipher: FederationCipher, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "cli"
    assert main(["invite", "--storage", str(storage), "--count", "2"]) == 0
    tokens = capsys.readouterr().out.split()
    assert len(tokens) == 2
    coord = make_coord(storage=storage)
    assert Member(coord, cipher).join(tokens[0]).status_code == 200
    error(Member(coord, cipher).join(tokens[0]), 403, "bad_invite")


@pytest.mark.slow
def test_full_round_release_query_credits_deletion(make_coord: Any, cipher: FederationCipher, embedder: Any) -> None:
    coord = make_coord()
    members = new_members(coord, cipher, 7)
    contributors, outsider = members[:6], members[6]
    facts = [
        "I deploy services with docker compose on a small VPS",
        "my services run in docker compose on a virtual server",
        "we use docker compose to deploy our apps on a VPS",
        "deployment is done through docker compose on a rented server",
        "docker compose runs all my services on the VPS",
        "I ship the app with docker compose to a cheap virtual server",
    ]
    vecs = embedder.encode(facts)
    rare = embedder.encode(["my cat is afraid of the vacuum cleaner", "the cat hides from the vacuum"])
    common = ["docker compose", "vps deployment", "container services"]
    for k, m in enumerate(contributors):
        phrases = list(common) + [f"secret phrase {k} of member"]  # one phrase only this member has
        m.patterns = [Pattern(3, phrases, facts[k], vecs[k])]
        if k < 2:  # a slot only two members share: below the floor of 3, never served
            m.patterns.append(Pattern(7, ["cat vacuum fear"], "the cat fears the vacuum", rare[k]))
    r0 = outsider.state()
    assert r0.round_id == 0 and r0.phase == "collecting"
    # too few submitters: the round is carried over, nothing lost
    for m in contributors[:2]:
        assert m.contribute(0).status_code == 202
    assert admin_close(coord).phase == "collecting"
    for m in contributors[2:]:
        assert m.contribute(0).status_code == 202
    st = admin_close(coord)
    assert st.phase == "advertise" and st.submissions == 6 and st.params is not None
    params = SecAggParams.model_validate(st.params)
    assert params.session_id == f"{FED}/r0/a0" and params.dim == SLOTS * DIM
    assert sorted(params.roster) == sorted(m.id for m in contributors)
    assert params.noise_sigma >= coord.engine.mode.sigma * params.quantised_sensitivity - 1e-12
    error(contributors[0].contribute(0), 409, "wrong_phase")  # contributions wait for the next round
    final = run_secagg(contributors, 0)
    assert final.phase == "released" and final.epsilon_spent is not None and final.epsilon_spent > 0
    assert outsider.state().round_id == 1

    # DP centroid of slot 3 is close to the mean of its contributors' vectors
    slots = {s["slot"]: s for s in outsider.ok("GET", "/v1/slots")["slots"]}
    assert 3 in slots and 7 not in slots
    centroid = np.array(slots[3]["vector"])
    true_mean = unit(vecs.mean(axis=0))
    cos_true = float(centroid @ true_mean)
    cos_other = float(centroid @ unit(rare.mean(axis=0)))
    assert abs(np.linalg.norm(centroid) - 1) < 1e-4
    assert cos_true > 0.2 and cos_true > cos_other + 0.1, (cos_true, cos_other)

    # query: free tier first, then charged; only released material is served
    q = QueryResponse.model_validate(outsider.ok("POST", "/v1/query", {"slots": [3, 7, 11]}))
    assert q.free_tier and q.charged == 0
    assert [p.slot for p in q.patterns] == [3]
    pat = q.patterns[0]
    got = {cipher.decrypt(3, ph.round_id, base64.b64decode(ph.ciphertext)) for ph in pat.phrases}
    assert got == set(common)  # each member's own phrase (1 contributor) is never served
    statements = {cipher.decrypt(3, s.round_id, base64.b64decode(s.ciphertext)) for s in pat.statements}
    assert statements == set(facts)  # open mode: the contributors' scrubbed statements
    assert pat.pattern_id == "p-3" and pat.released_at_round == 0
    for _ in range(2):
        assert QueryResponse.model_validate(outsider.ok("POST", "/v1/query", {"slots": [3]})).free_tier
    error(outsider.request("POST", "/v1/query", {"slots": [3]}), 402, "insufficient_credits")

    # credits: +1 per accepted pattern to the round's contributors
    c0 = contributors[0].credits()
    assert c0.available == 2 and c0.earned_this_month == 2 and c0.pending == 0
    assert contributors[5].credits().available == 1
    # verification: not by a contributor, once per member, +0.5
    error(contributors[0].request("POST", "/v1/patterns/p-3/verify"), 403, "forbidden")
    v = outsider.ok("POST", "/v1/patterns/p-3/verify")
    assert v["credits"]["available"] == 0.5
    error(outsider.request("POST", "/v1/patterns/p-3/verify"), 409, "conflict")
    error(outsider.request("POST", "/v1/patterns/p-7/verify"), 404, "not_found")
    # votes: contributors cannot vote on their own pattern; 3 net up votes -> +2 to contributors
    error(contributors[1].request("POST", "/v1/patterns/p-3/vote", {"up": True}), 403, "forbidden")
    voters = new_members(coord, cipher, 2)
    for voter in [outsider, *voters]:
        outcome = voter.ok("POST", "/v1/patterns/p-3/vote", {"up": True})
    assert "quality threshold reached" in outcome["detail"]
    assert contributors[5].credits().available == 3
    voters[0].ok("POST", "/v1/patterns/p-3/vote", {"up": False})  # changing a vote is allowed, credit only once
    voters[0].ok("POST", "/v1/patterns/p-3/vote", {"up": True})
    assert contributors[5].credits().available == 3
    # priority costs 5 (free for extensive); download costs 10
    error(contributors[5].request("GET", "/v1/patterns/download"), 402, "insufficient_credits")
    for _ in range(3):
        contributors[5].ok("POST", "/v1/query", {"slots": [3]})
    q = QueryResponse.model_validate(contributors[5].ok("POST", "/v1/query", {"slots": [3]}))
    assert not q.free_tier and q.charged == 1 and q.credits.available == 2
    status = contributors[0].ok("GET", "/v1/status")
    assert status["epsilon_spent_window"] > 0 and status["last_released_round"] == 0

    # the coordinator's storage holds none of the texts, and no single member's embedding
    blobs = [p.read_bytes() for p in coord.store.storage_files()]
    assert any(p.name.endswith("-wal") for p in coord.store.storage_files())
    texts = facts + common + [f"secret phrase {k} of member" for k in range(6)] + ["cat vacuum fear", "the cat fears the vacuum"]
    for text in texts:
        for variant in {text, text.lower()}:
            assert not any(variant.encode() in b for b in blobs), variant
    for vec in vecs:
        assert not any(vec.astype("<f4").tobytes()[:64] in b for b in blobs)

    # deletion (release v2): 4 of 6 contributors delete or leave -> the common phrases fall below
    # the floor of 3, but nothing changes on request (an immediate recompute would show exactly what
    # these members had contributed); the next scheduled release withdraws them
    before = QueryResponse.model_validate(voters[1].ok("POST", "/v1/query", {"slots": [3]})).patterns
    for m in contributors[:3]:
        d = m.ok("DELETE", "/v1/contributions")
        assert d["deleted_submissions"] >= 1 and d["withdrawn_patterns"] == 0
    d = contributors[3].ok("POST", "/v1/leave")
    assert d["withdrawn_patterns"] == 0
    error(contributors[3].request("GET", "/v1/status"), 403, "not_admitted")
    after = QueryResponse.model_validate(voters[1].ok("POST", "/v1/query", {"slots": [3]})).patterns
    assert [p.model_dump() for p in after] == [p.model_dump() for p in before]
    nxt = [outsider, *voters]
    for m in nxt:
        m.patterns = [Pattern(5, ["next window"], None, rare[0])]
        assert m.contribute(1).status_code == 202
    admin_close(coord)
    assert run_secagg(nxt, 1).phase == "released"
    assert QueryResponse.model_validate(voters[1].ok("POST", "/v1/query", {"slots": [3]})).patterns == []
    assert 3 not in {s["slot"] for s in outsider.ok("GET", "/v1/slots")["slots"]}


@pytest.mark.slow
def test_concurrent_queries_never_overspend(make_coord: Any, cipher: FederationCipher) -> None:
    coord = make_coord(credit_rules=None)
    rng = np.random.default_rng(1)
    members = new_members(coord, cipher, 4)
    for k, m in enumerate(members):
        m.patterns = [Pattern(s, ["shared phrase"], None, rand_unit(rng)) for s in range(5)]
        assert m.contribute(0).status_code == 202
    admin_close(coord)
    assert run_secagg(members, 0).phase == "released"
    spender = members[0]
    assert spender.credits().available == 5
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: spender.request("POST", "/v1/query", {"slots": [1, 2]}), range(24)))
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 3 + 5 and codes.count(402) == 24 - 8, codes  # 3 free, 5 paid
    bal = spender.credits()
    assert bal.available == 0 and bal.spent_this_month == 5 and bal.free_queries_left_today == 0
    paid = [QueryResponse.model_validate(r.json()) for r in results if r.status_code == 200]
    assert sum(p.charged for p in paid) == 5 and sum(p.free_tier for p in paid) == 3


def test_queries_free_when_contribution_not_required(make_coord: Any, cipher: FederationCipher) -> None:
    coord = make_coord(require_contribution=False)
    (m,) = new_members(coord, cipher, 1)
    for _ in range(6):
        q = QueryResponse.model_validate(m.ok("POST", "/v1/query", {"slots": [0], "priority": True}))
        assert q.charged == 0
    assert m.ok("GET", "/v1/patterns/download")["charged"] == 0
    assert m.credits().available == 0


@pytest.mark.slow
def test_thirty_percent_dropout_round_completes(make_coord: Any, cipher: FederationCipher) -> None:
    # long enough for 10 members to post each phase on a loaded 2-core machine; the 3 dropped
    # members then cost one timeout
    coord = make_coord(phase_timeout_seconds=6)
    rng = np.random.default_rng(2)
    members = contributing_members(coord, cipher, 10, 2, "common phrase", rng)
    admin_close(coord)
    dropped = members[:3]
    st = run_secagg(members, 0, drop={m.id: "masked_input" for m in dropped})
    assert st.phase == "released"
    for m in dropped:  # their acknowledged submissions wait for the next round
        assert coord.store.pending_snapshot(m.id) == [(1, 0, 2)]
        assert m.credits().available == 0 and m.state().you_submitted
    assert members[5].credits().available == 1
    assert members[5].state().round_id == 1


@pytest.mark.slow
def test_too_few_survivors_aborts_and_keeps_submissions(make_coord: Any, cipher: FederationCipher) -> None:
    coord = make_coord(phase_timeout_seconds=2)
    rng = np.random.default_rng(3)
    members = new_members(coord, cipher, 6)  # t = 4
    for m in members:
        m.patterns = [Pattern(4, ["some phrase"], None, rand_unit(rng))]
        assert m.contribute(0).status_code == 202
    admin_close(coord)
    st = run_secagg(members, 0, drop={m.id: "advertise" for m in members[:3]})
    assert st.phase == "aborted"
    nxt = members[0].state()
    assert nxt.round_id == 1 and nxt.phase == "collecting" and nxt.submissions == 6 and nxt.you_submitted
    assert QueryResponse.model_validate(members[0].ok("POST", "/v1/query", {"slots": [4]})).patterns == []
    assert admin_close(coord).phase == "advertise"
    assert run_secagg(members, 1).phase == "released"
    q = QueryResponse.model_validate(members[0].ok("POST", "/v1/query", {"slots": [4]}))
    assert q.patterns[0].phrases[0].round_id == 0  # ciphertexts stay bound to the round they were made for


@pytest.mark.slow
def test_restart_mid_round_loses_nothing(make_coord: Any, cipher: FederationCipher, tmp_path: Path) -> None:
    storage = tmp_path / "restart"
    coord = make_coord(storage=storage)
    rng = np.random.default_rng(4)
    members = contributing_members(coord, cipher, 5, 6, "kept phrase", rng)
    admin_close(coord)
    st = members[0].state()
    params = SecAggParams.model_validate(st.params)
    for m in members:
        m.secagg = SecAggClient(m.identity, params)
        assert m.post(0, "advertise", m.secagg.advertise_keys()).status_code == 200
    wait_phase(members[0], 0, ["share_keys"])
    kr = KeyRoster.model_validate(members[0].ok("GET", "/v1/rounds/0/secagg/roster"))
    assert members[0].post(0, "share_keys", members[0].secagg.share_keys(kr)).status_code == 200
    # a signed request captured before the restart
    captured_body = b""
    captured = members[1].identity.sign_request("GET", "/v1/credits", captured_body)
    assert httpx.get(coord.url + "/v1/credits", headers=captured).status_code == 200
    coord.stop()

    coord2 = make_coord(storage=storage)
    for m in members:
        m.coord = coord2
    st2 = members[0].state()
    assert st2.round_id == 0 and st2.attempt == 1 and st2.phase == "advertise" and st2.submissions == 5
    assert SecAggParams.model_validate(st2.params).session_id == f"{FED}/r0/a1"
    for m in members:
        assert coord2.store.pending_snapshot(m.id) == [(0, 0, 6)]
    error(httpx.get(coord2.url + "/v1/credits", headers=captured), 401, "replay")
    assert run_secagg(members, 0).phase == "released"
    q = QueryResponse.model_validate(members[0].ok("POST", "/v1/query", {"slots": [6]}))
    assert q.patterns and cipher.decrypt(6, 0, base64.b64decode(q.patterns[0].phrases[0].ciphertext)) == "kept phrase"


@pytest.mark.slow
def test_full_size_codebook_round(make_coord: Any, cipher: FederationCipher) -> None:
    coord = make_coord(slots=256, dim=384)
    rng = np.random.default_rng(5)
    members = new_members(coord, cipher, 5)
    for k, m in enumerate(members):
        m.patterns = [Pattern(200, ["big phrase"], None, rand_unit(rng)), Pattern(k, ["own"], None, rand_unit(rng))]
        assert m.contribute(0).status_code == 202
    assert SecAggParams.model_validate(admin_close(coord).params).dim == 256 * 384
    assert run_secagg(members, 0).phase == "released"
    q = QueryResponse.model_validate(members[0].ok("POST", "/v1/query", {"slots": [200, 0, 1]}))
    assert [p.slot for p in q.patterns] == [200]


def test_security_refusals_change_nothing(make_coord: Any, cipher: FederationCipher) -> None:
    coord = make_coord()
    rng = np.random.default_rng(6)
    members = new_members(coord, cipher, 4)
    a, b = members[0], members[1]
    for m in members:
        m.patterns = [Pattern(1, ["p"], None, rand_unit(rng))]
    body = json.dumps(ContributionRequest(round_id=0, patterns=[PatternSubmission(
        slot=1, confidence=0.5, phrases=[])]).model_dump()).encode()
    before = db_snapshot(coord)

    error(a.request("POST", "/v1/contributions", body, sign=False), 401, "unauthenticated")
    tampered = a.identity.sign_request("POST", "/v1/contributions", body)
    error(a.request("POST", "/v1/contributions", body.replace(b"0.5", b"0.6"), sign=False, headers=tampered),
          401, "unauthenticated")
    wrong_path = a.identity.sign_request("POST", "/v1/contributions?x=1", body)
    error(a.request("POST", "/v1/contributions", body, sign=False, headers=wrong_path), 401, "unauthenticated")
    # signed by b's key but claiming to be a (acting for another identity at the HTTP layer)
    forged = b.identity.sign_request("POST", "/v1/contributions", body)
    forged["X-Continuum-Instance"] = a.id
    error(a.request("POST", "/v1/contributions", body, sign=False, headers=forged), 401, "unauthenticated")
    # a stranger's key with a's public key header: the signature does not verify
    stranger = Identity.generate().sign_request("POST", "/v1/contributions", body)
    stranger["X-Continuum-Instance"], stranger["X-Continuum-Public-Key"] = a.id, a.identity.public_key_b64
    error(a.request("POST", "/v1/contributions", body, sign=False, headers=stranger), 401, "unauthenticated")
    stale = a.identity.sign("POST", "/v1/contributions", body, timestamp=int(time.time()) - 3600).to_headers()
    error(a.request("POST", "/v1/contributions", body, sign=False, headers=stale), 401, "replay")
    error(a.request("POST", "/v1/contributions", b"x" * (MAX_BODY_BYTES + 1)), 413, "too_large")
    assert "JSON" in error(a.request("POST", "/v1/contributions", b'{"round_id": 0, "patterns": ['), 400,
                           "invalid_input").message
    msg = error(a.request("POST", "/v1/contributions", {"round_id": 0, "patterns": [{"slot": -1, "confidence": 2,
                                                                                      "phrases": []}]}),
                400, "invalid_input").message
    assert "patterns.0.slot" in msg and "patterns.0.confidence" in msg
    error(a.request("POST", "/v1/contributions", {"round_id": 0, "patterns": [{"slot": SLOTS, "confidence": 1,
                                                                                "phrases": []}]}), 400, "invalid_input")
    error(a.request("POST", "/v1/contributions", {"round_id": 5, "patterns": [{"slot": 1, "confidence": 1,
                                                                                "phrases": []}]}), 409, "wrong_phase")
    stranger_member = Member(coord, cipher, patterns=[Pattern(1, ["p"], None, rand_unit(rng))])
    error(stranger_member.contribute(0), 403, "not_admitted")
    error(stranger_member.request("GET", "/v1/rounds/current"), 403, "not_admitted")
    error(a.request("POST", "/v1/admin/rounds/close", sign=False, headers={ADMIN_TOKEN_HEADER: "wrong"}), 403, "forbidden")
    error(a.request("POST", "/v1/admin/invites", {"count": 1}), 403, "forbidden")  # signed is not admin
    assert db_snapshot(coord) == before

    # replay of an accepted request
    raw = json.dumps(ContributionRequest(round_id=0, patterns=[PatternSubmission(
        slot=1, confidence=0.5, phrases=[])]).model_dump()).encode()
    h = a.identity.sign_request("POST", "/v1/contributions", raw)
    assert a.request("POST", "/v1/contributions", raw, sign=False, headers=h).status_code == 202
    after_first = db_snapshot(coord)
    error(a.request("POST", "/v1/contributions", raw, sign=False, headers=h), 401, "replay")
    assert db_snapshot(coord) == after_first

    # secagg: a member posting a message signed by another identity is refused
    for m in members:
        assert m.contribute(0).status_code == 202
    st = admin_close(coord)
    params = SecAggParams.model_validate(st.params)
    clients = {m.id: SecAggClient(m.identity, params) for m in members}
    b_advert = clients[b.id].advertise_keys()
    before = db_snapshot(coord)
    error(a.post(0, "advertise", b_advert), 403, "forbidden")
    error(a.post(0, "share_keys", clients[a.id].advertise_keys()), 409, "wrong_phase")
    error(a.request("POST", "/v1/rounds/0/secagg/advertise", {"message": {"envelope": {}, "payload": {}}}), 400,
          "invalid_input")
    assert db_snapshot(coord) == before
    assert b.post(0, "advertise", b_advert).status_code == 200
    error(b.post(0, "advertise", b_advert), 409, "conflict")


def test_rate_limit_returns_429(make_coord: Any, cipher: FederationCipher) -> None:
    coord = make_coord(rate_limit_per_minute=5)
    (m,) = new_members(coord, cipher, 1)
    codes = [m.request("GET", "/v1/credits") for _ in range(8)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited and int(limited[0].headers["Retry-After"]) >= 1
    assert ErrorBody.model_validate(limited[0].json()).code == "rate_limited"


def test_openapi_document_covers_routes(make_coord: Any) -> None:
    coord = make_coord()
    doc = httpx.get(coord.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert doc == json.loads(json.dumps(openapi_document(coord.info())))
    join = doc["paths"]["/v1/join"]["post"]
    assert {p["name"] for p in join["parameters"]} >= {"X-Continuum-Signature", "X-Continuum-Nonce"}
    assert join["responses"]["403"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")
    assert "402" in doc["paths"]["/v1/query"]["post"]["responses"]


@pytest.mark.slow
def test_schemathesis_fuzz_finds_no_server_errors(make_coord: Any, cipher: FederationCipher) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    coord = make_coord(rate_limit_per_minute=100_000)
    rng = np.random.default_rng(7)
    members = new_members(coord, cipher, 3)
    for m in members:
        m.patterns = [Pattern(0, ["fuzz"], None, rand_unit(rng))]
        m.contribute(0)
    doc = httpx.get(coord.url + "/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    signer = members[0]
    seen: dict[int, int] = {}
    client = httpx.Client(timeout=30)

    def send(case: Any, sign: bool) -> None:
        kw = case.as_transport_kwargs(base_url=coord.url)
        body = b"" if "json" not in kw else json.dumps(kw["json"]).encode()
        headers = {k: v for k, v in kw["headers"].items() if k.lower() not in ("content-length",)}
        req = client.build_request(kw["method"], kw["url"], params=kw.get("params") or None, content=body,
                                   headers=headers)
        if sign:
            path = req.url.raw_path.decode()
            for k, v in signer.identity.sign_request(kw["method"], path, body).items():
                req.headers[k] = v
        try:
            r = client.send(req)
        except httpx.HTTPError as exc:  # a malformed header httpx refuses to send is not a server error
            raise AssertionError(f"transport error {exc!r}") from exc
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (kw["method"], kw["url"], r.status_code, r.text)
        if r.status_code >= 400 and r.status_code != 405:
            ErrorBody.model_validate(r.json())

    start = time.monotonic()
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.startswith("/v1/admin"):
            continue
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            try:
                strategy = op.as_strategy(generation_mode=mode)
            except Exception:  # some operations have nothing to negate
                continue

            @settings(max_examples=8, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def fuzz(case: Any) -> None:
                send(case, sign=True)
                send(case, sign=False)

            try:
                fuzz()
            except Unsatisfiable:  # e.g. a negative mode for an operation with nothing to violate
                assert mode is schemathesis.GenerationMode.NEGATIVE
    client.close()
    assert time.monotonic() - start < 60
    assert seen.get(200, 0) + seen.get(202, 0) > 10, seen  # the fuzzer reached the handlers
    assert not any(code >= 500 for code in seen), seen


@pytest.mark.slow
def test_high_mode_small_federation_releases_nothing(make_coord: Any, cipher: FederationCipher) -> None:
    """Under high, 4 contributors are far below the DP threshold: the round completes, the ledgers
    are charged, and neither the slot nor its phrases are served."""
    coord = make_coord(privacy_mode="high", policy=default_policy())
    rng = np.random.default_rng(8)
    members = []
    for t in coord.create_admission_tokens(4):
        m = Member(coord, cipher)
        assert m.join(t, mode="high").status_code == 200
        members.append(m)
    _DIMS[SLOTS * DIM] = DIM
    for m in members:
        m.patterns = [Pattern(9, ["everyone says this"], None, rand_unit(rng))]
        assert m.contribute(0).status_code == 202
    admin_close(coord)
    assert run_secagg(members, 0).phase == "released"
    requirement = coord.policy.release_requirement("high", "standard")
    assert requirement.contributors_50 > 4 * 3  # computed, not typed in: far above 4 contributors
    assert QueryResponse.model_validate(members[0].ok("POST", "/v1/query", {"slots": [9]})).patterns == []
    assert members[0].ok("GET", "/v1/slots")["slots"] == []
    spent = members[0].ok("GET", "/v1/status")["epsilon_spent_window"]
    assert spent == pytest.approx(coord.engine.round_epsilon(), rel=1e-3)


def test_cli_options_are_generated_from_the_one_config(capsys: Any) -> None:
    from continuum_mcp.federation.coordinator import CoordinatorConfig, build_parser
    from continuum_mcp.federation.coordinator.config import parse_config

    parser = build_parser()
    by_dest = {a.dest: a for a in parser._actions}
    for name, f in CoordinatorConfig.model_fields.items():
        if name == "credit_rules":  # a nested model: set in code, not on the command line
            continue
        assert name in by_dest, name
        assert f.description and (f.description in (by_dest[name].help or "") or name == "private")
    cfg = parse_config(["--storage", "/tmp/s", "--open", "--round-interval", "7", "--privacy-mode", "balanced"])
    assert cfg == CoordinatorConfig(storage_path=Path("/tmp/s"), port=8080, private=False, round_interval_seconds=7,
                                    privacy_mode="balanced")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "coordinator invite --storage DIR" in out and "(default: 300.0)" in out


def test_every_route_of_the_protocol_has_one_handler_and_one_openapi_operation() -> None:
    from continuum_mcp.federation.coordinator.http import HANDLERS
    from continuum_mcp.federation.protocol import routes

    assert set(HANDLERS) == set(routes())
    ops = {op["operationId"] for p in openapi_document()["paths"].values() for op in p.values()}
    assert ops == set(routes()) | {"openapi"}
