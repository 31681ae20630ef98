"""Preview: exactly what a contribution would send, in plain text, before anything leaves.

The CLI (``continuum-mcp patterns --preview``) and the MCP tool are thin adapters over
:func:`preview_patterns`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from pydantic import BaseModel, Field

from continuum_mcp.errors import InvalidInput
from continuum_mcp.privacy.generalize import Generalizer, Pattern, select_memories
from continuum_mcp.memory.models import Memory


class PatternPreview(BaseModel):
    """Patterns and phrases that would leave the machine, and which memories they came from."""

    patterns: list[Pattern] = Field(description="What would be sent (embeddings are not dumped).")
    min_confidence: float
    considered_memory_ids: list[int] = Field(description="Memories that took part.")
    private_memory_ids: list[int] = Field(description="Held back: tagged 'private'.")
    excluded_memory_ids: list[int] = Field(description="Held back: excluded by the user.")
    below_confidence: int = Field(description="Patterns dropped by min_confidence.")

    def to_text(self) -> str:
        """Plain text for humans: every statement and phrase that would be shared."""
        lines = [
            f"{len(self.patterns)} pattern(s) would be shared "
            f"(min confidence {self.min_confidence:.2f}; {self.below_confidence} below it not shared).",
            f"Memories considered: {len(self.considered_memory_ids)}; "
            f"held back as private: {len(self.private_memory_ids)}"
            + (f" (ids {_ids(self.private_memory_ids)})" if self.private_memory_ids else "")
            + f"; excluded by you: {len(self.excluded_memory_ids)}"
            + (f" (ids {_ids(self.excluded_memory_ids)})" if self.excluded_memory_ids else "") + ".",
        ]
        for n, p in enumerate(self.patterns, 1):
            lines.append("")
            lines.append(f"[{n}] pattern {p.pattern_id}  confidence {p.confidence:.2f}  "
                         f"support {p.support}  cohesion {p.cohesion:.2f}")
            lines.append(f"    statement: {p.statement}")
            lines.append(f"    phrases:   {', '.join(p.phrases) if p.phrases else '(none)'}")
            lines.append(f"    from memories: {_ids(p.source_memory_ids)}")
        if not self.patterns:
            lines.append("")
            lines.append("Nothing would be shared.")
        return "\n".join(lines)


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids)


def preview_patterns(memories: Sequence[Memory], generalizer: Generalizer, *, min_confidence: float = 0.0,
                     exclude: Collection[int] = ()) -> PatternPreview:
    """Generalise ``memories`` exactly as a contribution would and report the result."""
    if not 0.0 <= min_confidence <= 1.0:
        raise InvalidInput("min_confidence must be in [0, 1]")
    selection = select_memories(memories, exclude)
    patterns = generalizer.generalize(selection.included)
    kept = [p for p in patterns if p.confidence >= min_confidence]
    return PatternPreview(
        patterns=kept,
        min_confidence=min_confidence,
        considered_memory_ids=sorted(m.id for m in selection.included),
        private_memory_ids=selection.private_ids,
        excluded_memory_ids=selection.excluded_ids,
        below_confidence=len(patterns) - len(kept),
    )
