"""The I/O loop that runs a :class:`RoundParticipant` against a :class:`CoordinatorAPI`.

Kept apart from the participant (pure) so tests can also drive participants step by step
(:func:`step`), e.g. several members interleaved on one thread against an in-process coordinator.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from continuum_mcp.errors import ContinuumError, CryptoError
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.participant import Done, Request, RoundOutcome, RoundParticipant, Wait
from continuum_mcp.privacy.ledger import PrivacyLedger, PrivacySpend
from continuum_mcp.secagg import SecAggParams

#: called before a secagg message is posted (the client charges its privacy ledger before
#: ``masked_input``); raising stops the round for this member with nothing posted.
BeforePost = Callable[[str, SecAggParams], None]


class LedgerCharge:
    """A ``before_post`` hook: charge ``spend`` to the privacy ledger just before this member's
    masked input is posted (the only moment its data enters a release). Past the budget the
    ledger raises and nothing is posted. ``spent`` says whether it charged.

    The label is the attempt's secagg session id (``<federation>/r<round>/a<attempt>``): a retried
    attempt is a second masked input, which a coordinator could release, so it is a second charge.
    ``federation_id`` is checked against the session (a round of another federation is refused)."""

    def __init__(self, open_ledger: Callable[[], PrivacyLedger], spend: PrivacySpend, federation_id: str) -> None:
        self._open, self._spend, self._federation_id = open_ledger, spend, federation_id
        self.spent = False

    def __call__(self, kind: str, params: SecAggParams) -> None:
        if kind == "masked_input":
            if not params.session_id.startswith(f"{self._federation_id}/"):
                raise CryptoError(f"secure-aggregation session {params.session_id!r} is not of this federation")
            with self._open() as ledger:
                ledger.spend(self._spend, round_id=params.session_id)  # one label per attempt
            self.spent = True


def step(api: CoordinatorAPI, participant: RoundParticipant, before_post: BeforePost | None = None
         ) -> Request | Wait | Done:
    """Do one request of the participant (if it has one); returns what it was."""
    nxt = participant.next_request()
    if isinstance(nxt, Request):
        if nxt.posts is not None and before_post is not None:
            assert participant.params is not None
            before_post(nxt.posts, participant.params)
        try:
            participant.handle(api.call(nxt.route, nxt.body, **nxt.path))
        except ContinuumError as exc:
            participant.handle_error(exc)
    return nxt


def run_round(
    api: CoordinatorAPI,
    participant: RoundParticipant,
    *,
    timeout_seconds: float,
    poll_seconds: float = 0.2,
    sleep: Callable[[float], bool | None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    before_post: BeforePost | None = None,
) -> RoundOutcome:
    """Take part until the round this member is in is over, or ``timeout_seconds`` pass, or
    ``sleep`` returns True (e.g. ``threading.Event.wait`` of a closing client)."""
    deadline = monotonic() + timeout_seconds
    while True:
        done = step(api, participant, before_post)
        if isinstance(done, Done):
            return done.outcome
        if isinstance(done, Wait):
            out = participant.outcome
            if monotonic() > deadline:
                return participant.stop(f"round {out.round_id} still in {out.phase}; sync again later").outcome
            if sleep(poll_seconds):
                return participant.stop("the client is closing; sync again later").outcome
