"""One secure-aggregation attempt of a round, in memory: which phase, who is expected, what is ready.

Why in memory: the ``SecAggServer`` holds no secrets worth keeping, so after a restart the engine
starts a fresh attempt of the same round from the stored submissions instead of restoring this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from continuum_mcp.errors import Conflict, Forbidden, WrongPhase
from continuum_mcp.secagg import (
    AggregateResult,
    KeyRoster,
    SecAggParams,
    SecAggServer,
    ShareInbox,
    SignedMessage,
    SurvivorList,
)


@dataclass
class Attempt:
    round_id: int
    attempt: int
    params: SecAggParams
    server: SecAggServer
    phase: str
    expected: set[str]
    deadline: float
    posted: set[str] = field(default_factory=set)
    key_roster: KeyRoster | None = None
    inboxes: dict[str, ShareInbox] | None = None
    survivors: SurvivorList | None = None

    def accept(self, kind: str, caller: str, message: SignedMessage) -> None:
        """Check that ``caller`` may post ``kind`` now and hand the message to the server."""
        if self.phase != kind:
            raise WrongPhase(f"round {self.round_id} attempt {self.attempt} is in phase {self.phase}, not {kind}")
        if message.envelope.instance_id != caller:
            raise Forbidden("the secure-aggregation message is signed by another identity than the request")
        if caller not in self.params.roster:
            raise Forbidden("you are not in this round's roster")
        if caller in self.posted:
            raise Conflict(f"your {kind} message was already accepted")
        if caller not in self.expected:
            raise Forbidden(f"you were dropped from this attempt before the {kind} phase")
        {
            "advertise": self.server.receive_advertisement,
            "share_keys": self.server.receive_shares,
            "masked_input": self.server.receive_masked_input,
            "unmask": self.server.receive_unmasking,
        }[kind](message)
        self.posted.add(caller)

    @property
    def complete(self) -> bool:
        return self.posted >= self.expected

    def close_phase(self) -> tuple[str, set[str]] | AggregateResult:
        """End the current phase: the next (phase, expected members), or the final aggregate."""
        if self.phase == "advertise":
            self.key_roster = self.server.close_advertisements()
            return "share_keys", {m.envelope.instance_id for m in self.key_roster.adverts}
        if self.phase == "share_keys":
            self.inboxes = self.server.close_shares()
            return "masked_input", set(self.inboxes)
        if self.phase == "masked_input":
            self.survivors = self.server.close_masked_inputs()
            return "unmask", set(self.survivors.survivors)
        return self.server.finalize()

    def roster_for(self, caller: str) -> KeyRoster:
        if caller not in self.params.roster:
            raise Forbidden("you are not in this round's roster")
        if self.key_roster is None:
            raise WrongPhase("the key roster is not ready yet (phase advertise)")
        return self.key_roster

    def inbox_for(self, caller: str) -> ShareInbox:
        if self.inboxes is None:
            raise WrongPhase(f"share inboxes are not ready yet (phase {self.phase})")
        if caller not in self.inboxes:
            raise Forbidden("you are not among the members that shared keys in this attempt")
        return self.inboxes[caller]

    def survivors_for(self, caller: str) -> SurvivorList:
        if self.survivors is None:
            raise WrongPhase(f"the survivor list is not ready yet (phase {self.phase})")
        if caller not in self.survivors.survivors:
            raise Forbidden("your masked input is not part of this attempt's sum")
        return self.survivors

    def pending_for(self, caller: str | None) -> str | None:
        return self.phase if caller in self.expected and caller not in self.posted else None
