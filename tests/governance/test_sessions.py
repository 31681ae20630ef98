"""Learning sessions against an in-process coordinator on 127.0.0.1, where a test needs the
coordinator's own objects: what it refuses to publish (and the guarantee its service reports), its
OpenAPI document, and rounds whose store records (attempts, rosters, both purposes' ledger) are read
through the coordinator's store.

The card's scenarios run against ``continuum-mcp coordinator`` processes in
tests/e2e/test_governance_e2e.py: a whole codebook-refinement session, a usage-statistics session,
9 opt-ins and 70 % approval never running, a halt vote stopping at the next round, and a forged
ballot or a miscount caught by every client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuum_mcp.crypto.cipher import FederationCipher, generate_federation_key
from continuum_mcp.errors import Forbidden, InvalidInput, WrongPhase
from continuum_mcp.federation.coordinator import _attempt_sql as asql
from continuum_mcp.federation.coordinator import _governance_sql as gsql
from continuum_mcp.federation.governance import BallotStatement, sign_statement
from continuum_mcp.federation.governance._wire import StatementPost
from continuum_mcp.federation.governance.guarantee import session_label
from continuum_mcp.federation.learning import SessionParams, session_guarantee
from continuum_mcp.privacy.accounting import compose_gdp, gdp_epsilon
from fedkit import Member, pattern, run_full_round
from govkit import DISCUSSION, FED, GovKit


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[GovKit]:
    k = GovKit(tmp_path)
    yield k
    k.close()


def rounds_eps(n: int, params: SessionParams) -> float:
    return gdp_epsilon(compose_gdp([params.mu_per_round] * n), params.delta) if n else 0.0


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


@pytest.mark.slow
def test_a_round_goes_on_with_the_members_that_sync_when_others_opted_in_but_never_come(tmp_path: Path) -> None:
    """Sixteen opt in, ten sync: the first attempt (needing ceil(2 x 16 / 3) = 11 keys) fails at its
    advertise deadline having spent nothing, and the round is tried again with the ten."""
    kit = GovKit(tmp_path, phase_timeout=3.0)
    try:
        members = kit.admit(16)
        pid = members[0].gov.propose("usage_statistics", title="hours", expected_benefit="know the federation",
                                     discussion_seconds=20).proposal_id  # sixteen post two statements each
        kit.vote_and_consent(pid, approve=members, opt_in=members)
        kit.wait_phase(pid, {"running"}, timeout=40)
        syncing, away = members[:10], members[10:]
        turns = kit.take_part(syncing, pid, timeout=60)
        report = members[0].gov.verified(pid).report
        assert report.summary.phase == "completed", (report.rounds, turns)
        assert [r.outcome for r in report.rounds] == ["released"]
        with kit.coord.store.reading() as conn:
            charged = set(gsql.rounds(conn, pid)[0].participants)
            first = asql.records_after(conn, f"{session_label(FED, pid)}/r1/a0", -1)
        assert charged == {m.id for m in syncing}
        assert json.loads(first[-1].body) == {"closed": "advertise", "deadline": None, "expected": [], "next": None,
                                               "outcome": "failed"}
        params = SessionParams.build(kind="usage_statistics")
        assert all(m.spent() == pytest.approx(rounds_eps(1, params)) and turns[m.id].rounds_taken == [1]
                   for m in syncing)
        assert all(m.spent() == 0.0 for m in away)
    finally:
        kit.close()


@pytest.mark.slow
def test_members_who_contributed_to_this_window_s_release_take_part_in_a_session(kit: GovKit) -> None:
    """A release spends its contributors' whole release budget for the window; learning has its
    own, so the coordinator still counts them in the session's roster (before purposes: it left
    them out, and ten members with three such could not run at all)."""
    members = kit.admit(10)
    key = generate_federation_key()
    sharers = [Member(api=m.api, patterns=[pattern(2, ["friday deploys"], kit.codebook.vectors[2])],
                      policy=kit.coord.policy) for m in members[:3]]
    for s in sharers:
        s.contribute(0, FederationCipher(key, FED), mode="open")
    kit.coord.close_round()
    assert run_full_round(sharers).phase == "released"
    release = kit.coord.engine.ledger_spent(members[0].id)
    assert release == pytest.approx(kit.coord.policy.mode("open").budget_epsilon, rel=1e-6)
    pid = kit.propose(members[0], kind="usage_statistics")
    kit.vote_and_consent(pid, approve=members, opt_in=members)
    kit.wait_phase(pid, {"running"}, timeout=DISCUSSION + 10)
    turns = kit.take_part(members, pid, timeout=60)
    report = members[0].gov.verified(pid).report
    assert report.summary.phase == "completed" and [r.outcome for r in report.rounds] == ["released"], turns
    with kit.coord.store.reading() as conn:
        assert set(gsql.rounds(conn, pid)[0].participants) == {m.id for m in members}
    session = rounds_eps(1, SessionParams.build(kind="usage_statistics"))
    total = kit.coord.engine.ledger_spent(members[0].id)  # both purposes of the window, composed
    assert max(release, session) < total < release + session
