"""One secure-aggregation attempt: which phase, who is expected, what is ready, as a replayable log.

Why a log: with several coordinator processes on one database any of them may serve the next
message, and any of them may die mid-round. An ``Attempt`` is a pure state machine around a
``SecAggServer`` whose every change is one :class:`~._attempt_sql.LogRecord` (its opening, each
accepted message, each phase close). The host writes the record in the store transaction that
accepts it; another process rebuilds the same state by replaying the records in order
(:meth:`Attempt.from_log`, then :meth:`Attempt.catch_up` with the records it has not seen yet).
``SecAggServer`` is deterministic given its messages, so a replayed close gives the same rosters,
inboxes and survivor lists; the recorded expected set is checked against it.

The object knows nothing about rounds, releases or SQL: ``round_id`` and ``attempt`` are labels of
its host, so another round purpose (a learning session) can open one with its own parameters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from continuum_mcp.crypto.identity import MemoryReplayGuard, Verifier
from continuum_mcp.crypto.signing import Envelope, b64decode, b64encode, verify_signature_only
from continuum_mcp.errors import (
    AggregationAborted,
    Conflict,
    ContinuumError,
    CryptoError,
    Forbidden,
    InvalidInput,
    StoreCorrupt,
    WrongPhase,
)
from continuum_mcp.federation.coordinator._attempt_sql import LogRecord
from continuum_mcp.secagg import (
    AggregateResult,
    KeyRoster,
    SecAggParams,
    SecAggServer,
    ShareInbox,
    SignedMessage,
    SurvivorList,
)
from continuum_mcp.secagg.messages import SECAGG_METHOD

_NEXT = {"advertise": "share_keys", "share_keys": "masked_input", "masked_input": "unmask"}


class StoredVerifier(Verifier):
    """Checks a message the attempt already accepted: signature, pinned key, method and path, but
    not freshness or nonce. Those were checked once, live, when it was accepted (:meth:`Attempt.accept`);
    replayed minutes later by another process the message would fail both."""

    def __init__(self) -> None:
        super().__init__(MemoryReplayGuard())

    def verify(self, envelope: Envelope, *, method: str, path: str, body: bytes,
               expected_public_key: bytes | None = None, expected_instance_id: str | None = None) -> str:
        if expected_instance_id is not None and envelope.instance_id != expected_instance_id:
            raise CryptoError("message is from an unexpected instance")
        if expected_public_key is not None and \
                b64decode(envelope.public_key, what="public key", length=32) != expected_public_key:
            raise CryptoError("the public key is not the one registered for this instance")
        if envelope.method != method.upper() or envelope.path != path:
            raise CryptoError("message was signed for another method or path")
        return verify_signature_only(envelope, body)


@dataclass(frozen=True)
class Closed:
    """What closing a phase gave: the next phase, or the end of the attempt (its aggregate, or why
    it failed; ``sum_refused``: only the sum's norm check refused it, every secret was recovered)."""

    phase: str
    next_phase: str | None
    result: AggregateResult | None = None
    error: ContinuumError | None = None
    sum_refused: bool = False


class Attempt:
    """One attempt of a secure aggregation over ``params.roster`` with the members' signing
    ``keys`` pinned at opening; ``deadline`` is the current phase's."""

    def __init__(self, round_id: int, attempt: int, params: SecAggParams, keys: Mapping[str, bytes],
                 deadline: float, *, opened_at: float) -> None:
        self.round_id, self.attempt, self.params = round_id, attempt, params
        self.keys = dict(keys)
        self.server = SecAggServer(params, StoredVerifier(), self.keys)
        self.opened_at = opened_at
        self.phase = "advertise"
        self.expected: set[str] = set(params.roster)
        self.posted: set[str] = set()
        self.deadline = deadline
        self.seq = 0  #: the last log record applied (0: the opening)
        self.over = False  #: the last phase closed (or failed): nothing more is accepted
        self.rosters: dict[str, KeyRoster] | None = None
        self.inboxes: dict[str, ShareInbox] | None = None
        self.survivor_lists: dict[str, SurvivorList] | None = None

    @property
    def session_id(self) -> str:
        return self.params.session_id

    # ------------------------------------------------------------------------------ the log

    def opening(self) -> LogRecord:
        """Record 0: everything needed to open the same attempt elsewhere."""
        body = {"round_id": self.round_id, "attempt": self.attempt, "params": self.params.model_dump(mode="json"),
                "keys": {m: b64encode(k) for m, k in sorted(self.keys.items())}, "deadline": self.deadline}
        return LogRecord(0, "open", None, json.dumps(body, sort_keys=True), self.opened_at)

    @classmethod
    def from_log(cls, records: Sequence[LogRecord]) -> Attempt:
        """The attempt as its log leaves it (records in sequence order, starting with the opening)."""
        if not records or records[0].seq != 0 or records[0].kind != "open":
            raise StoreCorrupt("a secure-aggregation attempt's log does not start with its opening")
        body = json.loads(records[0].body)
        keys = {m: b64decode(k, what="public key", length=32) for m, k in body["keys"].items()}
        a = cls(int(body["round_id"]), int(body["attempt"]), SecAggParams.model_validate(body["params"]), keys,
                float(body["deadline"]), opened_at=records[0].at)
        a.catch_up(records[1:])
        return a

    def catch_up(self, records: Sequence[LogRecord]) -> None:
        """Apply records written (by any process) after the last one applied here."""
        for r in records:
            if r.seq != self.seq + 1:
                raise StoreCorrupt(f"attempt {self.session_id}: log record {r.seq} follows {self.seq}")
            if r.kind == "close":
                self._replay_close(json.loads(r.body))
            else:
                self._take(r.kind, SignedMessage.model_validate_json(r.body))
            self.seq = r.seq

    def _replay_close(self, body: dict[str, object]) -> None:
        if body["next"] is None:  # the attempt ended there; its host recorded the outcome
            self.over = True
            return
        closed = self._close()
        if closed.next_phase != body["next"] or sorted(self.expected) != body["expected"]:
            raise StoreCorrupt(f"attempt {self.session_id}: replaying the close of {closed.phase} gave another "
                               "outcome than the one recorded")
        self.deadline = float(body["deadline"])  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------ transitions

    def accept(self, kind: str, caller: str, message: SignedMessage, verifier: Verifier, now: float) -> LogRecord:
        """Check that ``caller`` may post ``kind`` now (``verifier``: signature, freshness, nonce),
        hand the message to the server, and return the record to write. Refused: nothing changes."""
        if self.over or self.phase != kind:
            raise WrongPhase(f"round {self.round_id} attempt {self.attempt} is in phase "
                             f"{'closing' if self.over else self.phase}, not {kind}")
        if message.envelope.instance_id != caller:
            raise Forbidden("the secure-aggregation message is signed by another identity than the request")
        if caller not in self.params.roster:
            raise Forbidden("you are not in this round's roster")
        if caller in self.posted:
            raise Conflict(f"your {kind} message was already accepted")
        if caller not in self.expected:
            raise Forbidden(f"you were dropped from this attempt before the {kind} phase")
        verifier.verify(message.envelope, method=SECAGG_METHOD, path=self.params.path(kind), body=message.body(),
                        expected_public_key=self.keys.get(caller))
        self._take(kind, message)
        self.seq += 1
        return LogRecord(self.seq, kind, caller, message.model_dump_json(), now)

    def _take(self, kind: str, message: SignedMessage) -> None:
        receive = {"advertise": self.server.receive_advertisement, "share_keys": self.server.receive_shares,
                   "masked_input": self.server.receive_masked_input, "unmask": self.server.receive_unmasking}
        if kind not in receive:
            raise InvalidInput(f"unknown secure-aggregation message kind {kind!r}")
        receive[kind](message)
        self.posted.add(message.envelope.instance_id)

    @property
    def complete(self) -> bool:
        """Every expected member has posted the current phase's message."""
        return not self.over and self.posted >= self.expected

    def close(self, deadline: float, now: float) -> tuple[Closed, LogRecord]:
        """End the current phase (all posted, or its deadline passed); the next one ends at
        ``deadline``. Returns what it gave and the record to write (a failure is recorded too)."""
        closed = self._close()
        if closed.next_phase is not None:
            self.deadline = deadline
        self.seq += 1
        body = {"closed": closed.phase, "next": closed.next_phase,
                "expected": sorted(self.expected) if closed.next_phase else [],
                "deadline": deadline if closed.next_phase else None,
                "outcome": None if closed.next_phase else ("aggregate" if closed.result is not None else "failed")}
        return closed, LogRecord(self.seq, "close", None, json.dumps(body, sort_keys=True), now)

    def _close(self) -> Closed:
        phase, server = self.phase, self.server
        if self.over:
            raise WrongPhase(f"attempt {self.session_id} is over")
        try:
            if phase == "advertise":
                self.rosters = server.close_key_rosters()
                nxt = set(self.rosters)
            elif phase == "share_keys":
                self.inboxes = server.close_shares()
                nxt = set(self.inboxes)
            elif phase == "masked_input":
                self.survivor_lists = server.close_survivor_lists()
                nxt = set(self.survivor_lists)
            else:
                self.over = True
                return Closed(phase, None, result=server.finalize())
        except (AggregationAborted, CryptoError, InvalidInput) as exc:
            self.over = True  # phase and posted stay: they say whose masked inputs were received
            return Closed(phase, None, error=exc, sum_refused=server.sum_refused)
        self.phase, self.expected, self.posted = _NEXT[phase], nxt, set()
        return Closed(phase, self.phase)

    # ------------------------------------------------------------------------------ views

    def roster_for(self, caller: str) -> KeyRoster:
        if caller not in self.params.roster:
            raise Forbidden("you are not in this round's roster")
        if self.rosters is None:
            raise WrongPhase("the key roster is not ready yet (phase advertise)")
        if caller not in self.rosters:
            raise Forbidden("you did not advertise keys in this attempt")
        return self.rosters[caller]

    def inbox_for(self, caller: str) -> ShareInbox:
        if self.inboxes is None:
            raise WrongPhase(f"share inboxes are not ready yet (phase {self.phase})")
        if caller not in self.inboxes:
            raise Forbidden("you are not among the members that shared keys in this attempt")
        return self.inboxes[caller]

    def survivors_for(self, caller: str) -> SurvivorList:
        if self.survivor_lists is None:
            raise WrongPhase(f"the survivor list is not ready yet (phase {self.phase})")
        if caller not in self.survivor_lists:
            raise Forbidden("your masked input is not part of this attempt's sum")
        return self.survivor_lists[caller]

    def pending_for(self, caller: str | None) -> str | None:
        return self.phase if not self.over and caller in self.expected and caller not in self.posted else None

    def masked_senders(self) -> set[str]:
        """Members whose masked input the attempt has received (so far)."""
        if self.phase == "masked_input":
            return set(self.posted)
        return set(self.survivor_lists or ()) if self.phase == "unmask" else set()


__all__ = ["Attempt", "Closed", "StoredVerifier"]
