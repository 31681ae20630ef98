"""Codebook refinement: DP federated k-means, one Lloyd step per round (DESIGN.md section 4).

Each participant assigns its pattern embeddings (the embeddings of its generalised, scrubbed
patterns, as a contribution computes them) to the nearest codeword of the round's codebook and
contributes, per codeword, the sum of those unit embeddings and their count. The split: each
pattern adds its unit embedding to its codeword's sum block and ``COUNT_WEIGHT`` = 1/3 to its
count, so when patterns are spread over codewords the counts take a tenth of the norm^2
(w^2 / (1 + w^2)); sums and counts together are then scaled to sqrt(1 - PARTICIPANT_SHARE) x clip
(one pattern alone already exceeds it), so the whole vector, with the participants coordinate,
has L2 norm exactly the clip. Scaling sums and counts by the same factor keeps each codeword's
sum / count a (participant-weighted) mean.

Post-processing: a codeword moves to the direction of its noisy sum only where its noisy count
C is large enough that an aligned cluster of that weight would give a mean within cosine
``TARGET_COSINE`` = 0.9 of the truth (C / sqrt(C^2 + d sigma^2) >= 0.9, plus two count-noise
stds of margin); elsewhere the old codeword stays. The result is a new codebook version whose id
is derived from its content (:func:`continuum_mcp.privacy.codebook.codebook_version_id`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field

from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.learning._kind import PARTICIPANT_SHARE, SessionContext, SessionKind, SessionResult
from continuum_mcp.memory.models import Memory
from continuum_mcp.privacy.codebook import Codebook
from continuum_mcp.privacy.generalize import Generalizer
from continuum_mcp.privacy.preview import preview_patterns

#: a pattern's weight in its codeword's count, relative to its unit embedding in the sum
COUNT_WEIGHT = 1.0 / 3.0
#: a codeword moves only when its noisy weight promises a mean this close (cosine) to the truth
TARGET_COSINE = 0.9


class CodebookInputs(BaseModel):
    """An instance's local input: the unit embeddings of its generalised patterns (local only)."""

    embeddings: list[list[float]] = Field(description="Pattern embeddings of scrubbed text; never sent.")


def pattern_embeddings(memories: Sequence[Memory], generalizer: Generalizer, *,
                       min_confidence: float = 0.7) -> CodebookInputs:
    """The embeddings of every pattern a contribution would consider (private memories never
    take part; no slot or level cap: refinement wants all of them)."""
    preview = preview_patterns(memories, generalizer, min_confidence=min_confidence)
    return CodebookInputs(embeddings=[p.embedding for p in preview.patterns if p.embedding])


class CodebookRefinementResult(SessionResult):
    """A round's (or the session's) new codebook and how it was obtained."""

    version: str = Field(description="Content-derived id of the new codebook.")
    parent_version: str
    vectors_b64: str = Field(description="The K x d float32 unit codewords, little-endian, base64.")
    slots: int
    dim: int
    updated_slots: list[int]
    noisy_counts: list[float] = Field(description="Per codeword: noisy pattern weight (participant-scaled).")
    count_std: float
    min_count: float = Field(description="Noisy count a codeword needed to move.")

    def codebook(self, parent: Codebook | None = None) -> Codebook:
        """The new codebook, its version recomputed from the vectors and checked. When no codeword
        moved the result names the parent version, and ``parent`` (the round's codebook) is
        returned once its vectors are checked equal."""
        cb = Codebook.from_b64(self.vectors_b64, self.slots, self.dim, parent=self.parent_version)
        if self.version == self.parent_version and parent is not None and parent.version == self.version \
                and np.array_equal(parent.vectors, cb.vectors):
            return parent
        if cb.version != self.version:
            raise InvalidInput(f"codebook vectors hash to {cb.version}, the result says {self.version}")
        return cb


class CodebookRefinement(SessionKind):
    name: ClassVar[str] = "codebook_refinement"
    # 3 Lloyd steps: v0 is already a k-means of public text, so the first steps move it most, and
    # every round adds to mu in quadrature (3 rounds at multiplier 1.1 cost sqrt(3) x one round).
    default_rounds: ClassVar[int] = 3
    result_model: ClassVar[type[SessionResult]] = CodebookRefinementResult
    data_touched: ClassVar[str] = (
        "The embeddings of this instance's generalised patterns: numeric vectors computed on this machine from "
        "scrubbed, clustered memory statements (memories tagged 'private' never take part). Each is assigned to its "
        "nearest codeword; what leaves, inside secure aggregation and summed with every other participant's with "
        "noise, is per codeword the sum of those embeddings and their count, scaled to the session's clip, plus a "
        "1 for 'took part'. No text, no single embedding and no memory id leaves.")

    def payload_segments(self, context: SessionContext) -> tuple[tuple[str, int], ...]:
        cb = context.require_codebook()
        return (("sums", cb.slots * cb.dim), ("counts", cb.slots))

    def payload(self, inputs: Any, context: SessionContext, params: Any) -> dict[str, np.ndarray]:
        cb = context.require_codebook()
        data = inputs if isinstance(inputs, CodebookInputs) else CodebookInputs.model_validate(inputs)
        sums = np.zeros((cb.slots, cb.dim), dtype=np.float64)
        counts = np.zeros(cb.slots, dtype=np.float64)
        if data.embeddings:
            e = np.asarray(data.embeddings, dtype=np.float64)
            if e.ndim != 2 or e.shape[1] != cb.dim or not np.all(np.isfinite(e)):
                raise InvalidInput(f"pattern embeddings must be finite vectors of {cb.dim} dimensions")
            e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            slots = cb.nearest(e.astype(np.float32))
            np.add.at(sums, slots, e)
            counts = np.bincount(slots, minlength=cb.slots).astype(np.float64) * COUNT_WEIGHT
            norm = math.sqrt(float(np.sum(sums * sums)) + float(np.sum(counts * counts)))
            scale = math.sqrt(1.0 - PARTICIPANT_SHARE) * params.clip / norm
            sums *= scale
            counts *= scale
        return {"sums": sums.reshape(-1), "counts": counts}

    @staticmethod
    def min_count(noise_std: float, dim: int) -> float:
        """The noisy count a codeword needs to move (see the module docstring)."""
        c = TARGET_COSINE
        return c * math.sqrt(dim) * noise_std / math.sqrt(1.0 - c * c) + 2.0 * noise_std / COUNT_WEIGHT

    def postprocess(self, noisy_sum: np.ndarray, noise_std: float, context: SessionContext,
                    params: Any) -> CodebookRefinementResult:
        cb = context.require_codebook()
        seg = self.layout(context).split(noisy_sum)
        sums = seg["sums"].reshape(cb.slots, cb.dim)
        counts = seg["counts"] / COUNT_WEIGHT
        floor = self.min_count(noise_std, cb.dim)
        vectors = np.array(cb.vectors, dtype=np.float64)
        norms = np.linalg.norm(sums, axis=1)
        move = (counts >= floor) & (norms > 0)
        vectors[move] = sums[move] / norms[move, None]
        new = Codebook.from_vectors(vectors, parent=cb.version) if move.any() else cb
        people, people_std = self.participants(seg, noise_std, params)
        return CodebookRefinementResult(
            kind=self.name, noisy_participants=people, participants_std=people_std, version=new.version,
            parent_version=cb.version, vectors_b64=new.to_b64(), slots=cb.slots, dim=cb.dim,
            updated_slots=[int(k) for k in np.flatnonzero(move)], noisy_counts=[float(c) for c in counts],
            count_std=noise_std / COUNT_WEIGHT, min_count=floor)

    def next_context(self, context: SessionContext, result: SessionResult) -> SessionContext:
        """The next Lloyd step assigns to the codebook this round produced."""
        assert isinstance(result, CodebookRefinementResult)
        return context.model_copy(update={"codebook": result.codebook(context.codebook)})
