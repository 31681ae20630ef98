"""Public parameters of one aggregation and the fixed-point ring they imply.

Every party derives the same :class:`SecAggParams`; its digest binds keys and associated data, so a
party with different parameters cannot take part. Quantisation lives here because its scale and
clip are parameters: the L2 clip is :func:`continuum_mcp.privacy.dp.clip_l2`, the one clipping
function of the project.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from continuum_mcp.crypto.signing import canonical_json
from continuum_mcp.errors import CryptoError, InvalidInput
from continuum_mcp.privacy.dp import clip_l2
from continuum_mcp.secagg.guarantees import SparseDesign, choose_graph, guarantee

MODULUS_BITS = 32
MODULUS = 2**MODULUS_BITS
# Tail parameter of the noise-norm bound: P(||noise|| > bound) <= exp(-40) ~ 4e-18.
_NOISE_TAIL_X = 40.0


def threshold_for(n: int) -> int:
    """t = ceil(2n/3): tolerates up to a third of the roster dropping out."""
    return -(-2 * n // 3)


# --------------------------------------------------------------------------- parameters
class SecAggParams(BaseModel):
    """Public parameters of one aggregation, identical for the server and every client.

    Their digest is bound into every key derivation and associated data, so parties that disagree
    on any parameter cannot complete the protocol together.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: str = Field(min_length=1, max_length=128)
    round_id: int = Field(ge=0)
    roster: list[str] = Field(description="sorted instance ids invited to this aggregation")
    dim: int = Field(ge=1, le=1 << 24)
    clip_norm: float = Field(gt=0, description="L2 bound of one client's float input")
    noise_sigma: float = Field(ge=0, description="target noise std of the float sum (0 = none)")
    frac_bits: int = Field(ge=0, le=30, description="fixed-point scale is 2^frac_bits")
    threshold: int = Field(ge=1, description="Shamir threshold among a member's share holders")
    # SecAgg+ only; absent (and left out of the digest and the wire form) for the complete graph,
    # so Bonawitz parameters, digests and messages are exactly what they were.
    neighbours: int | None = Field(default=None, ge=2, exclude_if=lambda v: v is None,
                                   description="k of the Harary graph (even); None = complete")
    min_survivors: int | None = Field(default=None, ge=1, exclude_if=lambda v: v is None,
                                      description="global floor of |U1|, |U2|, |U3|; None = threshold")

    @model_validator(mode="after")
    def _consistent(self) -> SecAggParams:
        holders = self.n if self.neighbours is None else min(self.n, self.neighbours + 1)
        if self.neighbours is not None and self.neighbours % 2:
            raise ValueError("the Harary graph needs an even number of neighbours")
        if self.threshold > holders:
            raise ValueError("threshold exceeds the number of share holders")
        if (self.min_survivors is None) != (self.neighbours is None):
            raise ValueError("neighbours and min_survivors go together (SecAgg+)")
        if self.min_survivors is not None and not self.threshold <= self.min_survivors <= self.n:
            raise ValueError("min_survivors must lie between the threshold and the roster size")
        return self

    @classmethod
    def create(
        cls,
        session_id: str,
        round_id: int,
        roster: Sequence[str],
        dim: int,
        clip_norm: float,
        noise_sigma: float,
        frac_bits: int | None = None,
        sparse: SparseDesign | None = None,
    ) -> SecAggParams:
        """Parameters with t = ceil(2n/3); ``frac_bits`` defaults to the largest safe scale.

        With ``sparse`` (SecAgg+), a roster of at least ``sparse.min_roster`` members gets the
        (k, t) of :func:`~continuum_mcp.secagg.guarantees.choose_graph` and the global floor
        ceil((1 - dropout) n); smaller rosters, or designs no sparse graph meets, keep the complete
        graph. Raises ``InvalidInput`` if the sum could wrap around modulo 2^32 (too many clients or
        too fine a scale for the clip norm and noise).
        """
        members = sorted(set(roster))
        if len(members) != len(roster):
            raise InvalidInput("roster has duplicate instance ids")
        if len(members) < 3:
            raise InvalidInput("secure aggregation needs at least 3 participants")
        if not (math.isfinite(clip_norm) and math.isfinite(noise_sigma)):
            raise InvalidInput("clip norm and noise sigma must be finite")
        base: dict[str, Any] = dict(session_id=session_id, round_id=round_id, roster=members, dim=dim,
                                    clip_norm=clip_norm, noise_sigma=noise_sigma,
                                    threshold=threshold_for(len(members)))
        if sparse is not None and len(members) >= sparse.min_roster:
            choice = (choose_graph(len(members), sparse) if sparse.neighbours is None else
                      guarantee(len(members), sparse.neighbours, sparse.threshold or 1, sparse))
            if choice is not None and choice.neighbours < len(members) - 1:
                base.update(neighbours=choice.neighbours, threshold=choice.threshold,
                            min_survivors=math.ceil((1 - sparse.dropout) * len(members) - 1e-9))
        try:
            if frac_bits is not None:
                params = cls(**base, frac_bits=frac_bits)
                params.check_no_overflow()
                return params
            for bits in range(24, -1, -1):
                params = cls(**base, frac_bits=bits)
                if params.max_abs_coordinate() < 2**31:
                    return params
        except ValidationError as exc:
            raise InvalidInput(f"invalid secure aggregation parameters: {exc}") from exc
        raise InvalidInput("no fixed-point scale avoids overflow modulo 2^32 for these parameters")

    @property
    def n(self) -> int:
        return len(self.roster)

    @property
    def survivor_floor(self) -> int:
        """Fewest members U1, U2 and U3 may have (the noise divisor): t for the complete graph."""
        return self.threshold if self.min_survivors is None else self.min_survivors

    @property
    def sparse(self) -> bool:
        """True for SecAgg+ parameters (a Harary graph of degree ``neighbours``)."""
        return self.neighbours is not None

    def require_design(self, design: SparseDesign | None) -> None:
        """A participant's check that the server chose the graph the federation's design implies
        (a server must not pick a small k or t): raises ``CryptoError`` otherwise."""
        try:
            expected = SecAggParams.create(self.session_id, self.round_id, self.roster, self.dim,
                                           self.clip_norm, self.noise_sigma, self.frac_bits, design)
        except InvalidInput as exc:
            raise CryptoError(f"the round's parameters do not fit the design: {exc.message}") from exc
        if (self.neighbours, self.threshold, self.min_survivors) != (
                expected.neighbours, expected.threshold, expected.min_survivors):
            raise CryptoError("the round's secure-aggregation graph is not the one the design implies")

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    @property
    def client_sigma_scaled(self) -> float:
        """Discrete Gaussian sigma each client adds, in fixed-point units: target / sqrt(floor)."""
        return self.noise_sigma * self.scale / math.sqrt(self.survivor_floor)

    @property
    def quantised_l2_bound(self) -> float:
        """Bound on ||q|| of one quantised input: clip*scale plus sqrt(d) from stochastic rounding."""
        return self.clip_norm * self.scale + math.sqrt(self.dim)

    @property
    def quantised_sensitivity(self) -> float:
        """L2 sensitivity of the released float sum after quantisation (>= clip_norm).

        A caller calibrating DP noise should use this, not ``clip_norm``:
        ``noise_sigma = sigma_per_unit_sensitivity * quantised_sensitivity``.
        """
        return self.quantised_l2_bound / self.scale

    def noise_l2_bound(self, contributors: int) -> float:
        """High-probability bound on the L2 norm of the summed noise, in fixed-point units.

        Laurent-Massart chi-square tail, valid for sigma-subgaussian coordinates (the discrete
        Gaussian is, CKS20): failure probability <= exp(-40).
        """
        sigma = math.sqrt(contributors) * self.client_sigma_scaled
        d, x = self.dim, _NOISE_TAIL_X
        return sigma * math.sqrt(d + 2 * math.sqrt(d * x) + 2 * x)

    def sum_l2_bound(self, contributors: int) -> float:
        """Largest L2 norm an honest unmasked sum of ``contributors`` clients can have."""
        return contributors * self.quantised_l2_bound + self.noise_l2_bound(contributors)

    def max_abs_coordinate(self) -> float:
        """Worst-case |coordinate| of the integer sum with all n clients (must stay below 2^31)."""
        noise = 12 * math.sqrt(self.n) * self.client_sigma_scaled
        return self.n * (self.clip_norm * self.scale + 1) + noise

    def check_no_overflow(self) -> None:
        if self.max_abs_coordinate() >= 2**31:
            raise InvalidInput("the sum could wrap around modulo 2^32: lower frac_bits")

    @cached_property
    def _roster_positions(self) -> dict[str, int]:
        return {member: k for k, member in enumerate(self.roster)}

    @cached_property
    def _digest(self) -> str:
        data = self.model_dump(mode="json")
        data["clip_norm"] = repr(float(self.clip_norm))
        data["noise_sigma"] = repr(float(self.noise_sigma))
        return hashlib.sha256(canonical_json(data)).hexdigest()

    def digest(self) -> str:
        """SHA-256 of the canonical parameters (floats written with repr, exactly reproducible)."""
        return self._digest

    def path(self, kind: str) -> str:
        """The path signed in a client message of this session and round."""
        return f"/secagg/{self.session_id}/{self.round_id}/{kind}"

    def holder_index(self, instance_id: str) -> int:
        """Shamir evaluation point of a roster member (1-based position in the sorted roster)."""
        position = self._roster_positions.get(instance_id)
        if position is None:
            raise CryptoError(f"{instance_id} is not in this aggregation's roster")
        return position + 1



def _uniform01(n: int) -> np.ndarray:
    """Uniform [0, 1) doubles from the OS CSPRNG (53-bit resolution)."""
    raw = np.frombuffer(os.urandom(8 * n), dtype="<u8")
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


def quantise(vector: np.ndarray, params: SecAggParams) -> np.ndarray:
    """L2-clip to ``clip_norm``, scale by 2^frac_bits, stochastic rounding (unbiased) to int64."""
    x = np.asarray(vector, dtype=np.float64)
    if x.shape != (params.dim,):
        raise InvalidInput(f"input must have shape ({params.dim},), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InvalidInput("input has NaN or infinite values")
    x = clip_l2(x, params.clip_norm)
    scaled = x * params.scale
    floor = np.floor(scaled)
    return (floor + (_uniform01(params.dim) < (scaled - floor))).astype(np.int64)


def _to_ring(values: np.ndarray) -> np.ndarray:
    return (values % MODULUS).astype(np.uint32)


def _from_ring(values: np.ndarray) -> np.ndarray:
    signed = values.astype(np.int64)
    signed[signed >= 2**31] -= MODULUS
    return signed
