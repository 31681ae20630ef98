"""The round participant as a pure state machine: N members and the real SecAggServer, plain calls.

``Host`` below plays the coordinator's part of the wire protocol (RoundState, roster, inbox,
survivors, posts) over the real ``SecAggServer`` and ``Verifier``; no HTTP, no threads. The
participant must drive a full round to a correct sum, refuse parameter sets that would weaken
privacy before it sends anything, and absorb the errors a round legitimately produces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.errors import AggregationAborted, Conflict, CryptoError, InvalidInput, WrongPhase
from continuum_mcp.federation.participant import (
    Done,
    Request,
    RoundExpectations,
    RoundParticipant,
    Wait,
    check_params,
)
from continuum_mcp.federation.protocol import SECAGG_PHASES, ActionReceipt, RoundState, SecAggPost
from continuum_mcp.secagg import SecAggParams, SecAggServer, SignedMessage

FED, SLOTS, DIM = "fed-participant", 4, 8
EXPECT = RoundExpectations(federation_id=FED, slots=SLOTS, dim=DIM, max_clip_norm=1.0, noise_multiplier=0.0)


class Host:
    """The coordinator side of one round over the real SecAggServer (phases end when all posted)."""

    def __init__(self, identities: list[Identity], **over: Any) -> None:
        self.params = SecAggParams.create(f"{FED}/r0/a0", 0, [i.instance_id for i in identities], SLOTS * DIM,
                                          clip_norm=1.0, noise_sigma=0.0)
        if over:
            self.params = SecAggParams(**{**self.params.model_dump(), **over})
        self.server = SecAggServer(self.params, Verifier(MemoryReplayGuard()),
                                   {i.instance_id: i.public_key for i in identities})
        self.phase = "advertise"
        self.expected = set(self.params.roster)
        self.posted: set[str] = set()
        self.roster = self.inboxes = self.survivors = self.result = None

    def state(self, who: str, round_id: int | None = None) -> RoundState:
        released = self.phase == "released"
        phase = "collecting" if released and round_id is None else self.phase
        rid = 1 if released and round_id is None else 0
        pending = self.phase if self.phase in SECAGG_PHASES and who in self.expected - self.posted else None
        return RoundState(round_id=rid, attempt=0, phase=phase, phase_deadline=None, submissions=3,
                          you_submitted=True, you_in_roster=rid == 0, you_pending=pending,
                          params=self.params.model_dump() if rid == 0 else None)

    def answer(self, who: str, req: Request) -> BaseModel:
        if req.route == "round_current":
            return self.state(who)
        if req.route == "round":
            return self.state(who, req.path["round_id"])
        if req.route == "secagg_roster":
            return self.roster
        if req.route == "secagg_inbox":
            return self.inboxes[who]
        if req.route == "secagg_survivors":
            return self.survivors
        assert req.route == "secagg_post" and isinstance(req.body, SecAggPost)
        kind = req.path["kind"]
        if kind != self.phase:
            raise WrongPhase(f"not in {kind}")
        if who in self.posted:
            raise Conflict("already accepted")
        msg = SignedMessage.model_validate(req.body.message)
        {"advertise": self.server.receive_advertisement, "share_keys": self.server.receive_shares,
         "masked_input": self.server.receive_masked_input, "unmask": self.server.receive_unmasking}[kind](msg)
        self.posted.add(who)
        if self.posted >= self.expected:
            self._close()
        return ActionReceipt()

    def _close(self) -> None:
        if self.phase == "advertise":
            self.roster, self.phase = self.server.close_advertisements(), "share_keys"
        elif self.phase == "share_keys":
            self.inboxes, self.phase = self.server.close_shares(), "masked_input"
        elif self.phase == "masked_input":
            self.survivors, self.phase = self.server.close_masked_inputs(), "unmask"
        else:
            self.result, self.phase = self.server.finalize(), "released"
        self.posted = set()


def drive(host: Host, members: dict[str, RoundParticipant], max_steps: int = 500) -> None:
    """Round-robin: each member does one step per turn until all are done."""
    for _ in range(max_steps):
        if all(p.done for p in members.values()):
            return
        for who, p in members.items():
            step = p.next_request()
            if isinstance(step, Request):
                try:
                    p.handle(host.answer(who, step))
                except (WrongPhase, Conflict) as exc:
                    p.handle_error(exc)
    raise AssertionError("the round did not finish")


def unit_inputs(n: int, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        v = rng.normal(size=SLOTS * DIM)
        out.append(0.9 * v / np.linalg.norm(v))
    return out


def test_n_members_complete_a_round_and_the_server_learns_only_the_sum() -> None:
    ids = [Identity.generate() for _ in range(4)]
    host = Host(ids)
    inputs = unit_inputs(len(ids))
    seen_params: list[SecAggParams] = []

    def vector_of(i: int) -> Any:
        def f(params: SecAggParams) -> np.ndarray:
            seen_params.append(params)
            return inputs[i]
        return f

    members = {i.instance_id: RoundParticipant(i, EXPECT, vector_of(k)) for k, i in enumerate(ids)}
    drive(host, members)

    assert host.phase == "released" and host.result is not None
    assert sorted(host.result.contributors) == sorted(host.params.roster)
    np.testing.assert_allclose(host.result.float_sum, np.sum(inputs, axis=0), atol=1e-4)
    assert len(seen_params) == 4 and all(p == host.params for p in seen_params)  # input built from the round's params
    for p in members.values():
        step = p.next_request()
        assert isinstance(step, Done)
        assert step.outcome.steps_posted == list(SECAGG_PHASES)
        assert step.outcome.released and step.outcome.took_part == 0 and step.outcome.round_id == 0


def test_a_member_not_in_the_roster_or_outside_secagg_is_done_without_posting() -> None:
    ids = [Identity.generate() for _ in range(3)]
    host = Host(ids)
    host.phase = "released"  # the round is over: current is round 1, collecting
    p = RoundParticipant(ids[0], EXPECT, np.zeros(SLOTS * DIM))
    drive(host, {ids[0].instance_id: p})
    out = p.next_request()
    assert isinstance(out, Done) and out.outcome.steps_posted == [] and not out.outcome.released
    assert out.outcome.phase == "collecting"


def bad_state(ids: list[Identity], **over: Any) -> RoundState:
    good = SecAggParams.create(f"{FED}/r0/a0", 0, [i.instance_id for i in ids], SLOTS * DIM, 1.0, 0.0)
    params = {**good.model_dump(), **over}
    return RoundState(round_id=0, attempt=0, phase="advertise", phase_deadline=None, submissions=3,
                      you_submitted=True, you_in_roster=True, you_pending="advertise", params=params)


@pytest.mark.parametrize("case", ["roster_of_one", "threshold_too_small", "clip_too_large", "noise_too_low",
                                  "other_session", "wrong_dimension", "malformed"])
def test_bad_round_parameters_are_refused_before_anything_is_sent(case: str) -> None:
    ids = [Identity.generate() for _ in range(3)]
    me = ids[0]
    over: dict[str, Any] = {
        "roster_of_one": {"roster": [me.instance_id], "threshold": 1},
        "threshold_too_small": {"threshold": 1},
        "clip_too_large": {"clip_norm": 2.0},
        "noise_too_low": {"noise_sigma": 0.0},
        "other_session": {"session_id": "another-fed/r0/a0"},
        "wrong_dimension": {"dim": SLOTS * DIM + 1},
        "malformed": {"frac_bits": 99},
    }[case]
    expect = EXPECT.model_copy(update={"noise_multiplier": 1.0}) if case == "noise_too_low" else EXPECT
    state = bad_state(ids, **over)
    with pytest.raises(CryptoError):
        check_params(state, me.instance_id, expect)
    p = RoundParticipant(me, expect, np.zeros(SLOTS * DIM))
    assert p.next_request() == Request(route="round_current")
    with pytest.raises(CryptoError):
        p.handle(state)
    assert p.sessions == {}  # no secagg state was made, so nothing can have been signed for this round
    assert p.outcome.steps_posted == []


def test_a_post_already_accepted_counts_as_posted_and_a_moved_phase_means_wait() -> None:
    ids = [Identity.generate() for _ in range(3)]
    host = Host(ids)
    p = RoundParticipant(ids[0], EXPECT, np.zeros(SLOTS * DIM))
    p.handle(host.answer(ids[0].instance_id, p.next_request()))  # state: advertise pending
    post = p.next_request()
    assert isinstance(post, Request) and post.posts == "advertise"
    p.handle_error(Conflict("your advertise message was already accepted"))
    assert p.outcome.steps_posted == ["advertise"]
    assert p.next_request() == Request(route="round_current")  # looks again at once
    p.handle_error(WrongPhase("moved on"))
    assert isinstance(p.next_request(), Wait) and p.next_request() == Request(route="round_current")
    with pytest.raises(InvalidInput):
        p.handle_error(InvalidInput("anything else is not the participant's to absorb"))


def test_a_member_that_lost_its_secagg_state_mid_round_is_done_with_the_reason() -> None:
    ids = [Identity.generate() for _ in range(3)]
    host = Host(ids)
    host.phase = "share_keys"  # this participant never advertised in this process
    p = RoundParticipant(ids[0], EXPECT, np.zeros(SLOTS * DIM))
    p.handle(host.answer(ids[0].instance_id, p.next_request()))
    out = p.next_request()
    assert isinstance(out, Done) and "lost its secure-aggregation state" in out.outcome.message
    p2 = RoundParticipant(ids[1], EXPECT, np.zeros(SLOTS * DIM))
    p2.handle_error(AggregationAborted("too few survivors"))
    assert isinstance(p2.next_request(), Done) and p2.outcome.message == "too few survivors"


def test_secagg_state_carries_over_between_participants_of_one_process() -> None:
    """A sync that stops mid-round (deadline) leaves its SecAggClient in ``sessions``; the next
    participant given the same dict continues the same attempt."""
    ids = [Identity.generate() for _ in range(3)]
    host = Host(ids)
    inputs = unit_inputs(3, seed=3)
    sessions: dict[str, Any] = {}
    first = RoundParticipant(ids[0], EXPECT, inputs[0], sessions=sessions)
    first.handle(host.answer(ids[0].instance_id, first.next_request()))
    first.handle(host.answer(ids[0].instance_id, first.next_request()))  # advertise posted
    first.stop("deadline")
    assert list(sessions) == [host.params.session_id]
    members = {ids[0].instance_id: RoundParticipant(ids[0], EXPECT, inputs[0], sessions=sessions)}
    members.update({i.instance_id: RoundParticipant(i, EXPECT, inputs[k + 1]) for k, i in enumerate(ids[1:])})
    drive(host, members)
    assert host.phase == "released"
    np.testing.assert_allclose(host.result.float_sum, np.sum(inputs, axis=0), atol=1e-4)
