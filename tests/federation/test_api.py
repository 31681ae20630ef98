"""CoordinatorAPI against the real coordinator app, in-process (Starlette's TestClient as the
injected httpx client), and its retry/error behaviour over real sockets and injected transports.

The round test at the end is the pattern tests and benchmarks use to drive rounds: several
``RoundParticipant`` stepped by ``client.step`` over one ``CoordinatorAPI`` each.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from continuum_mcp.crypto.cipher import FederationCipher, generate_federation_key
from continuum_mcp.crypto.identity import HEADER_NONCE, Identity
from continuum_mcp.errors import (
    ERRORS_BY_CODE,
    BadInvite,
    ContinuumError,
    CoordinatorUnavailable,
    NotAdmitted,
    NotFound,
    RateLimited,
    WrongPhase,
)
from continuum_mcp.federation.api import CoordinatorAPI, error_from_response
from continuum_mcp.federation.client import run_round, step
from continuum_mcp.federation.coordinator.http import FederationCoordinator
from continuum_mcp.federation.participant import Done, RoundExpectations, RoundParticipant
from continuum_mcp.federation.protocol import (
    ERRORS,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    SECAGG_PHASES,
    JoinRequest,
    routes,
)
from continuum_mcp.federation.submission import PlannedPattern, build_contribution, secagg_input
from continuum_mcp.privacy.modes import default_policy
from continuum_mcp.secagg import SecAggParams

#: every test runs on both coordinator backends (SQLite, PostgreSQL: tests/conftest.py)
pytestmark = pytest.mark.usefixtures("backend")

FED, ADMIN, SLOTS, DIM = "fed-api-test", "admin-token-api", 8, 16
BASE = "http://coordinator.test"
V2 = {PROTOCOL_HEADER: str(PROTOCOL_VERSION)}  # what a coordinator of this protocol version answers with


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[FederationCoordinator]:
    c = FederationCoordinator(storage_path=tmp_path / "coord", privacy_mode="open", min_contributors=3,
                              federation_id=FED, admin_token=ADMIN, slots=SLOTS, dim=DIM, phase_timeout_seconds=30)
    yield c
    c.stop()


def api_for(coord: FederationCoordinator, identity: Identity | None = None, **kw: Any) -> CoordinatorAPI:
    return CoordinatorAPI(BASE, identity, http=TestClient(coord.app, base_url=BASE), **kw)


def joined(coord: FederationCoordinator, n: int) -> list[CoordinatorAPI]:
    admin = api_for(coord, admin_token=ADMIN)
    out = []
    for token in admin.admin_invites(n).admission_tokens:
        api = api_for(coord, Identity.generate())
        resp = api.join(JoinRequest(admission_token=token, privacy_mode="open"))
        assert resp.instance_id == api.identity.instance_id
        out.append(api)
    return out


def test_signed_calls_are_accepted_and_typed_by_the_route_table(coord: FederationCoordinator) -> None:
    (api,) = joined(coord, 1)
    info = api.federation()
    assert (info.federation_id, info.slots, info.dim) == (FED, SLOTS, DIM)
    status = api.status()
    assert status.instance_id == api.identity.instance_id and status.current_round == 0
    assert api.round_current().phase == "collecting"
    assert api.health().federation_id == FED  # unsigned route works without signing
    assert type(api.credits()) is routes()["credits"].response
    with pytest.raises(TypeError):
        api.call("join")  # a route's body model is enforced before anything is sent


def test_error_bodies_become_the_typed_exceptions_of_their_codes(coord: FederationCoordinator) -> None:
    stranger = api_for(coord, Identity.generate())
    with pytest.raises(NotAdmitted):
        stranger.status()
    with pytest.raises(BadInvite):
        stranger.join(JoinRequest(admission_token="no-such-token", privacy_mode="open"))
    (member,) = joined(coord, 1)
    with pytest.raises(NotFound):
        member.round(999)
    with pytest.raises(WrongPhase):  # round 0 is collecting, not aggregating
        member.secagg_roster(0)


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_protocol_error_code_maps_to_its_error_class(code: str) -> None:
    """Through an injected transport: each ErrorBody the protocol defines comes back typed,
    with the server's message; 429 carries Retry-After (no retries here)."""
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(ERRORS[code], json={"code": code, "message": f"server says {code}"},
                              headers={"Retry-After": "7", **V2})

    api = CoordinatorAPI(BASE, Identity.generate(), transport=httpx.MockTransport(answer), max_retries=0)
    with pytest.raises(ContinuumError) as info:
        api.federation()
    assert type(info.value) is ERRORS_BY_CODE[code] and info.value.message == f"server says {code}"
    if code == "rate_limited":
        assert isinstance(info.value, RateLimited) and info.value.retry_after == 7.0


def test_an_unknown_code_or_a_body_that_is_no_error_means_unavailable() -> None:
    r = httpx.Response(418, json={"code": "teapot", "message": "short and stout"})
    assert isinstance(error_from_response(r), CoordinatorUnavailable)
    assert isinstance(error_from_response(httpx.Response(400, text="<html>")), CoordinatorUnavailable)


def test_connection_errors_are_retried_with_backoff_then_unavailable() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: every attempt is refused
    slept: list[float] = []
    api = CoordinatorAPI(f"http://127.0.0.1:{port}", Identity.generate(), max_retries=3, backoff_seconds=0.01,
                         sleep=slept.append)
    with pytest.raises(CoordinatorUnavailable, match="after 4 attempts"):
        api.federation()
    assert len(slept) == 3 and slept[0] < slept[1] < slept[2]  # exponential


def test_server_errors_are_retried_and_each_attempt_is_signed_afresh() -> None:
    seen: list[httpx.Request] = []
    info = {"federation_id": FED, "private": True, "privacy_mode": "open", "min_contributors": 3,
            "require_contribution": False, "codebook_version": "v0", "slots": SLOTS, "dim": DIM,
            "round_interval_seconds": 60, "phase_timeout_seconds": 30, "credit_rules": {}}

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503) if len(seen) < 3 else httpx.Response(200, json=info, headers=V2)

    api = CoordinatorAPI(BASE, Identity.generate(), transport=httpx.MockTransport(answer), max_retries=3,
                         sleep=lambda _s: None)
    assert api.federation().federation_id == FED
    assert len(seen) == 3 and len({r.headers[HEADER_NONCE] for r in seen}) == 3


def test_a_full_round_driven_by_participants_over_the_api(coord: FederationCoordinator) -> None:
    apis = joined(coord, 3)
    cipher = FederationCipher(generate_federation_key(), FED)
    rng = np.random.default_rng(5)
    planned = {}
    for k, api in enumerate(apis):
        e = rng.normal(size=DIM)
        p = PlannedPattern(slot=k % 2, confidence=0.9, phrases=["dark theme"], statement="I like a dark theme",
                           pattern_id=f"p{k}", source_memory_ids=[k], embedding=list(e))
        planned[api.identity.instance_id] = [p]
        assert api.contribute(build_contribution([p], 0, cipher, "open")).accepted_patterns == 1
    admin = api_for(coord, admin_token=ADMIN)
    assert admin.admin_close_round().phase == "advertise"

    mode = default_policy().mode("open")
    expect = RoundExpectations.for_mode(FED, SLOTS, DIM, mode)

    def vector_of(iid: str) -> Any:
        return lambda params: secagg_input(planned[iid], SLOTS, DIM, params.clip_norm)

    members = [(api, RoundParticipant(api.identity, expect, vector_of(api.identity.instance_id))) for api in apis]
    for _ in range(200):
        if all(p.done for _, p in members):
            break
        for api, p in members:
            step(api, p)
    outcomes = [p.next_request() for _, p in members]
    assert all(isinstance(o, Done) for o in outcomes)
    for o in outcomes:
        assert isinstance(o, Done)
        assert o.outcome.steps_posted == list(SECAGG_PHASES) and o.outcome.released, o.outcome
    final = apis[0].round(0)
    assert final.phase == "released" and final.epsilon_spent is not None
    assert SecAggParams.model_validate(final.params).n == 3
    assert apis[0].round_current().round_id == 1


def test_run_round_stops_at_its_deadline_or_when_told_and_resumes_later(coord: FederationCoordinator) -> None:
    apis = joined(coord, 3)
    cipher = FederationCipher(generate_federation_key(), FED)
    p = PlannedPattern(slot=1, confidence=0.9, phrases=["tea"], statement="tea", pattern_id="p", source_memory_ids=[],
                       embedding=[1.0] * DIM)
    for api in apis:
        api.contribute(build_contribution([p], 0, cipher, "open"))
    api_for(coord, admin_token=ADMIN).admin_close_round()
    expect = RoundExpectations.for_mode(FED, SLOTS, DIM, default_policy().mode("open"))
    vec = secagg_input([p], SLOTS, DIM, expect.max_clip_norm)
    sessions: dict[str, Any] = {}
    clock = iter(range(100))
    first = run_round(apis[0], RoundParticipant(apis[0].identity, expect, vec, sessions=sessions), timeout_seconds=1.5,
                      sleep=lambda _s: None, monotonic=lambda: float(next(clock)))
    assert first.steps_posted == ["advertise"] and "still in advertise" in first.message  # the others have not posted
    closing = run_round(apis[1], RoundParticipant(apis[1].identity, expect, vec), timeout_seconds=60,
                        sleep=lambda _s: True)
    assert closing.steps_posted == ["advertise"] and "closing" in closing.message
    # a later sync of the first member resumes the same attempt with the secagg state it kept
    members = [(apis[0], RoundParticipant(apis[0].identity, expect, vec, sessions=sessions)),
               (apis[2], RoundParticipant(apis[2].identity, expect, vec))]
    for _ in range(20):
        for api, part in members:
            step(api, part)
    assert members[0][1].outcome.steps_posted == ["share_keys"]  # resumed: no "lost its state" abort
    assert members[1][1].outcome.steps_posted == ["advertise", "share_keys"]
    assert apis[2].round(0).phase == "share_keys"  # member 1 still owes its share_keys: the round waits for it
