"""The one error taxonomy of continuum-mcp.

The core raises these typed exceptions; adapters translate them and nothing else: the MCP server
into tool errors (``code: message``), the coordinator into an HTTP status with a JSON
``ErrorBody``, the CLI into an exit code. Each class declares its ``code``, ``http_status`` and
``exit_code`` once, here; every table elsewhere (protocol, README) is derived from this module
and checked against it by tests.
"""

from __future__ import annotations

from typing import ClassVar


class ContinuumError(Exception):
    """Base of every error the core raises on purpose."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ContinuumError):
    """An argument is malformed, empty, too large or of the wrong type."""

    code, http_status, exit_code = "invalid_input", 400, 2


class NotFound(ContinuumError):
    """The named object (memory, pattern, round...) does not exist."""

    code, http_status, exit_code = "not_found", 404, 3


class ModelMismatch(ContinuumError):
    """The store was built with another embedding model than the one configured."""

    code, http_status, exit_code = "model_mismatch", 409, 4


class StoreCorrupt(ContinuumError):
    """The store cannot be opened safely; nothing was changed."""

    code, http_status, exit_code = "store_corrupt", 500, 5


class StoreReadOnly(ContinuumError):
    """The store is healthy but cannot be written (read-only file, directory or mount)."""

    code, http_status, exit_code = "store_read_only", 503, 5


class DiskFull(ContinuumError):
    """The disk holding the store is full; the write was rolled back, nothing changed."""

    code, http_status, exit_code = "disk_full", 507, 5


class PrivacyBudgetExceeded(ContinuumError):
    """A contribution would spend more privacy budget than the rolling window allows."""

    code, http_status, exit_code = "privacy_budget_exceeded", 403, 6


class FederationError(ContinuumError):
    """A federation client operation cannot be done in the instance's current federation state."""

    code, http_status, exit_code = "federation_error", 409, 8


class CoordinatorUnavailable(FederationError):
    """The coordinator could not be reached (after retries) or answered with a server error.

    Nothing is lost: contributions wait in the local outbox and go out on the next sync."""

    code, http_status, exit_code = "coordinator_unavailable", 503, 7


class NotJoined(FederationError):
    """The instance is not a member of any federation (join with an invite first)."""

    code = "not_joined"


class VerificationRefused(FederationError):
    """This instance's own memory does not support the pattern, so it cannot verify it."""

    code = "verification_refused"


class InsufficientCredits(ContinuumError):
    """Not enough credits (after the free tier) for a query, download or priority access."""

    code, http_status, exit_code = "insufficient_credits", 402, 9


class CryptoError(ContinuumError):
    """A signature, ciphertext, share or message failed verification."""

    code, http_status, exit_code = "crypto_error", 401, 10


class Unauthenticated(CryptoError):
    """The coordinator refused the request's signature or identity headers."""

    code = "unauthenticated"


class ReplayError(CryptoError):
    """A signed message was seen before or is outside the replay window."""

    code = "replay"


class StatementDropped(CryptoError):
    """The coordinator does not publish a governance statement this member signed and posted
    (a ballot, opt-in, opt-out, halt or adoption vote): it dropped it, so its count is not the
    members'. The client refuses to take part."""

    code = "statement_dropped"


class Forbidden(ContinuumError):
    """Authenticated, but not allowed: acting for another identity, or an admin route."""

    code, http_status, exit_code = "forbidden", 403, 10


class NotAdmitted(ContinuumError):
    """A valid signature from an identity that is not a member of the federation."""

    code, http_status, exit_code = "not_admitted", 403, 10


class BadInvite(ContinuumError):
    """The admission token is unknown, already used, or for another federation."""

    code, http_status, exit_code = "bad_invite", 403, 10


class Conflict(ContinuumError):
    """The request conflicts with the current state (e.g. already a member with another level)."""

    code, http_status, exit_code = "conflict", 409, 8


class WrongPhase(ContinuumError):
    """A round message or contribution for a round or phase that is not the current one."""

    code, http_status, exit_code = "wrong_phase", 409, 8


class AggregationAborted(ContinuumError):
    """Secure aggregation cannot complete (too few survivors, bad sum)."""

    code, http_status, exit_code = "aggregation_aborted", 409, 8


class RateLimited(ContinuumError):
    """Too many requests from one identity; retry after ``retry_after`` seconds."""

    code, http_status, exit_code = "rate_limited", 429, 7

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooLarge(ContinuumError):
    """A request body exceeds the size limit."""

    code, http_status, exit_code = "too_large", 413, 2


class UpgradeRequired(ContinuumError):
    """The other side speaks another federation protocol version: upgrade the older one."""

    code, http_status, exit_code = "upgrade_required", 426, 11


def _all_subclasses(cls: type[ContinuumError]) -> list[type[ContinuumError]]:
    out: list[type[ContinuumError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


#: every error by its stable code (the wire and the MCP tool errors carry the code).
ERRORS_BY_CODE: dict[str, type[ContinuumError]] = {c.code: c for c in _all_subclasses(ContinuumError)}

#: what the CLI documents: exit code -> the codes that produce it (1 is an unexpected failure).
EXIT_CODE_MEANINGS: dict[int, str] = {
    0: "success",
    1: "unexpected failure (a bug: please report it)",
    2: "invalid input (bad argument, empty or oversized text, malformed JSON)",
    3: "not found (unknown memory id or pattern id)",
    4: "embedding model mismatch or unusable model (re-embed, or point --model-path at a model)",
    5: "store corrupt, unreadable, read-only or on a full disk (nothing was changed)",
    6: "privacy budget exhausted (the message says when budget returns)",
    7: "coordinator unavailable or rate-limited (contributions wait in the outbox; retry later)",
    8: "federation state does not allow this (not joined, wrong phase, conflict)",
    9: "not enough credits (contribute or verify patterns to earn more)",
    10: "refused: bad invite, not admitted, forbidden, or a signature/crypto check failed",
    11: "protocol version mismatch with the coordinator (upgrade continuum-mcp or the coordinator)",
}


def error_for_code(code: str, message: str) -> ContinuumError:
    """The typed exception for a wire error code (unknown codes become ``ContinuumError``)."""
    cls = ERRORS_BY_CODE.get(code)
    return cls(message) if cls is not None else ContinuumError(message)


__all__ = [
    "AggregationAborted", "BadInvite", "Conflict", "ContinuumError", "CoordinatorUnavailable", "CryptoError",
    "ERRORS_BY_CODE", "EXIT_CODE_MEANINGS", "FederationError", "Forbidden", "InsufficientCredits",
    "InvalidInput", "ModelMismatch", "NotAdmitted", "NotFound", "NotJoined", "PrivacyBudgetExceeded",
    "RateLimited", "ReplayError", "StatementDropped", "StoreCorrupt", "StoreReadOnly", "DiskFull", "TooLarge",
    "Unauthenticated",
    "UpgradeRequired", "VerificationRefused",
    "WrongPhase", "error_for_code",
]
