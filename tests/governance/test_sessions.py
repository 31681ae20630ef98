"""Learning sessions against a real coordinator on 127.0.0.1: proposals discussed, counted by every
client, refused below 10 opt-ins or 75 % approval, halted by vote, and refused when the coordinator
lies. (A whole codebook-refinement session, with opt-outs, a dropout, an adoption vote and
re-slotting, runs against a coordinator process in tests/e2e/test_governance_e2e.py.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import numpy as np

from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import FederationCipher, Invite, generate_federation_key
from continuum_mcp.errors import CryptoError, Forbidden, InvalidInput, WrongPhase
from continuum_mcp.federation.coordinator import _governance_sql as gsql
from continuum_mcp.federation.governance import BallotStatement, GovernanceRules, SignedStatement, sign_statement, tally
from continuum_mcp.federation.governance._wire import StatementPost
from continuum_mcp.federation.learning import SessionParams, session_guarantee
from continuum_mcp.privacy.accounting import compose_gdp, gdp_epsilon
from continuum_mcp.federation.client import FederationClient
from continuum_mcp.memory.store import MemoryStore
from continuum_mcp.privacy.codebook import Codebook, slot_id, split_slot_id, version_tag
from fedkit import Member, pattern, run_full_round
from govkit import DISCUSSION, FED, GovKit


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[GovKit]:
    k = GovKit(tmp_path)
    yield k
    k.close()


def rounds_eps(n: int, params: SessionParams) -> float:
    return gdp_epsilon(compose_gdp([params.mu_per_round] * n), params.delta) if n else 0.0


def test_nine_opt_ins_never_run(kit: GovKit) -> None:
    members = kit.admit(12)
    pid = kit.propose(members[0], kind="usage_statistics")
    kit.vote_and_consent(pid, approve=members, opt_in=members[:9])
    assert kit.wait_phase(pid, {"rejected", "approved", "running"}, timeout=DISCUSSION + 10) == "rejected"
    v = members[0].gov.verified(pid)
    assert v.tally.decision == "rejected" and "9 opt-ins" in v.tally.reasons[0] and v.agrees
    turn = members[0].gov.participate(pid, timeout_seconds=2)
    assert turn.rounds_taken == [] and members[0].spent() == 0.0
    with pytest.raises(WrongPhase):
        members[1].gov.opt_in(pid)  # too late: the discussion is over


def test_seventy_percent_approval_never_runs(kit: GovKit) -> None:
    members = kit.admit(12)
    pid = kit.propose(members[0], kind="usage_statistics")
    kit.vote_and_consent(pid, approve=members[:7], reject=members[7:10], opt_in=members)
    members[10].gov.vote(pid, "abstain")
    assert kit.wait_phase(pid, {"rejected", "approved", "running"}, timeout=DISCUSSION + 10) == "rejected"
    t = members[5].gov.verified(pid).tally
    assert (t.approve, t.reject, t.abstain) == (7, 3, 1) and "70% approval" in t.reasons[0]
    assert t.concerns == ["not needed"] * 3


@pytest.mark.slow
def test_a_halt_vote_stops_the_session_at_the_next_round(kit: GovKit) -> None:
    members = kit.admit(12)
    pid = kit.propose(members[0], rounds=3)
    kit.vote_and_consent(pid, approve=members, opt_in=members)
    kit.wait_phase(pid, {"running"}, timeout=DISCUSSION + 10)

    def halt_after_round_one() -> None:
        while not members[0].api.call("gov_report", proposal_id=pid).rounds:
            time.sleep(0.05)
        for m in members[:7]:
            m.gov.halt(pid)

    side = threading.Thread(target=halt_after_round_one)
    side.start()
    kit.take_part(members, pid, timeout=90)
    side.join()
    v = members[0].gov.verified(pid)
    assert v.tally.halted and v.report.summary.phase == "halted"
    assert 1 <= len(v.report.rounds) <= 2  # the round running when the halt passed may finish; no later one


def test_forged_ballot_and_miscount_are_caught_by_every_client(kit: GovKit) -> None:
    members = kit.admit(12)
    pid = kit.propose(members[0], kind="usage_statistics")
    kit.vote_and_consent(pid, approve=members[:7], reject=members[7:], opt_in=members)  # 58 %: rejected
    kit.wait_phase(pid, {"rejected"}, timeout=DISCUSSION + 10)
    with kit.coord.store.transaction() as conn:  # the coordinator turns two rejects into approvals ...
        rows = conn.execute("SELECT seq, signed_json FROM gov_statements WHERE type = 'ballot'").fetchall()
        flipped = 0
        for seq, raw in rows:
            s = SignedStatement.model_validate_json(raw)
            if s.payload["choice"] == "reject" and flipped < 2:
                forged = s.model_copy(update={"payload": {**s.payload, "choice": "approve"}})
                conn.execute("UPDATE gov_statements SET signed_json = ? WHERE seq = ?", (forged.model_dump_json(), seq))
                flipped += 1
        gsql.set_proposal(conn, pid, phase="running")  # ... and says the session runs
    for m in members:
        with pytest.raises(CryptoError, match="own tally"):
            m.gov.verified(pid)
        turn = m.gov.participate(pid, timeout_seconds=2)
        assert "own tally" in turn.refused and turn.rounds_taken == [] and m.spent() == 0.0
    report = members[0].api.call("gov_report", proposal_id=pid)  # the client's count lists what it dropped
    own = tally(report.proposal, report.statements, report.members, federation_id=FED,
                rules=members[0].gov.rules(), now=time.time(), epsilon=1.0)
    assert len([i for i in own.invalid if i.type == "ballot"]) == 2 and (own.approve, own.reject) == (7, 3)


def test_coordinator_refuses_what_it_must_not_publish(kit: GovKit) -> None:
    a, b, *_ = kit.admit(3)
    over = SessionParams.build(kind="codebook_refinement", rounds=100, noise_multiplier=0.5)
    with pytest.raises(InvalidInput, match=f"epsilon {session_guarantee(over).epsilon:.3f}"):
        kit.propose(a, rounds=100, noise_multiplier=0.5)
    pid = kit.propose(a, kind="usage_statistics")
    ballot = sign_statement(b.identity, BallotStatement(federation_id=FED, proposal_id=pid, choice="approve"))
    with pytest.raises(Forbidden):  # a's request carrying b's ballot
        a.api.call("gov_ballot", StatementPost(statement=ballot), proposal_id=pid)
    with pytest.raises(InvalidInput):  # a ballot on the opt-in route
        b.api.call("gov_opt_in", StatementPost(statement=ballot), proposal_id=pid)
    with pytest.raises(WrongPhase):  # no halt vote during the discussion
        b.gov.halt(pid)
    info = json.loads(kit.coord.service.governance.report(pid).model_dump_json())
    assert info["guarantee"]["epsilon"] == pytest.approx(session_guarantee(
        SessionParams.build(kind="usage_statistics")).epsilon)


def test_openapi_lists_the_governance_routes(kit: GovKit) -> None:
    import httpx

    doc = httpx.get(kit.coord.url + "/openapi.json").json()
    assert {"/v1/governance/proposals", "/v1/governance/proposals/{proposal_id}/ballot",
            "/v1/governance/proposals/{proposal_id}/halt"} <= set(doc["paths"])
