"""The federation coordinator against real HTTP, real identities, real secure aggregation.

Every test starts a real ``FederationCoordinator`` on 127.0.0.1 (uvicorn in a thread). Members
talk to it as the production client does: ``CoordinatorAPI`` (signed, typed), contributions built
by ``federation.submission`` and rounds driven by ``RoundParticipant`` (``fedkit.run_full_round``).
Refusals the well-behaved API cannot produce (unsigned, tampered, replayed, oversized requests)
are sent raw with ``fedkit.send``. Most tests use a 16-slot codebook (16 x 384 = 6144 secagg
dimensions) to keep the run short; one test runs the full 256 x 384 layout.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fedkit import (
    stored_bytes,
    table_rows,
    Member,
    admin_api,
    admit,
    member_api,
    pattern,
    rand_unit,
    refused,
    run_full_round,
    send,
    unit,
)

from continuum_mcp.crypto.cipher import FederationCipher, generate_federation_key
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.errors import (
    BadInvite,
    Conflict,
    Forbidden,
    InsufficientCredits,
    InvalidInput,
    NotAdmitted,
    NotFound,
    RateLimited,
    WrongPhase,
)
from continuum_mcp.federation.coordinator import CoordinatorStore, FederationCoordinator, main, openapi_document
from continuum_mcp.federation.protocol import (
    ADMIN_TOKEN_HEADER,
    MAX_BODY_BYTES,
    ErrorBody,
    QueryRequest,
    RoundState,
    SecAggPost,
)
from continuum_mcp.federation.submission import build_contribution
from continuum_mcp.privacy.modes import default_policy
from continuum_mcp.secagg import SecAggClient, SecAggParams

#: every test runs on both coordinator backends (SQLite, PostgreSQL: tests/conftest.py)
pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("backend")]

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


@pytest.fixture()
def cipher() -> FederationCipher:
    return FederationCipher(generate_federation_key(), FED)


def admin_close(coord: FederationCoordinator) -> RoundState:
    return admin_api(coord.url, ADMIN).admin_close_round()


def contributing(coord: FederationCoordinator, cipher: FederationCipher, n: int, slot: int, phrase: str,
                 rng: np.random.Generator) -> list[Member]:
    """``n`` new members, each having contributed one pattern (``slot``, ``phrase``) to round 0."""
    members = admit(coord, n)
    for m in members:
        m.patterns = [pattern(slot, [phrase], rand_unit(rng, DIM))]
        m.contribute(0, cipher)
    return members


def query(m: Member, *slots: int, priority: bool = False) -> Any:
    return m.api.query(QueryRequest(slots=list(slots), priority=priority))


def db_snapshot(coord: FederationCoordinator) -> str:
    """Digest of every row of every table of the coordinator's database (what a refused request must
    not change; on PostgreSQL the replay guard's nonces, which every signed request adds, are left out,
    and so are the address limit's buckets, which every request of a non-member charges)."""
    return hashlib.sha256(repr(table_rows(coord.store, skip=["seen_nonces", "address_buckets"])).encode()).hexdigest()


# ------------------------------------------------------------------------------------------ tests


def test_join_with_and_without_invites(make_coord: Any, tmp_path: Path) -> None:
    coord = make_coord(privacy_mode="balanced")
    token, other = coord.create_admission_tokens(2)
    a, b = Member(member_api(coord.url)), Member(member_api(coord.url))
    with pytest.raises(BadInvite):
        a.join(None, mode="balanced")
    with pytest.raises(BadInvite):
        a.join("not-a-token", mode="balanced")
    with pytest.raises(InvalidInput) as refusal:
        a.join(token, mode="high")
    assert "balanced mode" in refusal.value.message and "high forbids it" in refusal.value.message
    r = a.join(token, mode="balanced")
    assert r.instance_id == a.id and r.federation.privacy_mode == "balanced"
    with pytest.raises(BadInvite):
        b.join(token, mode="balanced")  # single use
    assert a.join(None, mode="balanced").instance_id == a.id  # idempotent for the same member
    with pytest.raises(Conflict):
        a.join(None, level="extensive", mode="balanced")
    assert b.join(other, mode="open").instance_id == b.id  # open members may join a balanced federation
    # an open (invite-less) federation admits anyone
    open_coord = make_coord(storage=tmp_path / "open", private=False)
    c = Member(member_api(open_coord.url))
    c.join(None)
    info = c.api.federation()
    assert info.private is False and info.slots == SLOTS


def test_cli_invite_tokens_admit(make_coord: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "cli"
    assert main(["invite", "--storage", str(storage), "--count", "2"]) == 0
    tokens = capsys.readouterr().out.split()
    assert len(tokens) == 2
    coord = make_coord(storage=storage)
    Member(member_api(coord.url)).join(tokens[0])
    with pytest.raises(BadInvite):
        Member(member_api(coord.url)).join(tokens[0])


def test_admission_tokens_never_start_with_a_dash(tmp_path: Path) -> None:
    """A token is typed on a command line (`federation join --token T`), where one starting with
    '-' is read as an option: 1 in 64 URL-safe strings start so, so 2,000 old tokens held ~31."""
    store = CoordinatorStore(tmp_path)
    tokens = store.create_admission_tokens(2000)
    store.close()
    assert len(set(tokens)) == 2000 and not [t for t in tokens if t.startswith("-")]


def test_a_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    """The coordinator cannot serve its --port: exit 2 (invalid_input) with one line naming the
    address, not a traceback."""
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "continuum_mcp.cli.main", "coordinator", "--port", str(port),
                            "--storage", str(tmp_path / "c"), "--federation-id", "fed-port", "--privacy-mode", "open"],
                           capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "Traceback" not in p.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in p.stderr and "pick another --port" in p.stderr


@pytest.mark.slow
def test_full_round_release_query_credits_deletion(make_coord: Any, cipher: FederationCipher, embedder: Any) -> None:
    # the centroid-quality check below is calibrated for the mode's bare noise; the sybil
    # calibration (each share raised by sqrt(t / honest survivors)) is tested in test_roles
    coord = make_coord(sybil_fraction=0.0)
    members = admit(coord, 7)
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
        m.patterns = [pattern(3, phrases, vecs[k], facts[k])]
        if k < 2:  # a slot only two members share: below the floor of 3, never served
            m.patterns.append(pattern(7, ["cat vacuum fear"], rare[k], "the cat fears the vacuum"))
    r0 = outsider.api.round_current()
    assert r0.round_id == 0 and r0.phase == "collecting"
    # too few submitters: the round is carried over, nothing lost
    for m in contributors[:2]:
        m.contribute(0, cipher)
    assert admin_close(coord).phase == "collecting"
    for m in contributors[2:]:
        m.contribute(0, cipher)
    st = admin_close(coord)
    assert st.phase == "advertise" and st.params is not None
    assert st.submissions == coord.engine.state(None).submissions == 6  # the operator's view (the admin route)
    assert outsider.api.round_current().submissions is None  # members never see counts
    params = SecAggParams.model_validate(st.params)
    assert params.session_id == f"{FED}/r0/a0" and params.dim == SLOTS * DIM
    assert sorted(params.roster) == sorted(m.id for m in contributors)
    assert params.noise_sigma >= coord.engine.mode.sigma * params.quantised_sensitivity - 1e-12
    with pytest.raises(WrongPhase):
        contributors[0].contribute(0, cipher)  # contributions wait for the next round
    final = run_full_round(contributors)
    assert final.phase == "released" and final.epsilon_spent is not None and final.epsilon_spent > 0
    assert outsider.api.round_current().round_id == 1

    # DP centroid of slot 3 is close to the mean of its contributors' vectors
    slots = {s.slot: s for s in outsider.api.slots().slots}
    assert 3 in slots and 7 not in slots
    centroid = np.array(slots[3].vector)
    true_mean = unit(vecs.mean(axis=0))
    cos_true = float(centroid @ true_mean)
    cos_other = float(centroid @ unit(rare.mean(axis=0)))
    assert abs(np.linalg.norm(centroid) - 1) < 1e-4
    assert cos_true > 0.2 and cos_true > cos_other + 0.1, (cos_true, cos_other)

    # query: free tier first, then charged; only released material is served
    q = query(outsider, 3, 7, 11)
    assert q.free_tier and q.charged == 0
    assert [p.slot for p in q.patterns] == [3]
    pat = q.patterns[0]
    got = {cipher.open_phrase(3, ph.token, base64.b64decode(ph.ciphertext)) for ph in pat.phrases}
    assert got == set(common)  # each member's own phrase (1 contributor) is never served
    # open mode releases a statement only when that statement itself has min_contributors
    # contributors: every member worded its fact differently, so none is released
    assert pat.statements == []
    assert pat.pattern_id == "p-3" and pat.released_at_round == 0
    for _ in range(2):
        assert query(outsider, 3).free_tier
    with pytest.raises(InsufficientCredits):
        query(outsider, 3)

    # credits: +1 per accepted pattern to the round's contributors
    c0 = contributors[0].api.credits()
    assert c0.available == 2 and c0.earned_this_month == 2 and c0.pending == 0
    assert contributors[5].api.credits().available == 1
    # verification: not by a contributor, once per member, +0.5
    with pytest.raises(Forbidden):
        contributors[0].api.verify("p-3")
    v = outsider.api.verify("p-3")
    assert v.credits is not None and v.credits.available == 0.5
    with pytest.raises(Conflict):
        outsider.api.verify("p-3")
    with pytest.raises(NotFound):
        outsider.api.verify("p-7")
    # votes: contributors cannot vote on their own pattern; 3 net up votes -> +2 to contributors
    with pytest.raises(Forbidden):
        contributors[1].api.vote("p-3", up=True)
    voters = admit(coord, 2)
    for voter in [outsider, *voters]:
        outcome = voter.api.vote("p-3", up=True)
    assert "quality threshold reached" in outcome.detail
    assert contributors[5].api.credits().available == 3
    voters[0].api.vote("p-3", up=False)  # changing a vote is allowed, credit only once
    voters[0].api.vote("p-3", up=True)
    assert contributors[5].api.credits().available == 3
    # priority costs 5 (free for extensive); download costs 10
    with pytest.raises(InsufficientCredits):
        contributors[5].api.download()
    for _ in range(3):
        query(contributors[5], 3)
    q = query(contributors[5], 3)
    assert not q.free_tier and q.charged == 1 and q.credits.available == 2
    status = contributors[0].api.status()
    assert status.epsilon_spent_window > 0 and status.last_released_round == 0

    # the coordinator's storage holds none of the texts, and no single member's embedding
    blobs = stored_bytes(coord.store)
    assert coord.store.dialect != "sqlite" or any(p.name.endswith("-wal") for p in coord.store.storage_files())
    texts = facts + common + [f"secret phrase {k} of member" for k in range(6)] + ["cat vacuum fear", "the cat fears the vacuum"]
    for text in texts:
        for variant in {text, text.lower()}:
            assert not any(variant.encode() in b for b in blobs), variant
    for vec in vecs:
        assert not any(vec.astype("<f4").tobytes()[:64] in b for b in blobs)

    # deletion (release v2): 4 of 6 contributors delete or leave -> the common phrases fall below
    # the floor of 3, but nothing changes on request (an immediate recompute would show exactly what
    # these members had contributed); the next scheduled release withdraws them
    before = query(voters[1], 3).patterns
    for m in contributors[:3]:
        d = m.api.delete_contributions()
        assert d.deleted_submissions >= 1 and d.withdrawn_patterns == 0
    assert contributors[3].api.leave().withdrawn_patterns == 0
    with pytest.raises(NotAdmitted):
        contributors[3].api.status()
    after = query(voters[1], 3).patterns
    assert [p.model_dump() for p in after] == [p.model_dump() for p in before]
    nxt = [outsider, *voters]
    for m in nxt:
        m.patterns = [pattern(5, ["next window"], rare[0])]
        m.contribute(1, cipher)
    admin_close(coord)
    assert run_full_round(nxt).phase == "released"
    assert query(voters[1], 3).patterns == []
    assert 3 not in {s.slot for s in outsider.api.slots().slots}


@pytest.mark.slow
def test_concurrent_queries_never_overspend(make_coord: Any, cipher: FederationCipher) -> None:
    coord = make_coord(credit_rules=None)
    rng = np.random.default_rng(1)
    members = admit(coord, 4)
    for m in members:
        m.patterns = [pattern(s, ["shared phrase"], rand_unit(rng, DIM)) for s in range(5)]
        m.contribute(0, cipher)
    admin_close(coord)
    assert run_full_round(members).phase == "released"
    spender = members[0]
    assert spender.api.credits().available == 5

    def one(_: int) -> Any:
        try:
            return query(spender, 1, 2)
        except InsufficientCredits:
            return None

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(24)))
    paid = [r for r in results if r is not None]
    assert len(paid) == 3 + 5, results  # 3 free, 5 paid, the other 16 refused with 402
    bal = spender.api.credits()
    assert bal.available == 0 and bal.spent_this_month == 5 and bal.free_queries_left_today == 0
    assert sum(p.charged for p in paid) == 5 and sum(p.free_tier for p in paid) == 3


def test_queries_free_when_contribution_not_required(make_coord: Any) -> None:
    coord = make_coord(require_contribution=False)
    (m,) = admit(coord, 1)
    for _ in range(6):
        assert query(m, 0, priority=True).charged == 0
    assert m.api.download().charged == 0
    assert m.api.credits().available == 0


@pytest.mark.slow
def test_thirty_percent_dropout_round_completes(make_coord: Any, cipher: FederationCipher) -> None:
    # long enough for 10 members to post each phase on a loaded 2-core machine; the 3 dropped
    # members then cost one timeout
    coord = make_coord(phase_timeout_seconds=6)
    rng = np.random.default_rng(2)
    members = contributing(coord, cipher, 10, 2, "common phrase", rng)
    admin_close(coord)
    dropped = members[:3]
    st = run_full_round(members, drop={m.id: "masked_input" for m in dropped})
    assert st.phase == "released"
    for m in dropped:  # their acknowledged submissions wait for the next round
        assert coord.store.pending_snapshot(m.id) == [(1, 0, 2)]
        assert m.api.credits().available == 0 and m.api.round_current().you_submitted
    assert members[5].api.credits().available == 1
    assert members[5].api.round_current().round_id == 1


@pytest.mark.slow
def test_too_few_survivors_aborts_and_keeps_submissions(make_coord: Any, cipher: FederationCipher) -> None:
    coord = make_coord(phase_timeout_seconds=6)
    rng = np.random.default_rng(3)
    members = contributing(coord, cipher, 6, 4, "some phrase", rng)  # t = 4
    admin_close(coord)
    st = run_full_round(members, drop={m.id: "advertise" for m in members[:3]})
    assert st.phase == "aborted"
    nxt = members[0].api.round_current()
    assert nxt.round_id == 1 and nxt.phase == "collecting" and nxt.submissions is None and nxt.you_submitted
    assert coord.engine.state(None).submissions == 6  # the operator's view
    assert query(members[0], 4).patterns == []
    assert admin_close(coord).phase == "advertise"
    assert run_full_round(members).phase == "released"
    q = query(members[0], 4)
    ph = q.patterns[0].phrases[0]  # sealed under its token, not a round: still readable after carry-over
    assert cipher.open_phrase(4, ph.token, base64.b64decode(ph.ciphertext)) == "some phrase"


@pytest.mark.slow
def test_restart_mid_round_loses_nothing(make_coord: Any, cipher: FederationCipher, tmp_path: Path) -> None:
    storage = tmp_path / "restart"
    coord = make_coord(storage=storage)
    rng = np.random.default_rng(4)
    members = contributing(coord, cipher, 5, 6, "kept phrase", rng)
    admin_close(coord)
    # everyone advertises; only the first member gets to share its keys before the restart
    first, rest = members[0], members[1:]
    st = run_full_round(members, drop={first.id: "masked_input", **{m.id: "share_keys" for m in rest}})
    assert st.phase == "share_keys"
    # a signed request captured before the restart
    captured = members[1].identity.sign_request("GET", "/v1/credits", b"")
    assert send(coord.url, "GET", "/v1/credits", headers=captured).status_code == 200
    coord.stop()

    coord2 = make_coord(storage=storage)
    for m in members:
        m.api.close()
        m.api = member_api(coord2.url, m.identity)
    # the attempt is in the store: the restarted coordinator continues it where it stopped
    st2 = members[0].api.round_current()
    assert st2.round_id == 0 and st2.attempt == 0 and st2.phase == "share_keys" and st2.submissions is None
    assert coord2.engine.state(None).submissions == 5
    assert SecAggParams.model_validate(st2.params).session_id == f"{FED}/r0/a0"
    for m in members:
        assert coord2.store.pending_snapshot(m.id) == [(0, 0, 6)]
    refused(send(coord2.url, "GET", "/v1/credits", headers=captured), 401, "replay")
    assert run_full_round(members).phase == "released"
    q = query(members[0], 6)
    ph = q.patterns[0].phrases[0] if q.patterns else None
    assert ph is not None and cipher.open_phrase(6, ph.token, base64.b64decode(ph.ciphertext)) == "kept phrase"


@pytest.mark.slow
def test_full_size_codebook_round(make_coord: Any, cipher: FederationCipher) -> None:
    coord = make_coord(slots=256, dim=384)
    rng = np.random.default_rng(5)
    members = admit(coord, 5)
    for k, m in enumerate(members):
        # each member's own phrase: a phrase's token has no slot, so one shared word would count across slots
        m.patterns = [pattern(200, ["big phrase"], rand_unit(rng, DIM)), pattern(k, [f"own {k}"], rand_unit(rng, DIM))]
        m.contribute(0, cipher)
    assert SecAggParams.model_validate(admin_close(coord).params).dim == 256 * 384
    assert run_full_round(members).phase == "released"
    assert [p.slot for p in query(members[0], 200, 0, 1).patterns] == [200]


@pytest.mark.slow
def test_security_refusals_change_nothing(make_coord: Any, cipher: FederationCipher) -> None:
    coord = make_coord()
    url, path = coord.url, "/v1/contributions"
    rng = np.random.default_rng(6)
    members = admit(coord, 4)
    a, b = members[0], members[1]
    for m in members:
        m.patterns = [pattern(1, ["p"], rand_unit(rng, DIM))]
    body = build_contribution([pattern(1, [], rand_unit(rng, DIM), confidence=0.5)], 0, cipher, "high"
                              ).model_dump_json().encode()
    before = db_snapshot(coord)

    refused(send(url, "POST", path, body), 401, "unauthenticated")
    tampered = a.identity.sign_request("POST", path, body)
    refused(send(url, "POST", path, body.replace(b"0.5", b"0.6"), headers=tampered), 401, "unauthenticated")
    wrong_path = a.identity.sign_request("POST", path + "?x=1", body)
    refused(send(url, "POST", path, body, headers=wrong_path), 401, "unauthenticated")
    # signed by b's key but claiming to be a (acting for another identity at the HTTP layer)
    forged = b.identity.sign_request("POST", path, body)
    forged["X-Continuum-Instance"] = a.id
    refused(send(url, "POST", path, body, headers=forged), 401, "unauthenticated")
    # a stranger's key with a's public key header: the signature does not verify
    stranger = Identity.generate().sign_request("POST", path, body)
    stranger["X-Continuum-Instance"], stranger["X-Continuum-Public-Key"] = a.id, a.identity.public_key_b64
    refused(send(url, "POST", path, body, headers=stranger), 401, "unauthenticated")
    stale = a.identity.sign("POST", path, body, timestamp=int(time.time()) - 3600).to_headers()
    refused(send(url, "POST", path, body, headers=stale), 401, "replay")
    refused(send(url, "POST", path, b"x" * (MAX_BODY_BYTES + 1), sign_as=a.identity), 413, "too_large")
    assert "JSON" in refused(send(url, "POST", path, b'{"round_id": 0, "patterns": [', sign_as=a.identity), 400,
                             "invalid_input").message
    bad = {"round_id": 0, "patterns": [{"slot": -1, "confidence": 2, "phrases": []}]}
    msg = refused(send(url, "POST", path, bad, sign_as=a.identity), 400, "invalid_input").message
    assert "patterns.0.slot" in msg and "patterns.0.confidence" in msg
    outside = {"round_id": 0, "patterns": [{"slot": SLOTS, "confidence": 1, "phrases": []}]}
    refused(send(url, "POST", path, outside, sign_as=a.identity), 400, "invalid_input")
    future = {"round_id": 5, "patterns": [{"slot": 1, "confidence": 1, "phrases": []}]}
    refused(send(url, "POST", path, future, sign_as=a.identity), 409, "wrong_phase")
    stranger_member = Member(member_api(url), patterns=[pattern(1, ["p"], rand_unit(rng, DIM))])
    with pytest.raises(NotAdmitted):
        stranger_member.contribute(0, cipher)
    with pytest.raises(NotAdmitted):
        stranger_member.api.round_current()
    refused(send(url, "POST", "/v1/admin/rounds/close", headers={ADMIN_TOKEN_HEADER: "wrong"}), 403, "forbidden")
    signed_is_not_admin = send(url, "POST", "/v1/admin/invites", {"count": 1}, sign_as=a.identity)
    refused(signed_is_not_admin, 403, "forbidden")
    assert db_snapshot(coord) == before

    # replay of an accepted request
    h = a.identity.sign_request("POST", path, body)
    assert send(url, "POST", path, body, headers=h).status_code == 202
    after_first = db_snapshot(coord)
    refused(send(url, "POST", path, body, headers=h), 401, "replay")
    assert db_snapshot(coord) == after_first

    # secagg: a member posting a message signed by another identity is refused
    for m in members:
        m.contribute(0, cipher)
    params = SecAggParams.model_validate(admin_close(coord).params)
    clients = {m.id: SecAggClient(m.identity, params) for m in members}
    b_advert = clients[b.id].advertise_keys()
    before = db_snapshot(coord)
    with pytest.raises(Forbidden):
        a.api.secagg_post(0, "advertise", b_advert)
    with pytest.raises(WrongPhase):
        a.api.secagg_post(0, "share_keys", clients[a.id].advertise_keys())
    with pytest.raises(InvalidInput):
        a.api.secagg_post(0, "advertise", SecAggPost(message={"envelope": {}, "payload": {}}))
    assert db_snapshot(coord) == before
    assert b.api.secagg_post(0, "advertise", b_advert).ok
    with pytest.raises(Conflict):
        b.api.secagg_post(0, "advertise", b_advert)


def test_rate_limit_returns_429(make_coord: Any) -> None:
    coord = make_coord(rate_limit_per_minute=5)
    (m,) = admit(coord, 1)
    api = member_api(coord.url, m.identity, max_retries=0)  # see every 429, do not wait it out
    limited: list[RateLimited] = []
    for _ in range(8):
        try:
            api.credits()
        except RateLimited as exc:
            limited.append(exc)
    assert limited and limited[0].retry_after >= 1


def test_openapi_document_covers_routes(make_coord: Any) -> None:
    coord = make_coord()
    doc = send(coord.url, "GET", "/openapi.json").json()
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
    members = contributing(coord, cipher, 3, 0, "fuzz", np.random.default_rng(7))
    doc = send(coord.url, "GET", "/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    signer = members[0]
    seen: dict[int, int] = {}
    client = httpx.Client(timeout=30)

    def fire(case: Any, sign: bool) -> None:
        kw = case.as_transport_kwargs(base_url=coord.url)
        body = b"" if "json" not in kw else json.dumps(kw["json"]).encode()
        headers = {k: v for k, v in kw["headers"].items() if k.lower() not in ("content-length",)}
        req = client.build_request(kw["method"], kw["url"], params=kw.get("params") or None, content=body,
                                   headers=headers)
        if sign:  # over the path httpx will send, query string included
            req.headers.update(signer.identity.sign_request(kw["method"], req.url.raw_path.decode(), body))
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
                fire(case, sign=True)
                fire(case, sign=False)

            try:
                fuzz()
            except Unsatisfiable:  # e.g. a negative mode for an operation with nothing to violate
                assert mode is schemathesis.GenerationMode.NEGATIVE
    client.close()
    # a guard against a handler that hangs, not a speed target (the route table grew with governance)
    assert time.monotonic() - start < 300
    assert seen.get(200, 0) + seen.get(202, 0) > 10, seen  # the fuzzer reached the handlers
    assert not any(code >= 500 for code in seen), seen


@pytest.mark.slow
def test_high_mode_small_federation_releases_nothing(make_coord: Any, cipher: FederationCipher) -> None:
    """Under high, 4 contributors are far below the DP threshold: the round completes, the ledgers
    are charged, and neither the slot nor its phrases are served."""
    coord = make_coord(privacy_mode="high", policy=default_policy())
    rng = np.random.default_rng(8)
    members = admit(coord, 4, mode="high")
    for m in members:
        m.patterns = [pattern(9, ["everyone says this"], rand_unit(rng, DIM))]
        m.contribute(0, cipher, mode="high")
    admin_close(coord)
    assert run_full_round(members).phase == "released"
    requirement = coord.policy.release_requirement("high", "standard")
    assert requirement.contributors_50 > 4 * 3  # computed, not typed in: far above 4 contributors
    assert query(members[0], 9).patterns == []
    assert members[0].api.slots().slots == []
    assert members[0].api.status().epsilon_spent_window == pytest.approx(coord.engine.round_epsilon(), rel=1e-3)


def test_cli_options_are_generated_from_the_one_config(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from continuum_mcp.federation.coordinator import CoordinatorConfig, build_parser
    from continuum_mcp.federation.coordinator.config import parse_config

    monkeypatch.setenv("COLUMNS", "100000")  # one help line per option: descriptions are not wrapped
    parser = build_parser()
    dests = vars(parser.parse_args(["--storage", "/tmp/s"]))
    help_text = parser.format_help()
    for name, f in CoordinatorConfig.model_fields.items():
        if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("cli") is False:
            continue  # nested models (credit rules, the SecAgg+ design): set in code, not on the command line
        assert name in dests, name
        assert f.description and (f.description in help_text or name == "private"), name
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
