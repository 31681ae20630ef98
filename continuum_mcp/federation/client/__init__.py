"""The federation client: join, contribute, take part in rounds, query, credits, leave.

``FederationClient`` is a facade over the pieces, each in its own module: ``MembershipFile``
(membership.json), ``Outbox`` (queued and submitted patterns), ``PatternCache`` (decrypted
released patterns), ``FederatedQuery`` (decoys, decrypt, rank), ``AutoSync`` (the background
thread) and ``run_round`` (the I/O loop of a ``federation.participant.RoundParticipant`` over a
``federation.api.CoordinatorAPI``).
"""

from continuum_mcp.federation.client._autosync import AutoSync
from continuum_mcp.federation.client._cache import CachedPattern, PatternCache
from continuum_mcp.federation.client._facade import FEDERATION_DIR, VERIFY_THRESHOLD, FederationClient
from continuum_mcp.federation.client._membership import MODE_ORDER, MembershipFile
from continuum_mcp.federation.client._models import (
    AutoSyncSettings, ContributionResult, DeletionResult, DownloadResult, FederatedPattern, FederationStateError,
    FederationStatus, JoinResult, LeaveResult, Membership, SessionSync, SyncResult, VerifyResult, VoteResult)
from continuum_mcp.federation.client._outbox import Outbox
from continuum_mcp.federation.client._query import (
    QUERY_PADDED_SLOTS, QUERY_TOP_SLOTS, RELEVANCE_FLOOR, RELEVANCE_SPAN, FederatedQuery, decoy_secret,
    federated_confidence, open_released, pad_with_decoys)
from continuum_mcp.federation.client._rounds import BeforePost, LedgerCharge, run_round, step
from continuum_mcp.federation.submission import OutgoingPattern

__all__ = [
    "FEDERATION_DIR", "MODE_ORDER", "QUERY_PADDED_SLOTS", "QUERY_TOP_SLOTS", "RELEVANCE_FLOOR", "RELEVANCE_SPAN",
    "VERIFY_THRESHOLD", "AutoSync", "AutoSyncSettings", "BeforePost", "CachedPattern", "ContributionResult",
    "DeletionResult", "DownloadResult", "FederatedPattern", "FederatedQuery", "FederationClient",
    "FederationStateError", "FederationStatus", "JoinResult", "LeaveResult", "LedgerCharge", "Membership", "MembershipFile",
    "OutgoingPattern", "Outbox", "PatternCache", "SessionSync", "SyncResult", "VerifyResult", "VoteResult",
    "decoy_secret", "federated_confidence", "open_released", "pad_with_decoys", "run_round", "step",
]
