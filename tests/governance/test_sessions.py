"""Learning sessions end to end against a real coordinator on 127.0.0.1: proposals discussed,
counted by every client, run as secure-aggregation rounds over the opted-in members, charged to
every participant's ledger, halted by vote, and refused when the coordinator lies."""

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
from continuum_mcp.federation.coordinator import _attempt_sql as asql
from continuum_mcp.federation.coordinator import _governance_sql as gsql
from continuum_mcp.federation.governance import BallotStatement, GovernanceRules, SignedStatement, sign_statement, tally
from continuum_mcp.federation.governance._wire import StatementPost
from continuum_mcp.federation.governance.guarantee import session_label
from continuum_mcp.federation.learning import SessionParams, session_guarantee
from continuum_mcp.privacy.accounting import compose_gdp, gdp_epsilon
from continuum_mcp.federation.client import FederationClient
from continuum_mcp.memory.store import MemoryStore
from continuum_mcp.privacy.codebook import Codebook, slot_id, split_slot_id, version_tag
from fedkit import Member, pattern, run_full_round
from govkit import DISCUSSION, FED, WEAK, GovKit


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[GovKit]:
    k = GovKit(tmp_path)
    yield k
    k.close()


def rounds_eps(n: int, params: SessionParams) -> float:
    return gdp_epsilon(compose_gdp([params.mu_per_round] * n), params.delta) if n else 0.0




@pytest.mark.slow
def test_codebook_refinement_session_with_opt_outs_a_dropout_and_an_adoption_vote(tmp_path: Path, embedder) -> None:
    kit = GovKit(tmp_path, client_rules=GovernanceRules(min_discussion_seconds=0, **WEAK), centres=2,
                 budget_epsilon=1e4, **WEAK)
    try:
        members = kit.admit(12)
        # shared facts released under codebook v0 by three other members, and an instance that
        # will query them
        key = generate_federation_key()
        fact = kit.codebook.vectors[2].astype(np.float64)
        sharers = [Member(api=m.api, patterns=[pattern(2, ["friday deploys"], fact)], policy=kit.coord.policy)
                   for m in kit.admit(3)]
        for m in sharers:
            m.contribute(0, FederationCipher(key, FED), mode="open")
        kit.coord.close_round()
        assert run_full_round(sharers).phase == "released"
        settings = Settings(data_dir=tmp_path / "reader")
        with MemoryStore(settings, embedder) as store, FederationClient(
                store, settings, codebook=kit.codebook, policy=kit.coord.policy) as reader:
            reader.governance_rules = kit.client_rules
            token = kit.coord.create_admission_tokens(1)[0]
            reader.join(Invite.build(kit.coord.url, FED, token, key).format(), privacy_mode="open")
            assert any("friday deploys" in p.phrases for p in reader.query("when do we deploy on friday",
                                                                             min_confidence=0.0))
            version = _codebook_session(kit, members)
            assert kit.coord.info().codebook_version == version  # the coordinator follows the vote ...
            reader.sync(timeout_seconds=2)  # ... and so does the client, after counting the votes itself
            assert reader.codebook.version == version
            # releases under two versions never mix: v0's release is not served under the new one
            new_ids = reader.codebook.ids
            assert [s.slot for s in reader.api().slots().slots] == new_ids and new_ids[0] == slot_id(version, 0)
            assert not reader.query("when do we deploy on friday", min_confidence=0.0)
            with pytest.raises(InvalidInput, match="slot id of the codebook in use"):
                sharers[0].contribute(kit.coord.engine.state(None).round_id, FederationCipher(key, FED), mode="open")
            # members re-slot the shared fact under the adopted version, and its next release is found
            sid = int(reader.codebook.slot_ids(fact[None, :].astype(np.float32))[0])
            assert split_slot_id(sid) == (version_tag(version), reader.codebook.index_of(sid)) and sid >= 1 << 12
            later = [Member(api=m.api, patterns=[pattern(sid, ["friday deploys"], fact)], policy=kit.coord.policy)
                     for m in kit.admit(3)]
            rid = kit.coord.engine.state(None).round_id
            for m in later:
                assert m.contribute(rid, FederationCipher(key, FED), mode="open").accepted_patterns == 1
            kit.coord.close_round()
            assert run_full_round(later).phase == "released"
            hits = reader.query("when do we deploy on friday", min_confidence=0.0)
            assert any("friday deploys" in p.phrases and p.slot == sid for p in hits)
            assert {s.slot for s in reader.api().slots().slots if s.released_at_round >= 0} == {sid}
    finally:
        kit.close()


def _codebook_session(kit: GovKit, members: list) -> str:
    pid = kit.propose(members[0], rounds=3, noise_multiplier=0.1)
    params = SessionParams.build(kind="codebook_refinement", rounds=3, noise_multiplier=0.1)
    kit.vote_and_consent(pid, approve=members[:10], reject=members[10:], opt_in=members)
    assert kit.wait_phase(pid, {"running", "approved"}, timeout=DISCUSSION + 10) in ("running", "approved")
    quitters, dropout = members[1:3], members[3]

    def after_round_one() -> None:
        kit.wait_phase(pid, {"running"})
        deadline = time.monotonic() + 60
        while not members[0].api.call("gov_report", proposal_id=pid).rounds:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for q in quitters:
            assert "next round" in q.gov.opt_out(pid).detail
        dropout.api.close()  # the instance goes away: its next request fails, it is dropped

    side = threading.Thread(target=after_round_one)
    side.start()
    turns = kit.take_part(members, pid, timeout=150)
    side.join()
    report = members[0].gov.verified(pid)
    with kit.coord.store.reading() as conn:
        reason = gsql.proposals(conn, pid)[0].reason
    assert report.report.summary.phase == "completed", (reason, report.report.rounds, turns)
    rounds = report.report.rounds
    assert [r.outcome for r in rounds] == ["released"] * 3
    assert all(r.noisy_participants is not None for r in rounds)
    assert abs(rounds[0].noisy_participants - 12) < 3  # participants coordinate: std ~0.5 at multiplier 0.1
    # the opt-outs took part in round 1 only; the dropout not in round 3; everyone else in all three
    with kit.coord.store.reading() as conn:
        charged = {r.round: set(r.participants) for r in gsql.rounds(conn, pid)}
    assert {q.id for q in quitters} <= charged[1] and not {q.id for q in quitters} & charged[3]
    assert dropout.id not in charged[3] and dropout.id in charged[1]
    stayers = [m for m in members if m not in (*quitters, dropout)]
    assert all(m.id in charged[r] for m in stayers for r in (1, 2, 3))
    for m in stayers:  # each client's own ledger agrees with the coordinator's per-round charge
        assert turns[m.id].rounds_taken == [1, 2, 3]
        assert m.spent() == pytest.approx(rounds_eps(3, params), rel=1e-6)
        assert kit.coord.engine.ledger_spent(m.id) == pytest.approx(m.spent(), rel=1e-6)
    for q in quitters:
        assert q.spent() == pytest.approx(rounds_eps(len([r for r in (1, 2, 3) if q.id in charged[r]]), params))
    assert report.report.epsilon_spent_per_participant == pytest.approx(rounds_eps(3, params), rel=1e-6)
    # the result: a new codebook version every member can download and check, adopted by vote
    result = report.report.result
    assert result is not None and result["version"] != "v0"
    new = Codebook.from_b64(result["vectors_b64"], result["slots"], result["dim"], parent="v0")
    assert new.version == result["version"]
    live = [m for m in members if m is not dropout]
    for m in live[:10]:
        m.gov.adopt(pid)
    final = live[0].gov.verified(pid).tally
    assert final.adopted(result["version"], result["digest"])
    return str(result["version"])


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
