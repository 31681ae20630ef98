"""Deprecated import path, kept so code importing ``federation.client._client`` keeps working
while the tree moves to ``continuum_mcp.federation.client`` (the package face). Re-exports only."""

from continuum_mcp.federation.client import *  # noqa: F401,F403
from continuum_mcp.federation.client import __all__ as _public
from continuum_mcp.federation.client._query import pad_with_decoys as _pad_with_decoys  # noqa: F401
from continuum_mcp.federation.protocol import SECAGG_PHASES  # noqa: F401
from continuum_mcp.federation.submission import PlannedPattern as _Planned  # noqa: F401
from continuum_mcp.federation.submission import pattern_text as _pattern_text  # noqa: F401

__all__ = [*_public, "SECAGG_PHASES"]
