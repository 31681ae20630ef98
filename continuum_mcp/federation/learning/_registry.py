"""The registered session kinds: one immutable table, looked up by name (no global mutable state).

A later kind is one more entry here; the protocol carries only its name and its vector."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.learning._kind import SessionKind
from continuum_mcp.federation.learning.codebook_refinement import CodebookRefinement
from continuum_mcp.federation.learning.usage_statistics import UsageStatistics

SESSION_KINDS: Mapping[str, SessionKind] = MappingProxyType(
    {k.name: k for k in (CodebookRefinement(), UsageStatistics())})


def get_kind(name: str) -> SessionKind:
    """The kind called ``name``, or ``InvalidInput`` naming the known ones."""
    kind = SESSION_KINDS.get(name)
    if kind is None:
        raise InvalidInput(f"unknown session kind {name!r}; known: {sorted(SESSION_KINDS)}")
    return kind
