"""Typed errors of the core. Adapters (MCP, CLI, HTTP) map them to protocol errors.

Every error carries a stable machine-readable ``code`` and a message written for the person or
model that has to act on it.
"""

from __future__ import annotations


class ContinuumError(Exception):
    """Base of every error the core raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ContinuumError):
    """An argument is malformed, empty, too large or of the wrong type."""

    code = "invalid_input"


class NotFound(ContinuumError):
    """The named object (memory, pattern, round...) does not exist."""

    code = "not_found"


class ModelMismatch(ContinuumError):
    """The store was built with another embedding model than the one configured."""

    code = "model_mismatch"


class StoreCorrupt(ContinuumError):
    """The store cannot be opened safely; nothing was changed."""

    code = "store_corrupt"


class PrivacyBudgetExceeded(ContinuumError):
    """A contribution would spend more privacy budget than the rolling window allows."""

    code = "privacy_budget_exceeded"


class CryptoError(ContinuumError):
    """A signature, ciphertext, share or message failed verification."""

    code = "crypto_error"


class ReplayError(CryptoError):
    """A signed message was seen before or is outside the replay window."""

    code = "replay"


class AggregationAborted(ContinuumError):
    """Secure aggregation cannot complete (too few survivors, bad sum)."""

    code = "aggregation_aborted"
