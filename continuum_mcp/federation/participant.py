"""A member's side of one round's secure aggregation, as a pure state machine (no I/O).

Why pure: the client, the tests and the benchmarks all take part in rounds; with the protocol
logic here and the I/O outside, they share one copy of it and a test can drive many members and
a server with plain function calls.

Use::

    p = RoundParticipant(identity, RoundExpectations.for_mode(fed_id, slots, dim, mode), vector_of)
    while not isinstance(step := p.next_request(), Done):
        if isinstance(step, Wait):
            sleep(poll)                 # then ask again
            continue
        try:
            p.handle(api.call(step.route, step.body, **step.path))
        except ContinuumError as exc:
            p.handle_error(exc)         # absorbs WrongPhase / Conflict / AggregationAborted, re-raises the rest
    outcome = step.outcome

(``continuum_mcp.federation.client.run_round`` is that loop, with a deadline and a hook called
before a message is posted, where the client charges its privacy ledger.)

What it does: it polls the current round; when the coordinator waits for this member's message
(``you_pending``) it checks the round's ``SecAggParams`` against what the federation promised
(:func:`check_params`: session, dimension, roster, threshold, clip norm, noise), fetches what the
step needs (roster, inbox, survivors), has :class:`SecAggClient` compute the signed message and
posts it, through the four phases ``advertise, share_keys, masked_input, unmask``. Once the round
it took part in is over it reads that round's final state and is done.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from continuum_mcp.crypto.identity import Identity
from continuum_mcp.errors import AggregationAborted, Conflict, ContinuumError, CryptoError, InvalidInput, WrongPhase
from continuum_mcp.federation.protocol import (
    SECAGG_PHASES,
    ActionReceipt,
    RoundState,
    SecAggKind,
    SecAggPost,
    slot_vector_layout,
)
from continuum_mcp.privacy.modes import PrivacyMode
from continuum_mcp.secagg import (
    KeyRoster,
    SecAggClient,
    SecAggParams,
    ShareInbox,
    SignedMessage,
    SparseDesign,
    SurvivorList,
    threshold_for,
)

#: the fewest members a secure aggregation may have (fewer would expose inputs to each other).
MIN_ROSTER = 3
#: the fraction of a roster assumed to be fake identities (sybils) unless stated otherwise: the
#: coordinator can mint admission tokens, so a client never assumes every other member is honest.
DEFAULT_SYBIL_FRACTION = 1 / 3
#: the route each phase reads before it can compute its message (advertise needs nothing).
_FETCH: dict[str, str] = {"share_keys": "secagg_roster", "masked_input": "secagg_inbox", "unmask": "secagg_survivors"}

InputVector = Callable[[SecAggParams], np.ndarray]


def honest_survivors(n: int, threshold: int, sybil_fraction: float) -> int:
    """The fewest honest members among any ``threshold`` survivors of a roster of ``n`` of which up
    to ``floor(sybil_fraction * n)`` are sybils (at least 1)."""
    return max(1, threshold - math.floor(sybil_fraction * n + 1e-9))


def sybil_noise_factor(n: int, sybil_fraction: float, floor: int | None = None) -> float:
    """How much each client's noise share is raised so that the honest survivors *alone* add the
    mode's noise: shares are sigma/sqrt(t) for the t survivors the round cannot go below (``floor``:
    t = ceil(2n/3) for Bonawitz, SecAgg+'s ``min_survivors``), so sqrt(t / honest survivors)."""
    t = threshold_for(n) if floor is None else floor
    return math.sqrt(t / honest_survivors(n, t, sybil_fraction))


def centroid_clip(mode: PrivacyMode) -> float:
    """The L2 clip of a member's secagg input: sqrt of the centroid share of its unit window norm
    (the mode's ``centroid_clip``; the noise is then calibrated to the *quantised* clip in
    :func:`round_params`, never scaled by the clip twice)."""
    return mode.centroid_clip


def round_params(federation_id: str, round_id: int, attempt: int, roster: list[str], slots: int, dim: int,
                 mode: PrivacyMode, sybil_fraction: float = DEFAULT_SYBIL_FRACTION,
                 sparse: SparseDesign | None = None) -> SecAggParams:
    """The one calibration of a round's secure aggregation, used by the coordinator to make the
    parameters and by every client to check them: clip = :func:`centroid_clip`, noise_sigma =
    mode.sigma x quantised sensitivity x :func:`sybil_noise_factor`, the largest safe fixed-point
    scale, and the graph: Bonawitz's complete one with t = ceil(2n/3), or, for a roster of at least
    ``sparse.min_roster``, SecAgg+'s (k, t, floor) that the design implies."""
    total, _ = slot_vector_layout(slots, dim)
    clip = centroid_clip(mode)
    session = f"{federation_id}/r{round_id}/a{attempt}"
    graph = SecAggParams.create(session, round_id, roster, total, clip, 0.0, sparse=sparse)
    factor = sybil_noise_factor(graph.n, sybil_fraction, graph.survivor_floor)
    probe = SecAggParams.create(session, round_id, roster, total, clip, mode.sigma * clip * factor, sparse=sparse)
    return SecAggParams.create(session, round_id, roster, total, clip,
                               mode.sigma * probe.quantised_sensitivity * factor, frac_bits=probe.frac_bits,
                               sparse=sparse)


class RoundExpectations(BaseModel):
    """What the federation promised, against which a round's parameters are checked."""

    model_config = ConfigDict(frozen=True)

    federation_id: str
    slots: int = Field(ge=1)
    dim: int = Field(ge=1)
    max_clip_norm: float = Field(gt=0, description="The clip the mode fixes (sqrt of the centroid share of the unit "
                                                   "round contribution); a round must use exactly this.")
    noise_multiplier: float = Field(ge=0, description="The mode's sigma per unit of (quantised) sensitivity.")
    sybil_fraction: float = Field(default=DEFAULT_SYBIL_FRACTION, ge=0, lt=1,
                                  description="This client's own assumption of the sybil share of a roster.")
    sparse: SparseDesign | None = Field(default_factory=SparseDesign, description="The SecAgg+ design this client "
                                        "accepts for large rosters (None: only Bonawitz's complete graph).")

    @classmethod
    def for_mode(cls, federation_id: str, slots: int, dim: int, mode: PrivacyMode,
                 sybil_fraction: float = DEFAULT_SYBIL_FRACTION,
                 sparse: SparseDesign | None = SparseDesign()) -> RoundExpectations:
        return cls(federation_id=federation_id, slots=slots, dim=dim, max_clip_norm=centroid_clip(mode),
                   noise_multiplier=mode.sigma, sybil_fraction=sybil_fraction, sparse=sparse)


#: how much coarser than the calibration's own fixed-point scale a round may quantise
FRAC_BITS_SLACK = 2


def check_params(state: RoundState, instance_id: str, expect: RoundExpectations) -> SecAggParams:
    """The round's SecAggParams, refused (``CryptoError``) if they would give less privacy than
    the federation's mode promises or do not belong to this round: at least MIN_ROSTER distinct
    members, the graph (Bonawitz's complete one with t exactly ceil(2n/3), which is always
    accepted, or exactly the SecAgg+ (k, t, floor) this client's design implies for the roster:
    a smaller k or t is refused), the mode's clip, a fixed-point scale that neither wraps around
    nor is coarser than the calibration's, and noise that the honest survivors alone provide
    under this client's sybil fraction."""
    try:
        params = SecAggParams.model_validate(state.params)
    except ValidationError as exc:
        raise CryptoError(f"the round's secure-aggregation parameters are malformed: {exc.errors()[0]['msg']}") from exc
    total, _ = slot_vector_layout(expect.slots, expect.dim)
    session = f"{expect.federation_id}/r{state.round_id}/a{state.attempt}"
    if params.session_id != session or params.round_id != state.round_id:
        raise CryptoError(f"secure-aggregation session {params.session_id!r} is not {session!r}")
    if params.dim != total:
        raise CryptoError(f"secure-aggregation dimension {params.dim} is not {total}")
    if instance_id not in params.roster:
        raise CryptoError("this instance is not in the round's roster")
    if len(set(params.roster)) < MIN_ROSTER or len(set(params.roster)) != len(params.roster):
        raise CryptoError(f"the round's roster has {len(set(params.roster))} distinct members; "
                          f"secure aggregation needs at least {MIN_ROSTER}")
    if params.sparse:
        params.require_design(expect.sparse)
    elif params.threshold != threshold_for(params.n):
        raise CryptoError(f"the round's threshold {params.threshold} is not ceil(2n/3) = {threshold_for(params.n)} "
                          f"for n = {params.n}: a smaller one lets fewer colluders unmask single inputs")
    if abs(params.clip_norm - expect.max_clip_norm) > 1e-9:
        raise CryptoError(f"the round's clip norm {params.clip_norm:.6g} is not the mode's {expect.max_clip_norm:.6g}")
    if params.max_abs_coordinate() >= 2**31:
        raise CryptoError(f"the round's fixed-point scale 2^{params.frac_bits} lets the sum wrap around")
    factor = sybil_noise_factor(params.n, expect.sybil_fraction, params.survivor_floor)
    try:
        probe = SecAggParams.create(params.session_id, params.round_id, params.roster, params.dim, params.clip_norm,
                                    expect.noise_multiplier * params.clip_norm * factor,
                                    sparse=expect.sparse if params.sparse else None)
    except InvalidInput as exc:
        raise CryptoError(f"the round's parameters admit no safe fixed-point scale: {exc.message}") from exc
    if params.frac_bits < probe.frac_bits - FRAC_BITS_SLACK:
        raise CryptoError(f"the round's fixed-point scale 2^{params.frac_bits} is coarser than the calibration's "
                          f"2^{probe.frac_bits}")
    if params.noise_sigma + 1e-9 < expect.noise_multiplier * params.quantised_sensitivity * factor:
        raise CryptoError("the round's noise is below the privacy mode's calibration for a sybil fraction of "
                          f"{expect.sybil_fraction:.3g}; not taking part")
    return params


class Request(BaseModel):
    """Call route ``route`` (a ``protocol.routes()`` name) with ``body`` and the ``path`` parameters."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    step: Literal["request"] = "request"
    route: str
    path: dict[str, Any] = Field(default_factory=dict)
    body: BaseModel | None = None

    @property
    def posts(self) -> SecAggKind | None:
        """The secagg message kind this request posts, if it posts one."""
        return self.path["kind"] if self.route == "secagg_post" else None


class Wait(BaseModel):
    """Nothing to do until the round moves on: pause (the loop's poll interval), then ask again."""

    step: Literal["wait"] = "wait"


class RoundOutcome(BaseModel):
    round_id: int | None = None
    phase: str | None = None
    took_part: int | None = Field(default=None, description="The round whose roster this member was in.")
    steps_posted: list[SecAggKind] = Field(default_factory=list)
    released: bool = Field(default=False, description="The round this member unmasked in was released.")
    message: str = ""


class Done(BaseModel):
    step: Literal["done"] = "done"
    outcome: RoundOutcome


class RoundParticipant:
    """One member in the secure aggregation of the current round (see the module docstring).

    ``inputs(params)`` gives the member's input vector (``submission.secagg_input``); an array is
    taken as it is. ``sessions`` (session id -> SecAggClient) carries the secagg state across
    participants of the same process, so a sync that timed out mid-round can be resumed.
    """

    def __init__(self, identity: Identity, expect: RoundExpectations, inputs: InputVector | np.ndarray,
                 *, sessions: dict[str, SecAggClient] | None = None) -> None:
        self.identity = identity
        self.expect = expect
        self._inputs: InputVector = inputs if callable(inputs) else (lambda _p, v=np.asarray(inputs): v)
        self.sessions: dict[str, SecAggClient] = sessions if sessions is not None else {}
        self.outcome = RoundOutcome()
        self.params: SecAggParams | None = None
        self._next: Request | Wait | Done = Request(route="round_current")
        self._kind: SecAggKind | None = None

    @property
    def instance_id(self) -> str:
        return self.identity.instance_id

    @property
    def done(self) -> bool:
        return isinstance(self._next, Done)

    def next_request(self) -> Request | Wait | Done:
        """What to do next. After a ``Wait`` the next call asks for the round's state again."""
        step = self._next
        if isinstance(step, Wait):
            self._next = Request(route="round_current")
        return step

    def stop(self, message: str) -> Done:
        """End here (deadline passed, client closing); the secagg state stays in ``sessions``."""
        if not self.done:
            self.outcome.message = message
            self._next = Done(outcome=self.outcome)
        return self._next  # type: ignore[return-value]

    def _finish(self, message: str = "") -> None:
        self.outcome.message = self.outcome.message or message
        self._next = Done(outcome=self.outcome)

    def _posted(self) -> None:
        assert self._kind is not None
        self.outcome.steps_posted.append(self._kind)
        self._kind = None
        self._next = Request(route="round_current")  # look again at once: the next step may be open

    def handle(self, response: BaseModel) -> None:
        """Consume the answer to the request last returned by :meth:`next_request`."""
        req = self._next
        if not isinstance(req, Request):
            raise RuntimeError("handle() without an outstanding request")
        if req.route == "round_current":
            self._on_state(_as(RoundState, response))
        elif req.route == "round":
            final = _as(RoundState, response)
            self.outcome.round_id, self.outcome.phase = final.round_id, final.phase
            self.outcome.released = final.phase == "released" and "unmask" in self.outcome.steps_posted
            self._finish()
        elif req.route == "secagg_post":
            _as(ActionReceipt, response)
            self._posted()
        else:
            self._post(self._compute(req.route, response))

    def handle_error(self, exc: ContinuumError) -> None:
        """Absorb the errors a round legitimately produces; re-raise any other."""
        req = self._next
        if isinstance(req, Request) and req.posts is not None and isinstance(exc, Conflict):
            self._posted()  # a retried post that had already been accepted
        elif isinstance(exc, WrongPhase):
            self._kind, self._next = None, Wait()  # the phase moved on meanwhile: look again after a pause
        elif isinstance(exc, AggregationAborted):
            self._finish(exc.message)
        else:
            raise exc

    # ----- transitions --------------------------------------------------------------------
    def _on_state(self, st: RoundState) -> None:
        out = self.outcome
        out.round_id, out.phase = st.round_id, st.phase
        if out.took_part is not None and st.round_id != out.took_part:
            self._next = Request(route="round", path={"round_id": out.took_part})
        elif st.phase not in SECAGG_PHASES or not st.you_in_roster:
            self._finish()
        elif st.you_pending is not None and st.params is not None:
            out.took_part = st.round_id
            try:
                self._begin(st, st.you_pending)
            except AggregationAborted as exc:
                self._finish(exc.message)
        else:
            if out.took_part is None:
                out.took_part = st.round_id  # in the roster with nothing pending: wait for the outcome
            self._next = Wait()

    def _begin(self, st: RoundState, kind: SecAggKind) -> None:
        params = check_params(st, self.instance_id, self.expect)
        self.params, self._kind = params, kind
        if kind == "advertise":
            client = SecAggClient(self.identity, params)
            self.sessions.clear()  # older attempts are over
            self.sessions[params.session_id] = client
            self._post(client.advertise_keys())
            return
        if params.session_id not in self.sessions:
            raise AggregationAborted(f"round {st.round_id}: this client lost its secure-aggregation state (restart "
                                     "mid-round); it is dropped from this attempt and its submission carries over")
        self._next = Request(route=_FETCH[kind], path={"round_id": st.round_id})

    def _compute(self, route: str, response: BaseModel) -> SignedMessage:
        assert self.params is not None
        client = self.sessions[self.params.session_id]
        if route == "secagg_roster":
            return client.share_keys(_as(KeyRoster, response))
        if route == "secagg_inbox":
            return client.masked_input(_as(ShareInbox, response), self._inputs(self.params))
        if route == "secagg_survivors":
            return client.unmask(_as(SurvivorList, response))
        raise RuntimeError(f"unexpected route {route}")

    def _post(self, msg: SignedMessage) -> None:
        assert self.params is not None and self._kind is not None
        self._next = Request(route="secagg_post", path={"round_id": self.params.round_id, "kind": self._kind},
                             body=SecAggPost(message=msg.model_dump(mode="json")))


def _as(model: type[Any], value: BaseModel) -> Any:
    """``value`` as ``model`` (a transport may hand over an equal model of another class)."""
    return value if isinstance(value, model) else model.model_validate(value.model_dump())


__all__ = [
    "DEFAULT_SYBIL_FRACTION", "FRAC_BITS_SLACK", "MIN_ROSTER", "Done", "InputVector", "Request", "RoundExpectations",
    "RoundOutcome", "RoundParticipant", "Wait", "centroid_clip", "check_params", "honest_survivors", "round_params",
    "sybil_noise_factor",
]
