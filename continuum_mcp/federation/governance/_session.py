"""The life of a learning session, as a pure state machine.

``discussion -> approved | rejected | refused``, then ``approved -> running (round r of R) ->
completed | halted``. Transitions are functions of the current state and one event; an event that
does not apply in the current phase is ``WrongPhase``, so a coordinator can never start a session
that the tally did not approve, nor run round R + 1.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from continuum_mcp.errors import WrongPhase
from continuum_mcp.federation.governance._tally import Tally

SessionPhase = Literal["discussion", "approved", "rejected", "refused", "running", "completed", "halted"]
FINAL_PHASES: frozenset[str] = frozenset({"rejected", "refused", "completed", "halted"})


class SessionState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    phase: SessionPhase = "discussion"
    round: int = Field(default=0, ge=0, description="Rounds finished (released or aborted) so far.")
    rounds: int = Field(ge=1, description="R, the rounds the proposal asks for.")
    running_round: int | None = Field(default=None, description="The round in progress (1-based), if any.")


def decide(state: SessionState, t: Tally) -> SessionState:
    """At or after the deadline: the tally's decision (still ``discussion`` before it)."""
    if state.phase != "discussion":
        raise WrongPhase(f"the session is {state.phase}; its decision is already taken")
    if t.decision == "discussion":
        return state
    return state.model_copy(update={"phase": t.decision})


def start_round(state: SessionState, t: Tally) -> SessionState:
    """Begin the next round: only of an approved or running session that is not halted, and only
    while rounds remain. A halt that passed ends the session here, at the next round."""
    if state.phase not in ("approved", "running") or state.running_round is not None:
        raise WrongPhase(f"no round can start: the session is {state.phase}"
                         + (f" (round {state.running_round} in progress)" if state.running_round else ""))
    if t.decision != "approved":
        raise WrongPhase(f"the session is not approved by the tally ({t.decision})")
    if t.halted:
        return state.model_copy(update={"phase": "halted"})
    if state.round >= state.rounds:
        return state.model_copy(update={"phase": "completed"})
    return state.model_copy(update={"phase": "running", "running_round": state.round + 1})


def finish_round(state: SessionState) -> SessionState:
    """The running round is over (released, or aborted: an aborted round is not retried)."""
    if state.phase != "running" or state.running_round is None:
        raise WrongPhase(f"no round is running (the session is {state.phase})")
    done = state.running_round
    phase: SessionPhase = "completed" if done >= state.rounds else "running"
    return state.model_copy(update={"phase": phase, "round": done, "running_round": None})


__all__ = ["FINAL_PHASES", "SessionPhase", "SessionState", "decide", "finish_round", "start_round"]
