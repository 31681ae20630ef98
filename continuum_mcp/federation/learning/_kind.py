"""The session-kind plug-in: what a kind computes on each instance and what the sum becomes.

Why a plug-in: the protocol only carries a kind's name, its public context and one clipped
vector per participant per round (secure aggregation with distributed discrete Gaussian noise),
so a later kind (e.g. DP-FedAvg of a small re-ranking model) is a new class here, not a new wire
format. A kind says, in order:

1. ``data_touched``: in plain words, what it reads on each instance (shown before opt-in);
2. ``layout(context)``: the named segments of the vector, public and the same for everybody;
3. ``sensitivity(params)``: a participant's L2 bound per round (the session's clip: every kind
   bounds its whole vector, so the guarantee of :func:`session_guarantee` holds);
4. ``local_vector(inputs, context, params)``: the instance's float vector, L2 norm <= clip; the
   secure-aggregation client quantises it (``secagg.params.quantise``: clip, fixed point,
   stochastic rounding) exactly as it does release-round inputs;
5. ``postprocess(noisy_sum, noise_std, context, params)``: the released sum (plus its noisy
   participant count, a coordinate of every layout) into a JSON-able result; post-processing of
   a DP output costs no privacy;
6. ``next_context`` / ``final_result``: what the next round starts from and what the session
   publishes after its last round.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from continuum_mcp.errors import InvalidInput
from continuum_mcp.privacy.codebook import Codebook

#: Every layout ends with one "participants" coordinate: each participant puts
#: sqrt(PARTICIPANT_SHARE) x clip there, so the released sum carries a noisy participant count
#: (noise std = noise multiplier / sqrt(share), 4.9 at 1.1) for the session report.
PARTICIPANT_SHARE = 0.05


class SessionContext(BaseModel):
    """The public state a round's local computation and post-processing read (the same for all
    participants): the codebook the round refines, for kinds that use one."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    codebook: Codebook | None = None

    def require_codebook(self) -> Codebook:
        if self.codebook is None:
            raise InvalidInput("this session kind needs a codebook in its context")
        return self.codebook


class VectorLayout(BaseModel):
    """Named consecutive segments of a kind's vector; the last is always ``participants`` (1)."""

    model_config = ConfigDict(frozen=True)

    segments: tuple[tuple[str, int], ...]

    @property
    def dim(self) -> int:
        return sum(size for _, size in self.segments)

    def spans(self) -> Iterator[tuple[str, slice]]:
        start = 0
        for name, size in self.segments:
            yield name, slice(start, start + size)
            start += size

    def split(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """The vector's segments by name (views), after checking its length."""
        v = np.asarray(vector, dtype=np.float64)
        if v.shape != (self.dim,):
            raise InvalidInput(f"a vector of this layout has {self.dim} coordinates, got shape {v.shape}")
        return {name: v[sl] for name, sl in self.spans()}


class SessionResult(BaseModel):
    """What every kind's result reports beside its payload."""

    kind: str
    noisy_participants: float = Field(description="The round's participant count plus DP noise.")
    participants_std: float = Field(description="Std of that noise.")


class SessionKind(ABC):
    """A learning-session kind (see the module docstring); stateless, one instance per kind."""

    name: ClassVar[str]
    default_rounds: ClassVar[int]
    max_local_steps: ClassVar[int] = 1
    data_touched: ClassVar[str]
    result_model: ClassVar[type[SessionResult]]

    @abstractmethod
    def payload_segments(self, context: SessionContext) -> tuple[tuple[str, int], ...]:
        """The kind's own segments (the participants coordinate is appended by :meth:`layout`)."""

    def layout(self, context: SessionContext) -> VectorLayout:
        return VectorLayout(segments=(*self.payload_segments(context), ("participants", 1)))

    def check_params(self, params: Any) -> None:
        """Refuse parameters this kind cannot run (raises ``ValueError`` inside validation)."""
        if params.local_steps > self.max_local_steps:
            raise ValueError(f"{self.name} runs {self.max_local_steps} local step(s) per round, "
                             f"not {params.local_steps}")

    def sensitivity(self, params: Any) -> float:
        """A participant's L2 bound per round: the whole vector is kept within the session's clip."""
        return float(params.clip)

    @abstractmethod
    def payload(self, inputs: Any, context: SessionContext, params: Any) -> dict[str, np.ndarray]:
        """The kind's segments for one instance, with L2 norm at most sqrt(1 - PARTICIPANT_SHARE) x clip."""

    def local_vector(self, inputs: Any, context: SessionContext, params: Any) -> np.ndarray:
        """The instance's vector for one round: its payload plus the participants coordinate."""
        layout = self.layout(context)
        parts = {**self.payload(inputs, context, params),
                 "participants": np.array([math.sqrt(PARTICIPANT_SHARE) * params.clip])}
        vec = np.concatenate([np.asarray(parts[name], dtype=np.float64).reshape(-1) for name, _ in layout.segments])
        if vec.shape != (layout.dim,):
            raise InvalidInput(f"{self.name} built {vec.size} coordinates, its layout has {layout.dim}")
        norm = float(np.linalg.norm(vec))
        if norm > params.clip * (1 + 1e-9):  # a kind bug, never the user's data
            raise InvalidInput(f"{self.name} built a vector of norm {norm:.6g} above the clip {params.clip:g}")
        return vec

    def participants(self, segments: Mapping[str, np.ndarray], noise_std: float, params: Any) -> tuple[float, float]:
        """(noisy participant count, its std) from the released participants coordinate."""
        unit = math.sqrt(PARTICIPANT_SHARE) * params.clip
        return float(segments["participants"][0]) / unit, noise_std / unit

    @abstractmethod
    def postprocess(self, noisy_sum: np.ndarray, noise_std: float, context: SessionContext,
                    params: Any) -> SessionResult:
        """The released round sum (float units; ``noise_std`` its per-coordinate noise std, the
        secure aggregation's ``AggregateResult.noise_sigma``) as this kind's result."""

    def next_context(self, context: SessionContext, result: SessionResult) -> SessionContext:
        """What the next round reads (by default: the same context)."""
        return context

    def final_result(self, results: Sequence[SessionResult]) -> SessionResult:
        """What the session publishes after its rounds (by default: the last round's result)."""
        if not results:
            raise InvalidInput("a session without released rounds has no result")
        return results[-1]
