"""Several coordinator processes on one store behind a real nginx: correct together.

The specification of the horizontal deployment (issue 13): ``continuum-mcp coordinator --workers 3
--nginx`` on one PostgreSQL database (and, on one machine, one SQLite file) completes a secure
aggregation round although one process is SIGKILLed after the masked inputs were accepted, with
nothing lost; and concurrent credit spends sent to different processes never overdraw or spend a
credit twice. No process may keep state another needs.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from clusterkit import Cluster, nginx_available
from fedkit import Member, admin_api, expectations, member_api, pattern, send

from continuum_mcp.crypto.cipher import FederationCipher, generate_federation_key
from continuum_mcp.federation.client import step
from continuum_mcp.federation.participant import Request, Wait
from continuum_mcp.federation.protocol import JoinRequest, QueryRequest, RoundState
from continuum_mcp.secagg import SecAggParams

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not nginx_available(), reason="needs nginx (Debian: nginx)")]

FED, ADMIN, SLOTS, DIM = "fed-cluster-test", "cluster-admin-token", 8, 16
MEMBERS, PATTERNS = 12, 3  # release v2's open mode needs about 8-10 contributors per phrase


def _args(database: str | None) -> list[str]:
    return ["--federation-id", FED, "--admin-token", ADMIN, "--privacy-mode", "open", "--min-contributors", "3",
            "--slots", str(SLOTS), "--dim", str(DIM), "--phase-timeout", "60", "--log-level", "WARNING",
            *(["--database", database] if database else [])]


@pytest.fixture
def store(backend: str | None, tmp_path: Path) -> tuple[Path, str | None]:
    """(storage directory, PostgreSQL URL or None for SQLite): a fresh store of each backend."""
    return tmp_path / "coord", backend


def _members(url: str, n: int, rng: np.random.Generator) -> list[Member]:
    out = []
    centres = rng.standard_normal((PATTERNS, DIM))  # members agree on what each slot is about
    for token in admin_api(url, ADMIN).admin_invites(n).admission_tokens:
        m = Member(member_api(url, max_retries=6, backoff_seconds=0.2))
        m.api.join(JoinRequest(admission_token=token, privacy_mode="open"))
        m.patterns = [pattern(s, [f"topic {s}", f"shared words {s}"], centres[s] + 0.1 * rng.standard_normal(DIM),
                              statement=f"statement {s}") for s in range(PATTERNS)]
        out.append(m)
    return out


def _round(members: list[Member], *, hold_unmask: threading.Event | None = None, timeout: float = 120.0
           ) -> RoundState:
    """Every member takes part (stepping in turn on this thread). With ``hold_unmask``, nobody posts
    its unmasking share before the event is set: the test acts while the masked inputs are in."""
    expect = expectations(members[0].api.federation())
    parts = {m.id: m.participant(expect) for m in members}
    deadline = time.monotonic() + timeout
    while not all(p.done for p in parts.values()):
        assert time.monotonic() < deadline, {k: p.outcome for k, p in parts.items()}
        idle = True
        for m in members:
            p = parts[m.id]
            if p.done:
                continue
            nxt = p.next_request()
            if isinstance(nxt, Request) and nxt.posts == "unmask" and hold_unmask is not None \
                    and not hold_unmask.is_set():
                continue
            idle = isinstance(step(m.api, p), Wait) and idle
        if idle:
            time.sleep(0.1)
    return members[0].api.round(0)


def _wait_phase(member: Member, phase: str, timeout: float = 60.0) -> RoundState:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = member.api.round(0)
        if st.phase == phase:
            return st
        time.sleep(0.1)
    raise AssertionError(f"round 0 never reached {phase}: {member.api.round(0)}")


def test_a_round_completes_through_nginx_although_a_process_is_killed_after_the_masked_inputs(
        store: tuple[Path, str | None]) -> None:
    storage, database = store
    rng = np.random.default_rng(13)
    cipher = FederationCipher(generate_federation_key(), FED)
    with Cluster(_args(database), workers=3, nginx=True, storage=storage) as cl:
        members = _members(cl.url, MEMBERS, rng)
        for m in members:
            assert m.contribute(0, cipher).accepted_patterns == PATTERNS
        assert admin_api(cl.url, ADMIN).admin_close_round().phase == "advertise"

        release_unmask = threading.Event()
        killed: dict[str, int] = {}

        def kill_when_masked_inputs_are_in() -> None:
            st = _wait_phase(members[0], "unmask")  # every masked input was accepted
            killed["attempt"], killed["old"] = st.attempt, cl.kill_worker(1)
            killed["new"] = cl.wait_restarted(1, killed["old"])
            release_unmask.set()

        killer = threading.Thread(target=kill_when_masked_inputs_are_in, daemon=True)
        killer.start()
        final = _round(members, hold_unmask=release_unmask)
        killer.join(timeout=60)

        assert killed["new"] != killed["old"], cl.lines[-10:]
        assert final.phase == "released", final
        assert final.attempt == killed["attempt"], "the attempt went on: nothing was started over"
        assert SecAggParams.model_validate(final.params).n == MEMBERS
        for m in members:  # every member's contribution went into the release and was credited once
            bal = m.api.credits()
            assert bal.earned_this_month == PATTERNS * 1.0 and bal.pending == 0, (m.id, bal)
            assert m.api.round_current().round_id == 1
        released = {s.slot for s in members[2].api.slots().slots if s.released_at_round == 0}
        got = members[0].api.query(QueryRequest(slots=list(range(PATTERNS))))
        assert released and {int(p.pattern_id.split("-")[1]) for p in got.patterns} <= released
        for url in cl.worker_urls():  # every process, the restarted one too, tells the same story
            assert member_api(url, members[1].identity, max_retries=8, backoff_seconds=0.5).round(0).phase == "released"


def test_concurrent_credit_spends_through_different_processes_never_double_spend(
        store: tuple[Path, str | None]) -> None:
    storage, database = store
    rng = np.random.default_rng(17)
    cipher = FederationCipher(generate_federation_key(), FED)
    with Cluster(_args(database), workers=1, nginx=False, storage=storage) as one:  # earn credits first
        members = _members(one.url, 3, rng)
        for m in members:
            m.contribute(0, cipher)
        admin_api(one.url, ADMIN).admin_close_round()
        assert _round(members).phase == "released"
    spender = members[0]
    with Cluster(_args(database), workers=3, nginx=True, storage=storage) as cl:
        start = member_api(cl.url, spender.identity).credits()
        assert start.available == PATTERNS and start.free_queries_left_today == 3
        body = QueryRequest(slots=[0, 1]).model_dump_json().encode()
        urls = cl.worker_urls() * 8  # 24 queries at once, 8 to each process directly (not hashed by nginx)

        def spend(url: str) -> int:
            return send(url, "POST", "/v1/query", body, sign_as=spender.identity).status_code

        with ThreadPoolExecutor(len(urls)) as pool:
            codes = list(pool.map(spend, urls))
        affordable = start.free_queries_left_today + int(start.available)
        assert codes.count(200) == affordable, codes
        assert codes.count(402) == len(urls) - affordable, codes
        end = member_api(cl.url, spender.identity).credits()
        assert end.available == 0 and end.spent_this_month == start.available, end
