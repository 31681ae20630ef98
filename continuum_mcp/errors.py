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


class Forbidden(ContinuumError):
    """Authenticated, but not allowed: acting for another identity, or an admin route."""

    code = "forbidden"


class NotAdmitted(ContinuumError):
    """A valid signature from an identity that is not a member of the federation."""

    code = "not_admitted"


class BadInvite(ContinuumError):
    """The admission token is unknown, already used, or for another federation."""

    code = "bad_invite"


class Conflict(ContinuumError):
    """The request conflicts with the current state (e.g. already a member with another level)."""

    code = "conflict"


class WrongPhase(ContinuumError):
    """A round message or contribution for a round or phase that is not the current one."""

    code = "wrong_phase"


class InsufficientCredits(ContinuumError):
    """Not enough credits (after the free tier) for a query, download or priority access."""

    code = "insufficient_credits"


class RateLimited(ContinuumError):
    """Too many requests from one identity; retry after ``retry_after`` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooLarge(ContinuumError):
    """A request body exceeds the size limit."""

    code = "too_large"


class FederationError(ContinuumError):
    """A federation client operation cannot be done in the instance's current federation state."""

    code = "federation_error"


class NotJoined(FederationError):
    """The instance is not a member of any federation (join with an invite first)."""

    code = "not_joined"


class CoordinatorUnavailable(FederationError):
    """The coordinator could not be reached (after retries) or answered with a server error.

    Nothing is lost: contributions wait in the local outbox and go out on the next sync."""

    code = "coordinator_unavailable"


class Unauthenticated(CryptoError):
    """The coordinator refused the request's signature or identity headers."""

    code = "unauthenticated"


class VerificationRefused(FederationError):
    """This instance's own memory does not support the pattern, so it cannot verify it."""

    code = "verification_refused"
