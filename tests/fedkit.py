"""Federation test kit: admitted members and whole rounds, on the package's own seams.

Why one kit: the coordinator, client and end-to-end tests all need members that join, contribute
and take part in secure aggregation. They do it the way the production client does, through
``federation.api.CoordinatorAPI`` (signed, typed by the route table), ``federation.submission``
(what a contribution carries) and ``federation.client.step`` over a ``RoundParticipant`` (the
secure-aggregation protocol), so no test carries a second copy of any of them. Tests that must
send deliberately broken, unsigned or tampered requests use :func:`send`, the one raw-request
helper (signing with :meth:`Identity.sign_request`, never a copy of it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from pydantic import BaseModel

from continuum_mcp.crypto.cipher import FederationCipher
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.client import step
from continuum_mcp.federation.coordinator import CoordinatorStore, FederationCoordinator
from continuum_mcp.federation.participant import RoundExpectations, RoundParticipant, Wait
from continuum_mcp.federation.protocol import (
    SECAGG_PHASES,
    ContributionReceipt,
    ErrorBody,
    FederationInfo,
    JoinRequest,
    JoinResponse,
    RoundState,
    SecAggKind,
)
from continuum_mcp.federation.submission import PlannedPattern, build_contribution, secagg_input
from continuum_mcp.privacy.modes import PrivacyPolicy, default_policy
from continuum_mcp.secagg import SecAggClient

#: generous: the machine that runs the suite is shared and slow (a full-size masked input is ~0.5 MB).
HTTP_TIMEOUT_SECONDS = 60.0


def member_api(url: str, identity: Identity | None = None, **kw: Any) -> CoordinatorAPI:
    """A CoordinatorAPI as a fresh (or the given) identity; few quick retries, long timeouts."""
    kw.setdefault("timeout_seconds", HTTP_TIMEOUT_SECONDS)
    kw.setdefault("max_retries", 2)
    kw.setdefault("backoff_seconds", 0.05)
    return CoordinatorAPI(url, identity or Identity.generate(), **kw)


def admin_api(url: str, token: str) -> CoordinatorAPI:
    """The operator's CoordinatorAPI (admin routes: invites, closing a round)."""
    return CoordinatorAPI(url, None, admin_token=token, timeout_seconds=HTTP_TIMEOUT_SECONDS)


def pattern(slot: int, phrases: Sequence[str], embedding: np.ndarray | Sequence[float], statement: str = "",
            confidence: float = 0.9) -> PlannedPattern:
    """A planned pattern as ``submission.plan_contribution`` would make it (test data, no memories)."""
    return PlannedPattern(slot=slot, confidence=confidence, phrases=list(phrases), statement=statement,
                          pattern_id=f"test-{slot}", source_memory_ids=[], embedding=[float(x) for x in embedding])


@dataclass
class Member:
    """One admitted identity: its API and the patterns it contributes."""

    api: CoordinatorAPI
    patterns: list[PlannedPattern] = field(default_factory=list)
    #: the policy it checks rounds against (a test federation's own, e.g. a large window budget)
    policy: PrivacyPolicy = field(default_factory=default_policy)
    sybil_fraction: float = 1 / 3
    #: its secure-aggregation state across rounds it takes part in (session id -> client), kept
    #: in memory as the client facade keeps it, so a round can be resumed after a coordinator restart
    sessions: dict[str, SecAggClient] = field(default_factory=dict)

    @property
    def identity(self) -> Identity:
        assert self.api.identity is not None
        return self.api.identity

    @property
    def id(self) -> str:
        return self.identity.instance_id

    def join(self, token: str | None, level: str = "standard", mode: str = "open") -> JoinResponse:
        return self.api.join(JoinRequest(admission_token=token, contribution_level=level,  # type: ignore[arg-type]
                                         privacy_mode=mode))  # type: ignore[arg-type]

    def contribute(self, round_id: int, cipher: FederationCipher, mode: str = "open") -> ContributionReceipt:
        return self.api.contribute(build_contribution(self.patterns, round_id, cipher, mode))

    def participant(self, expect: RoundExpectations) -> RoundParticipant:
        return RoundParticipant(self.identity, expect,
                                lambda params: secagg_input(self.patterns, expect.slots, expect.dim, params.clip_norm),
                                sessions=self.sessions)


def admit(coord: FederationCoordinator, n: int, *, level: str = "standard", mode: str = "open") -> list[Member]:
    """``n`` new members, each joined with its own admission token."""
    out = []
    for token in coord.create_admission_tokens(n):
        m = Member(member_api(coord.url), policy=coord.policy, sybil_fraction=coord.config.sybil_fraction)
        m.join(token, level, mode)
        out.append(m)
    return out


def expectations(info: FederationInfo, policy: PrivacyPolicy | None = None,
                 sybil_fraction: float = 1 / 3) -> RoundExpectations:
    """What a member checks a round's parameters against: the federation's own mode."""
    return RoundExpectations.for_mode(info.federation_id, info.slots, info.dim,
                                      (policy or default_policy()).mode(info.privacy_mode), sybil_fraction=sybil_fraction)


def run_full_round(members: Sequence[Member], *, drop: Mapping[str, SecAggKind] | None = None,
                   timeout_seconds: float = 120.0, poll_seconds: float = 0.2) -> RoundState:
    """Every member takes part in the current round's secure aggregation until it is over; a
    member in ``drop`` (id -> phase) stops before posting that phase, as a client that went away
    would. Members step in turn on this thread (``client.step``), so nothing races but the
    coordinator's own deadlines. Returns the final state of the round they took part in."""
    drop = drop or {}
    expect = expectations(members[0].api.federation(), members[0].policy, members[0].sybil_fraction)
    parts = {m.id: m.participant(expect) for m in members}

    def stopped(m: Member) -> bool:
        p = parts[m.id]
        return p.done or (m.id in drop and len(p.outcome.steps_posted) >= SECAGG_PHASES.index(drop[m.id]))

    deadline = time.monotonic() + timeout_seconds
    live = [m for m in members if not stopped(m)]
    while live:
        assert time.monotonic() < deadline, {m.id: parts[m.id].outcome for m in live}
        idle = True
        for m in live:
            idle = isinstance(step(m.api, parts[m.id]), Wait) and idle
        live = [m for m in live if not stopped(m)]
        if live and idle:
            time.sleep(poll_seconds)
    took = {p.outcome.took_part for p in parts.values()} - {None}
    assert len(took) == 1, [p.outcome for p in parts.values()]
    return members[0].api.round(took.pop())


def send(url: str, method: str, path: str, body: bytes | BaseModel | dict[str, Any] | None = None, *,
         sign_as: Identity | None = None, headers: Mapping[str, str] | None = None) -> httpx.Response:
    """One raw request (for the refusals a well-behaved CoordinatorAPI cannot send): signed as
    ``sign_as`` over the exact bytes when given, then ``headers`` on top (tampered ones win)."""
    if isinstance(body, BaseModel):
        raw = body.model_dump_json().encode()
    elif isinstance(body, dict):
        raw = httpx.Request("POST", url, json=body).content
    else:
        raw = body or b""
    h = {"content-type": "application/json"} if raw else {}
    if sign_as is not None:
        h.update(sign_as.sign_request(method, path, raw))
    h.update(headers or {})
    return httpx.request(method, url + path, content=raw, headers=h, timeout=HTTP_TIMEOUT_SECONDS)


def refused(r: httpx.Response, status: int, code: str) -> ErrorBody:
    """The ErrorBody of a refused raw request, asserting its status and code."""
    assert r.status_code == status, (r.status_code, r.text)
    body = ErrorBody.model_validate(r.json())
    assert body.code == code, body
    return body


def table_rows(store: CoordinatorStore, skip: Sequence[str] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the store's database (SQLite: coordinator.db; PostgreSQL: the
    whole database, ledger and replay guard included), in one snapshot, sorted."""
    with store.reading() as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in store.db.tables() if t not in skip}


def stored_bytes(store: CoordinatorStore) -> list[bytes]:
    """Everything the coordinator stored, as bytes: its files, and on PostgreSQL every row."""
    blobs = [p.read_bytes() for p in store.storage_files()]
    if store.dialect != "sqlite":
        for rows in table_rows(store).values():
            blobs += [b"\0".join(v if isinstance(v, bytes) else str(v).encode() for v in row) for row in rows]
    return blobs


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def rand_unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    return unit(rng.standard_normal(dim))
