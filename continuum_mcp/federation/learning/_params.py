"""A learning session's parameters and the privacy guarantee they imply (DESIGN.md section 4).

Why one module: a proposal shows the guarantee, every client checks a round against it and the
ledger charges it, so all three read the same computed figures from here. The mechanism is the
one the release rounds use (``federation.participant.round_params``): each of R rounds releases
the sum of the participants' clipped, quantised vectors plus distributed discrete Gaussian noise
of total std ``noise_multiplier`` x the quantised clip, every client adding its share
sigma / sqrt(t) (t = ceil(2n/3), the fewest survivors secure aggregation allows), raised by the
sybil factor sqrt(t / h) so that the h honest survivors alone add the whole noise. One round is
therefore exactly (1 / noise_multiplier)-GDP at the user level, and R rounds compose exactly to
sqrt(R) / noise_multiplier (Dong, Roth & Su); epsilon at delta comes from
:func:`continuum_mcp.privacy.accounting.gdp_epsilon`, the accountant the ledger uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.participant import (
    DEFAULT_SYBIL_FRACTION, RoundExpectations, check_params, honest_survivors, sybil_noise_factor,
)
from continuum_mcp.federation.protocol import RoundState
from continuum_mcp.privacy.accounting import compose_gdp, gdp_epsilon
from continuum_mcp.privacy.ledger import PrivacySpend
from continuum_mcp.privacy.modes import PrivacyMode
from continuum_mcp.errors import CryptoError
from continuum_mcp.secagg.params import SecAggParams, threshold_for

#: The card's floor: no learning with fewer than 10 participants.
MIN_SESSION_PARTICIPANTS = 10
#: More rounds than this is a different proposal (and an epsilon nobody should approve).
MAX_SESSION_ROUNDS = 100
#: delta above this would state a guarantee that fails for one member in a hundred thousand.
MAX_SESSION_DELTA = 1e-5
#: Largest tolerated distributed-discrete-Gaussian gap tau (Kairouz, Liu & Steinke 2021).
MAX_DISCRETE_TAU = 1e-12
#: The federation's delta convention: the privacy modes' per-window delta (1e-6).
DEFAULT_SESSION_DELTA: float = PrivacyMode.model_fields["delta"].default



class _DefaultRounds(Mapping[str, int]):
    """kind name -> its default rounds, read from the kinds themselves (``_registry``)."""

    def _table(self) -> Mapping[str, int]:
        from continuum_mcp.federation.learning._registry import SESSION_KINDS
        return {name: k.default_rounds for name, k in SESSION_KINDS.items()}

    def __getitem__(self, name: str) -> int:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


#: Rounds of each kind unless a proposal says otherwise (each kind's ``default_rounds``, with its
#: reason): codebook refinement 3 Lloyd steps, usage statistics 1 round.
DEFAULT_ROUNDS: Mapping[str, int] = _DefaultRounds()


class SessionParams(BaseModel):
    """What a proposal fixes: the kind, its rounds and the DP parameters (card defaults).

    Build with :meth:`build` (or ``model_validate``) to get a typed ``InvalidInput`` with the
    precise reason; ``rounds`` left out takes the kind's default (:data:`DEFAULT_ROUNDS`)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    kind: str = Field(min_length=1, max_length=64, description="A registered session kind.")
    rounds: int = Field(ge=1, le=MAX_SESSION_ROUNDS)
    noise_multiplier: float = Field(default=1.1, gt=0, allow_inf_nan=False,
                                    description="Total noise std of each round's sum per unit of the clip.")
    clip: float = Field(default=1.0, gt=0, allow_inf_nan=False,
                        description="L2 bound of one participant's whole vector per round.")
    local_steps: int = Field(default=1, ge=1, le=100, description="Local computation steps per round.")
    min_participants: int = Field(default=MIN_SESSION_PARTICIPANTS, ge=MIN_SESSION_PARTICIPANTS, le=1_000_000)
    delta: float = Field(default=DEFAULT_SESSION_DELTA, gt=0, le=MAX_SESSION_DELTA, allow_inf_nan=False)
    sybil_fraction: float = Field(default=DEFAULT_SYBIL_FRACTION, ge=0, lt=1, allow_inf_nan=False,
                                  description="Share of a roster assumed fake; the noise is raised for it.")

    @model_validator(mode="before")
    @classmethod
    def _default_rounds(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("rounds") is None:
            kind = data.get("kind")
            if kind not in DEFAULT_ROUNDS:
                raise ValueError(f"unknown session kind {kind!r}; known: {sorted(DEFAULT_ROUNDS)}")
            data = {**data, "rounds": DEFAULT_ROUNDS[kind]}
        return data

    @model_validator(mode="after")
    def _kind_accepts(self) -> SessionParams:
        if self.kind not in DEFAULT_ROUNDS:
            raise ValueError(f"unknown session kind {self.kind!r}; known: {sorted(DEFAULT_ROUNDS)}")
        from continuum_mcp.federation.learning._registry import get_kind
        get_kind(self.kind).check_params(self)
        return self

    @classmethod
    def build(cls, **fields: Any) -> SessionParams:
        """Validated parameters, or ``InvalidInput`` naming the field and the rule it breaks."""
        try:
            return cls.model_validate({k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:
            raise InvalidInput("invalid session parameters: " + "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'session'}: {e['msg']}" for e in exc.errors())) from exc

    @property
    def mu_per_round(self) -> float:
        return 1.0 / self.noise_multiplier

    def round_spend(self) -> PrivacySpend:
        """What one round (one secure-aggregation attempt whose masked input was sent) costs a
        participant, for its privacy ledger: the Gaussian at this noise multiplier."""
        return PrivacySpend.gaussian(self.noise_multiplier)


class SessionGuarantee(BaseModel):
    """The user-level (epsilon, delta) of a whole session and the conditions it rests on."""

    model_config = ConfigDict(frozen=True)

    kind: str
    epsilon: float = Field(description="Of all rounds together, at delta, for one participant.")
    delta: float
    rounds: int
    noise_multiplier: float
    clip: float
    local_steps: int
    min_participants: int
    mu: float = Field(description="Gaussian-DP mu of the whole session: sqrt(rounds) / noise_multiplier.")
    epsilon_per_round: float
    sybil_fraction: float
    min_survivors: int = Field(description="t = ceil(2n/3) at n = min_participants: fewer survivors abort.")
    honest_survivors: int = Field(description="The fewest honest survivors, who alone add the whole noise.")
    client_noise_std: float = Field(description="Each client's noise std at n = min_participants, per unit "
                                                "of the quantised clip: multiplier x sybil factor / sqrt(t).")
    statement: str

    def exceeds(self, cap_epsilon: float) -> str | None:
        """Why this guarantee is over a per-session cap (with the numbers), or None if it fits."""
        if self.epsilon <= cap_epsilon + 1e-9:
            return None
        return (f"the session's guarantee is epsilon {self.epsilon:.3f} at delta {self.delta:g} "
                f"({self.rounds} rounds at noise multiplier {self.noise_multiplier:g}, clip {self.clip:g}), "
                f"over the federation's per-session cap of epsilon {cap_epsilon:g}")


def session_guarantee(params: SessionParams) -> SessionGuarantee:
    """The guarantee of ``params``, computed by the project's accountant (exact GDP composition).

    The discrete noise is accounted as the continuous Gaussian of the same std, as for releases
    (docs/privacy.md): the integer noise is in fixed-point units, where each client's std is in
    the hundreds or more, and :func:`session_discrete_gap` bounds the difference."""
    p = params
    mu = compose_gdp([p.mu_per_round] * p.rounds)
    eps = gdp_epsilon(mu, p.delta)
    t = threshold_for(p.min_participants)
    h = honest_survivors(p.min_participants, t, p.sybil_fraction)
    factor = math.sqrt(t / h)
    statement = (
        f"Each of the {p.rounds} round(s) releases the sum of at least {t} participants' vectors, each "
        f"clipped to L2 norm {p.clip:g}, plus discrete Gaussian noise of std {p.noise_multiplier:g} x the clip "
        f"that the honest survivors alone add (up to {p.sybil_fraction:.0%} of the roster may be fake identities "
        f"run by the coordinator). Whatever one member contributes in all rounds together, anyone who sees every "
        f"result learns about it at most what (epsilon {eps:.2f}, delta {p.delta:g})-differential privacy allows. "
        f"A member who opts out after k rounds has spent k of them.")
    return SessionGuarantee(
        kind=p.kind, epsilon=eps, delta=p.delta, rounds=p.rounds, noise_multiplier=p.noise_multiplier,
        clip=p.clip, local_steps=p.local_steps, min_participants=p.min_participants, mu=mu,
        epsilon_per_round=gdp_epsilon(p.mu_per_round, p.delta), sybil_fraction=p.sybil_fraction,
        min_survivors=t, honest_survivors=h, client_noise_std=p.noise_multiplier * factor / math.sqrt(t),
        statement=statement)


def session_discrete_tau(secagg: SecAggParams) -> float:
    """Kairouz, Liu & Steinke 2021 (Thm. 1): how far the sum of n clients' N_Z(0, sigma_c^2) is from
    one discrete Gaussian, tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma_c^2 k / (k+1)); the sum's
    concentrated-DP bound exceeds the continuous one by terms of order tau x dim. sigma_c is each
    client's integer std (fixed-point units), so tau is astronomically small for any usable scale."""
    s2 = secagg.client_sigma_scaled ** 2
    return 10.0 * math.fsum(math.exp(-2.0 * math.pi ** 2 * s2 * k / (k + 1)) for k in range(1, secagg.n))


def session_round_params(session_label: str, round_id: int, attempt: int, roster: list[str], dim: int,
                         params: SessionParams) -> SecAggParams:
    """The secure-aggregation parameters of one session round, for the coordinator to publish and
    every client to check (the calibration of ``participant.round_params`` with the session's clip
    and multiplier): clip = ``params.clip``, noise = multiplier x quantised clip x sybil factor,
    t = ceil(2n/3), the largest safe fixed-point scale. ``session_label`` names the session
    (e.g. ``<federation>/s<session id>``); the secagg session id is ``<label>/r<round>/a<attempt>``.
    Refuses a roster below ``min_participants`` and a scale so coarse that the discrete gap shows."""
    members = sorted(set(roster))
    if len(members) < params.min_participants:
        raise InvalidInput(f"a session round needs at least {params.min_participants} participants, "
                           f"the roster has {len(members)}")
    session = f"{session_label}/r{round_id}/a{attempt}"
    factor = sybil_noise_factor(len(members), params.sybil_fraction)
    probe = SecAggParams.create(session, round_id, members, dim, params.clip, params.noise_multiplier * params.clip * factor)
    out = SecAggParams.create(session, round_id, members, dim, params.clip,
                              params.noise_multiplier * probe.quantised_sensitivity * factor, frac_bits=probe.frac_bits)
    if session_discrete_tau(out) > MAX_DISCRETE_TAU:
        raise InvalidInput(f"fixed-point scale 2^{out.frac_bits} is too coarse for the discrete noise to count "
                           "as Gaussian; use fewer participants or a smaller layout")
    return out


def session_expectations(session_label: str, dim: int, params: SessionParams) -> RoundExpectations:
    """What a client checks a session round against with ``participant.check_params``: the
    session's clip and multiplier over a single block of ``dim`` coordinates."""
    return RoundExpectations(federation_id=session_label, slots=1, dim=dim, max_clip_norm=params.clip,
                             noise_multiplier=params.noise_multiplier, sybil_fraction=params.sybil_fraction)


def check_session_round(state: RoundState, instance_id: str, session_label: str, dim: int,
                        params: SessionParams) -> SecAggParams:
    """A client's check of a session round's published parameters before it sends anything:
    everything ``participant.check_params`` checks for release rounds, plus the session's floor of
    participants. Raises ``CryptoError``."""
    secagg = check_params(state, instance_id, session_expectations(session_label, dim, params))
    if secagg.n < params.min_participants:
        raise CryptoError(f"the session round's roster has {secagg.n} members; the session needs at least "
                          f"{params.min_participants}: not taking part")
    return secagg
