"""The tally every client runs: signatures checked, one statement per identity, the card's rules."""

from __future__ import annotations

import pytest

from continuum_mcp.crypto.identity import Identity
from continuum_mcp.errors import WrongPhase
from continuum_mcp.federation.governance import (
    AdoptionStatement,
    BallotStatement,
    ConsentStatement,
    GovernanceRules,
    HaltStatement,
    ProposalStatement,
    SessionState,
    SignedStatement,
    decide,
    finish_round,
    proposal_id,
    sign_statement,
    start_round,
    tally,
)

FED = "fed-test"
T0 = 1_000_000
DEADLINE = T0 + 100
RULES = GovernanceRules(min_discussion_seconds=60)


@pytest.fixture(scope="module")
def people() -> list[Identity]:
    return [Identity.generate() for _ in range(12)]


def members(people: list[Identity]) -> dict[str, str]:
    return {p.instance_id: p.public_key_b64 for p in people}


def propose(who: Identity, deadline: int = DEADLINE) -> SignedStatement:
    return sign_statement(who, ProposalStatement(
        federation_id=FED, title="refine the codebook", kind="codebook_refinement", params_json='{"rounds": 3}',
        data_description="pattern embeddings", expected_benefit="better slots", discussion_deadline=deadline),
        timestamp=T0)


def ballot(who: Identity, pid: str, choice: str, ts: int = T0 + 10, concern: str = "") -> SignedStatement:
    return sign_statement(who, BallotStatement(federation_id=FED, proposal_id=pid, choice=choice, concern=concern),
                          timestamp=ts)


def consent(who: Identity, pid: str, kind: str = "opt_in", ts: int = T0 + 10) -> SignedStatement:
    return sign_statement(who, ConsentStatement(federation_id=FED, proposal_id=pid, type=kind), timestamp=ts)


def count(people, prop, sts, now=DEADLINE + 1, epsilon=1.0, rules=RULES):
    return tally(prop, sts, members(people), federation_id=FED, rules=rules, now=now, epsilon=epsilon)


def test_approved_with_three_quarters_and_ten_opt_ins(people):
    prop = propose(people[0])
    pid = proposal_id(prop)
    sts = [ballot(p, pid, "approve") for p in people[:9]] + [ballot(p, pid, "reject") for p in people[9:]]
    sts += [consent(p, pid) for p in people[:10]]
    assert count(people, prop, sts, now=DEADLINE).decision == "discussion"
    t = count(people, prop, sts)
    assert (t.decision, t.approve, t.reject, t.opt_ins_at_deadline) == ("approved", 9, 3, 10)
    assert t.approval_share == 0.75


def test_nine_opt_ins_or_seventy_percent_is_rejected_with_the_numbers(people):
    prop = propose(people[0])
    pid = proposal_id(prop)
    sts = [ballot(p, pid, "approve") for p in people] + [consent(p, pid) for p in people[:9]]
    t = count(people, prop, sts)
    assert t.decision == "rejected" and "9 opt-ins" in t.reasons[0]
    # 7 approve, 3 reject = 70 %; abstentions are in neither side
    sts = [ballot(p, pid, "approve") for p in people[:7]] + [ballot(p, pid, "reject") for p in people[7:10]]
    sts += [ballot(p, pid, "abstain") for p in people[10:]] + [consent(p, pid) for p in people]
    t = count(people, prop, sts)
    assert t.decision == "rejected" and t.abstain == 2 and "70% approval" in t.reasons[0]


def test_latest_ballot_before_the_deadline_counts_once(people):
    prop = propose(people[0])
    pid = proposal_id(prop)
    sts = [ballot(people[1], pid, "reject", ts=T0 + 1), ballot(people[1], pid, "approve", ts=T0 + 2),
           ballot(people[1], pid, "reject", ts=DEADLINE + 5)]  # after the deadline: ignored
    t = count(people, prop, sts)
    assert (t.approve, t.reject) == (1, 0)


def test_forged_and_foreign_statements_are_dropped(people):
    prop = propose(people[0])
    pid = proposal_id(prop)
    honest = ballot(people[1], pid, "reject")
    forged = SignedStatement(envelope=honest.envelope, payload={**honest.payload, "choice": "approve"})
    stranger = ballot(Identity.generate(), pid, "approve")
    other = ballot(people[2], "prop-" + "0" * 20, "approve")
    t = count(people, prop, [forged, stranger, other])
    assert (t.approve, t.reject) == (0, 0)
    assert {i.signer for i in t.invalid} == {people[1].instance_id, stranger.signer, people[2].instance_id}


def test_guarantee_over_the_cap_and_short_discussion_are_refused(people):
    prop = propose(people[0])
    t = count(people, prop, [], epsilon=12.5)
    assert t.decision == "refused" and "12.5" in t.reasons[0] and "10" in t.reasons[0]
    short = propose(people[0], deadline=T0 + 30)
    assert count(people, short, []).decision == "refused"


def test_opt_out_after_deadline_leaves_participants_and_halt_needs_a_majority(people):
    prop = propose(people[0])
    pid = proposal_id(prop)
    sts = [ballot(p, pid, "approve") for p in people] + [consent(p, pid) for p in people]
    sts += [consent(people[0], pid, "opt_out", ts=DEADLINE + 50)]
    t = count(people, prop, sts, now=DEADLINE + 60)
    assert t.decision == "approved" and len(t.participants) == 11 and t.opt_ins_at_deadline == 12
    halts = [sign_statement(p, HaltStatement(federation_id=FED, proposal_id=pid), timestamp=DEADLINE + 70)
             for p in people[:6]]
    assert not count(people, prop, sts + halts, now=DEADLINE + 80).halted  # 6 of 12 is not a majority
    more = sign_statement(people[6], HaltStatement(federation_id=FED, proposal_id=pid), timestamp=DEADLINE + 70)
    assert count(people, prop, sts + halts + [more], now=DEADLINE + 80).halted


def test_adoption_vote(people):
    prop = propose(people[0])
    pid = proposal_id(prop)
    votes = [sign_statement(p, AdoptionStatement(federation_id=FED, proposal_id=pid, version="v1", digest="a" * 64,
                                                 choice="approve"), timestamp=DEADLINE + 90) for p in people[:10]]
    t = count(people, prop, votes, now=DEADLINE + 100)
    assert t.adopted("v1", "a" * 64) and not t.adopted("v1", "b" * 64)
    assert not count(people, prop, votes[:9], now=DEADLINE + 100).adopted("v1", "a" * 64)


def test_session_machine_never_starts_unapproved_and_stops_at_halt(people):
    prop = propose(people[0])
    pid = proposal_id(prop)
    approved = count(people, prop, [ballot(p, pid, "approve") for p in people] + [consent(p, pid) for p in people])
    rejected = count(people, prop, [])
    s = SessionState(rounds=2)
    with pytest.raises(WrongPhase):
        start_round(s, approved)  # still in discussion
    assert decide(s, rejected).phase == "rejected"
    s = decide(s, approved)
    with pytest.raises(WrongPhase):
        start_round(s, rejected)
    s = start_round(s, approved)
    assert (s.phase, s.running_round) == ("running", 1)
    s = finish_round(s)
    halted = approved.model_copy(update={"halted": True})
    assert start_round(s, halted).phase == "halted"
    s = finish_round(start_round(s, approved))
    assert s.phase == "completed" and s.round == 2
