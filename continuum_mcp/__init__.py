"""continuum-mcp: private long-term memory for AI assistants, over MCP.

Public names only. ``Continuum`` (the core API) is loaded on first access, so that importing the
package, which every process does before its MCP handshake, stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from continuum_mcp.config import Settings
from continuum_mcp.errors import (
    AggregationAborted, BadInvite, Conflict, ContinuumError, CoordinatorUnavailable, CryptoError, FederationError,
    Forbidden, InsufficientCredits, InvalidInput, ModelMismatch, NotAdmitted, NotFound, NotJoined,
    PrivacyBudgetExceeded, RateLimited, ReplayError, StoreCorrupt, TooLarge, Unauthenticated, VerificationRefused,
    WrongPhase,
)

if TYPE_CHECKING:
    from continuum_mcp.app import Continuum

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Continuum":
        from continuum_mcp.app import Continuum

        return Continuum
    raise AttributeError(f"module 'continuum_mcp' has no attribute {name!r}")


__all__ = [
    "AggregationAborted", "BadInvite", "Conflict", "Continuum", "ContinuumError", "CoordinatorUnavailable",
    "CryptoError", "FederationError", "Forbidden", "InsufficientCredits", "InvalidInput", "ModelMismatch",
    "NotAdmitted", "NotFound", "NotJoined", "PrivacyBudgetExceeded", "RateLimited", "ReplayError", "Settings",
    "StoreCorrupt", "TooLarge", "Unauthenticated", "VerificationRefused", "WrongPhase", "__version__",
]
