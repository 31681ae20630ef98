"""The federation wire protocol (protocol v2, paths under ``/v1``): the contract between
coordinator and client.

Versioning: every request carries ``X-Continuum-Protocol: <PROTOCOL_VERSION>`` (signed requests
always; unsigned ones may) and every coordinator answer carries it back. A coordinator refuses a
signed request without the header, or with another version, with ``426 upgrade_required``; a
client refuses an answer without it, or with another version, with ``UpgradeRequired``. So a v1
client and a v2 coordinator (or the reverse) stop at the first call with an upgrade message
instead of running a half-compatible round. ``FederationInfo.api_version`` is checked on join.

Protocol v2 (over v1): phrase and statement ciphertexts are sealed under their token (AEAD
associated data: federation, token; deterministic synthetic nonce) and the reader drops any whose
text does not hash back to its token; ``PatternSubmission.statement_token``; statements only in
``open`` mode, released only when the statement itself has ``min_contributors`` contributors;
released phrases and statements carry no round id; ``RoundState`` shows a member only its own
participation (no submission counts; the secagg parameters, which name the roster, only to that
round's roster); ``FederationInfo.sybil_fraction``; one ledger label per secagg attempt.

Both sides import these models; neither defines its own. Every request except ``GET /v1/health``
and ``GET /openapi.json`` carries the identity headers of :meth:`Identity.sign_request`, signed
over (method, path including any query string, SHA-256 of the exact body bytes). Bodies are JSON
(UTF-8). Errors are ``ErrorBody`` with a stable ``code`` and an HTTP 4xx status (see ``ERRORS``).

Round life cycle (one round at a time; ``round_id`` increases by one):

``collecting``  members POST /v1/contributions (patterns: slot, phrase tokens + ciphertexts,
                optional statement ciphertext). Stored durably before 202; re-posting in the same
                round replaces the member's earlier submission. When the round is closed (on the
                schedule, or by ``POST /v1/admin/rounds/close``), the roster is every member with a
                submission. Fewer than ``max(3, min_contributors)``: the round stays collecting
                (carried over, nothing lost). Otherwise SecAggParams are fixed and:
``advertise``   each roster member posts its signed AdvertiseKeys (secagg step 0),
``share_keys``  GET .../secagg/roster, then post ShareKeys (step 1),
``masked_input`` GET .../secagg/inbox, then post MaskedInput (step 2) — the vector is the
                member's per-slot embedding block (see ``slot_vector_layout``),
``unmask``      GET .../secagg/survivors, then post Unmasking (step 3),
``released``    the coordinator has the noisy per-slot sums, applied DP release (partition
                selection with the hard floor ``min_contributors``), recorded ledger spends and
                credits, and opened round ``round_id + 1`` (``collecting``).
``aborted``     too few survivors at some step; the submissions carry over to the next round.
Each secagg phase ends when every expected member has posted, or at its deadline (members that
have not posted are dropped, up to the tolerated third).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from continuum_mcp.crypto.signing import HEADER_PROTOCOL, WIRE_PROTOCOL_VERSION
from continuum_mcp.federation.governance._wire import (
    GovernanceInfo,
    ProposalList,
    ProposalSummary,
    SessionReport,
    StatementPost,
)

# the secagg package knows nothing of HTTP: it sits below the wire contract, which carries its messages
from continuum_mcp.secagg import PHASES, KeyRoster, Kind, ShareInbox, SurvivorList

API_PREFIX = "/v1"
#: the wire contract's version (see the module docstring); bump on any incompatible change
#: (defined beside the signed-request headers, which carry it).
PROTOCOL_VERSION = WIRE_PROTOCOL_VERSION
PROTOCOL_HEADER = HEADER_PROTOCOL
MAX_BODY_BYTES = 4 * 1024 * 1024  # a masked vector of 256 slots x 384 dims is ~0.5 MB in base64
MAX_PATTERNS_PER_SUBMISSION = 250
MAX_PHRASES_PER_PATTERN = 8
MAX_CIPHERTEXT_B64 = 4096
ADMIN_TOKEN_HEADER = "X-Continuum-Admin-Token"

ModeName = Literal["high", "balanced", "open"]
LevelName = Literal["minimal", "standard", "extensive"]
RoundPhase = Literal["collecting", Kind, "released", "aborted"]
SecAggKind = Kind  # the secagg package names its phases once


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----- errors ----------------------------------------------------------------------------------
class ErrorBody(_Model):
    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="What went wrong and what to do about it.")


#: error code -> HTTP status. The coordinator uses exactly these; the client maps them back to
#: typed exceptions (invalid_input -> InvalidInput, not_found -> NotFound, crypto -> CryptoError...).
ERRORS: dict[str, int] = {
    "invalid_input": 400,        # malformed JSON, schema violation, bad values
    "unauthenticated": 401,      # missing/bad signature headers, wrong key, bad signature
    "replay": 401,               # nonce reused or timestamp outside the window
    "not_admitted": 403,         # valid signature, but the identity is not a member
    "forbidden": 403,            # acting for another identity, admin route without the admin token
    "bad_invite": 403,           # admission token unknown, used, or for another federation
    "not_found": 404,
    "wrong_phase": 409,          # a secagg message or contribution for a phase/round that is not current
    "conflict": 409,             # e.g. already a member with another level
    "too_large": 413,
    "insufficient_credits": 402,
    "privacy_budget_exceeded": 403,
    "rate_limited": 429,
    "upgrade_required": 426,     # the other side speaks another protocol version
}


# ----- federation and membership ---------------------------------------------------------------
class CreditRules(_Model):
    earn_per_pattern: float = 1.0
    earn_daily_limit: float = 100.0
    earn_per_verification: float = 0.5
    earn_per_quality_release: float = 2.0
    cost_query: float = 1.0
    cost_download: float = 10.0
    cost_priority: float = 5.0
    free_queries_per_day: int = 3


class FederationInfo(_Model):
    federation_id: str
    api_version: int = Field(default=PROTOCOL_VERSION, description="The coordinator's protocol version; a client "
                                                                  "refuses to join another one.")
    private: bool = Field(description="True: members need an admission token; false: an open federation, "
                                      "which cannot resist fake identities.")
    privacy_mode: ModeName = Field(description="The mode every round of this federation is released under.")
    min_contributors: int = Field(description="Hard floor of distinct contributors before anything is released.")
    require_contribution: bool
    codebook_version: str
    slots: int = Field(description="K, the number of slots of the codebook in use.")
    dim: int = Field(description="Embedding dimension.")
    round_interval_seconds: int
    phase_timeout_seconds: int
    credit_rules: CreditRules
    sybil_fraction: float = Field(default=1 / 3, ge=0, lt=1, description="Fraction of a roster that may be fake "
                                  "identities (sybils): each client's noise share is calibrated so that the honest "
                                  "rest alone adds the mode's noise.")


class JoinRequest(_Model):
    admission_token: str | None = Field(default=None, max_length=512,
                                        description="From the invite's public part; required by a private federation.")
    contribution_level: LevelName = "standard"
    privacy_mode: ModeName = Field(default="high", description="The member's own mode: it joins only a federation "
                                                               "whose mode is at least as private.")


class JoinResponse(_Model):
    instance_id: str
    federation: FederationInfo
    joined_at: datetime


class InviteRequest(_Model):
    """Admin: mint admission tokens (one identity each)."""

    count: int = Field(default=1, ge=1, le=1000)


class InviteResponse(_Model):
    admission_tokens: list[str]


# ----- contributions ---------------------------------------------------------------------------
TOKEN_PATTERN = r"^[0-9a-f]{64}$"


class PhraseSubmission(_Model):
    token: str = Field(pattern=TOKEN_PATTERN, description="Keyed BLAKE2b of (slot, phrase): opaque.")
    ciphertext: str = Field(max_length=MAX_CIPHERTEXT_B64, description="base64 AEAD ciphertext of the phrase, "
                            "bound to (federation, token), deterministic: equal phrases give equal ciphertexts.")


class PatternSubmission(_Model):
    slot: int = Field(ge=0, lt=2**32, description="Versioned slot id of the nearest codebook vector: the codebook "
                      "version's tag << 12 | its index (v0's tag is 0: the index; privacy.codebook.slot_id).")
    confidence: float = Field(ge=0.0, le=1.0)
    phrases: list[PhraseSubmission] = Field(max_length=MAX_PHRASES_PER_PATTERN)
    statement_ciphertext: str | None = Field(default=None, max_length=MAX_CIPHERTEXT_B64,
                                             description="Encrypted scrubbed statement (open mode only), bound to "
                                                         "statement_token.")
    statement_token: str | None = Field(default=None, pattern=TOKEN_PATTERN,
                                        description="Keyed BLAKE2b of the normalised statement: open mode releases a "
                                                    "statement only when this token has min_contributors contributors.")

    @model_validator(mode="after")
    def _statement_pair(self) -> "PatternSubmission":
        if (self.statement_ciphertext is None) != (self.statement_token is None):
            raise ValueError("statement_ciphertext and statement_token go together")
        return self


class ContributionRequest(_Model):
    round_id: int = Field(ge=0, description="The round the ciphertexts were encrypted for (must be current).")
    patterns: list[PatternSubmission] = Field(min_length=1, max_length=MAX_PATTERNS_PER_SUBMISSION)


class ContributionReceipt(_Model):
    round_id: int
    accepted_patterns: int
    pending_credits: float = Field(description="Credits earned when the round is released.")


# ----- rounds and secure aggregation -----------------------------------------------------------
class RoundState(_Model):
    round_id: int
    attempt: int = Field(description="Secure-aggregation attempt within the round (a coordinator restart or an "
                                     "abort starts a new one; secagg session_id = '<federation_id>/r<round>/a<attempt>').")
    phase: RoundPhase
    phase_deadline: datetime | None
    submissions: int | None = Field(default=None, description="Members with a submission in this round: the "
                                    "operator's view only (None for members, who see only their own participation).")
    you_submitted: bool
    you_in_roster: bool
    you_pending: SecAggKind | None = Field(description="The secagg message the coordinator waits for from you.")
    params: dict[str, Any] | None = Field(description="SecAggParams (model_dump) once the roster is fixed; shown "
                                          "only to members of that round's roster (it names the roster).")
    epsilon_spent: float | None = Field(default=None, description="Per-round epsilon, once released.")


class SecAggPost(_Model):
    """Body of POST /v1/rounds/{round_id}/secagg/{kind}: a secagg.SignedMessage as JSON."""

    message: dict[str, Any]


def slot_vector_layout(slots: int, dim: int) -> tuple[int, int]:
    """The secagg input of a member: slots x dim floats, slot s at [s*dim, (s+1)*dim).

    Each contributed slot holds the member's pattern embedding; the whole vector is scaled to the
    L2 norm the privacy mode allots to centroids. Returns (total length, block size).
    """
    return slots * dim, dim


# ----- release and query -----------------------------------------------------------------------
class SlotInfo(_Model):
    slot: int
    vector: list[float] = Field(description="DP centroid of the slot if released, else the codebook vector.")
    noisy_contributors: float
    released_at_round: int


class SlotsResponse(_Model):
    codebook_version: str
    slots: list[SlotInfo]


class ReleasedPhrase(_Model):
    token: str = Field(description="The phrase token; the reader checks that the decrypted text hashes back to it.")
    ciphertext: str
    noisy_contributors: float


class ReleasedStatement(_Model):
    """A released statement (open mode): no round id, so rosters cannot be intersected with it."""

    token: str
    ciphertext: str


class ReleasedPattern(_Model):
    pattern_id: str = Field(description="Stable id of the released slot pattern, e.g. 'p-<slot>'.")
    slot: int
    phrases: list[ReleasedPhrase]
    statements: list[ReleasedStatement]
    noisy_contributors: float
    verifications: int
    votes_up: int
    votes_down: int
    released_at_round: int


class QueryRequest(_Model):
    slots: list[int] = Field(min_length=1, max_length=64, description="Wanted slots, padded with decoys.")
    priority: bool = False


class CreditBalance(_Model):
    available: float
    earned_this_month: float
    spent_this_month: float
    pending: float
    free_queries_left_today: int


class QueryResponse(_Model):
    patterns: list[ReleasedPattern]
    charged: float
    free_tier: bool
    credits: CreditBalance


class DownloadResponse(_Model):
    patterns: list[ReleasedPattern]
    charged: float
    credits: CreditBalance


class VoteRequest(_Model):
    up: bool


class ActionReceipt(_Model):
    ok: bool = True
    credits: CreditBalance | None = None
    detail: str = ""


class MemberStatus(_Model):
    instance_id: str
    contribution_level: LevelName
    privacy_mode: ModeName
    joined_at: datetime
    credits: CreditBalance
    epsilon_spent_window: float = Field(description="The coordinator's ledger of this member, rolling window.")
    current_round: int
    last_released_round: int | None


class DeletionReceipt(_Model):
    deleted_submissions: int
    withdrawn_patterns: int


class Health(_Model):
    status: Literal["ok"] = "ok"
    version: str
    protocol_version: int = PROTOCOL_VERSION
    federation_id: str


# ----- routes: the one table both the coordinator's HTTP app and CoordinatorAPI are built from -
Auth = Literal["none", "signed", "member", "admin"]

#: the four secure-aggregation message kinds, in protocol order (also the round phases between
#: ``collecting`` and ``released``): the secagg package's own ``PHASES``, not a second spelling.
SECAGG_PHASES: tuple[SecAggKind, ...] = PHASES


class RouteSpec(BaseModel):
    """One route of the wire contract. ``path`` uses Starlette's syntax (``{round_id:int}``);
    ``format_path`` fills it for a client. ``request``/``response`` name the body models."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    method: Literal["GET", "POST", "DELETE"]
    path: str
    auth: Auth
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    summary: str = ""

    def format_path(self, **params: Any) -> str:
        """The concrete path, e.g. ``/v1/rounds/3/secagg/roster``."""
        import re

        def fill(m: "re.Match[str]") -> str:
            key = m.group(1)
            if key not in params:
                raise KeyError(f"route {self.name} needs path parameter {key!r}")
            return str(params[key])

        return re.sub(r"\{(\w+)(?::\w+)?\}", fill, self.path)


def _routes() -> dict[str, RouteSpec]:
    specs = [
        RouteSpec(name="health", method="GET", path="/v1/health", auth="none", response=Health,
                  summary="Liveness and version; no authentication."),
        RouteSpec(name="federation", method="GET", path="/v1/federation", auth="signed",
                  response=FederationInfo, summary="The federation's public parameters."),
        RouteSpec(name="join", method="POST", path="/v1/join", auth="signed", request=JoinRequest,
                  response=JoinResponse, summary="Become a member (admission token for private federations)."),
        RouteSpec(name="status", method="GET", path="/v1/status", auth="member", response=MemberStatus,
                  summary="The caller's own membership, credits and privacy spend."),
        RouteSpec(name="contribute", method="POST", path="/v1/contributions", auth="member",
                  request=ContributionRequest, response=ContributionReceipt, status=202,
                  summary="Submit (or replace) this round's patterns."),
        RouteSpec(name="delete_contributions", method="DELETE", path="/v1/contributions", auth="member",
                  response=DeletionReceipt, summary="Withdraw every contribution of the caller."),
        RouteSpec(name="leave", method="POST", path="/v1/leave", auth="member", response=DeletionReceipt,
                  summary="Withdraw everything and end membership."),
        RouteSpec(name="round_current", method="GET", path="/v1/rounds/current", auth="member",
                  response=RoundState, summary="The current round as the caller may see it."),
        RouteSpec(name="round", method="GET", path="/v1/rounds/{round_id:int}", auth="member",
                  response=RoundState, summary="One round as the caller may see it."),
        RouteSpec(name="secagg_roster", method="GET", path="/v1/rounds/{round_id:int}/secagg/roster",
                  auth="member", response=KeyRoster, summary="Advertised keys of the round's roster."),
        RouteSpec(name="secagg_inbox", method="GET", path="/v1/rounds/{round_id:int}/secagg/inbox",
                  auth="member", response=ShareInbox, summary="Encrypted shares addressed to the caller."),
        RouteSpec(name="secagg_survivors", method="GET", path="/v1/rounds/{round_id:int}/secagg/survivors",
                  auth="member", response=SurvivorList, summary="Who sent a masked input."),
        RouteSpec(name="secagg_post", method="POST", path="/v1/rounds/{round_id:int}/secagg/{kind}",
                  auth="member", request=SecAggPost, response=ActionReceipt,
                  summary="One signed secure-aggregation message (kind: " + ", ".join(SECAGG_PHASES) + ")."),
        RouteSpec(name="slots", method="GET", path="/v1/slots", auth="member", response=SlotsResponse,
                  summary="Slot vectors: codebook vectors and released DP centroids."),
        RouteSpec(name="query", method="POST", path="/v1/query", auth="member", request=QueryRequest,
                  response=QueryResponse, summary="Released patterns of the asked slots (costs a credit)."),
        RouteSpec(name="download", method="GET", path="/v1/patterns/download", auth="member",
                  response=DownloadResponse, summary="Every released pattern (costs credits)."),
        RouteSpec(name="verify", method="POST", path="/v1/patterns/{pattern_id}/verify", auth="member",
                  response=ActionReceipt, summary="Confirm a released pattern that local memory supports."),
        RouteSpec(name="vote", method="POST", path="/v1/patterns/{pattern_id}/vote", auth="member",
                  request=VoteRequest, response=ActionReceipt, summary="Vote a released pattern up or down."),
        RouteSpec(name="credits", method="GET", path="/v1/credits", auth="member", response=CreditBalance,
                  summary="The caller's credit balance."),
        *_governance_routes(),
        RouteSpec(name="admin_invites", method="POST", path="/v1/admin/invites", auth="admin",
                  request=InviteRequest, response=InviteResponse, summary="Mint admission tokens (admin)."),
        RouteSpec(name="admin_close_round", method="POST", path="/v1/admin/rounds/close", auth="admin",
                  response=RoundState, summary="Close the collecting round now (admin)."),
    ]
    return {s.name: s for s in specs}


#: governance statements: the route name -> the statement type its body must carry
GOVERNANCE_STATEMENT_ROUTES: dict[str, str] = {"gov_ballot": "ballot", "gov_opt_in": "opt_in",
                                               "gov_opt_out": "opt_out", "gov_halt": "halt", "gov_adopt": "adopt"}


def _governance_routes() -> list[RouteSpec]:
    """Proposals, signed statements, reports, and the secure aggregation of session rounds (the
    same four secagg steps as release rounds, under ``/v1/governance/proposals/{proposal_id}``)."""
    base = "/v1/governance/proposals"
    one = base + "/{proposal_id}"
    sround = one + "/rounds/{round_id:int}"
    specs = [
        RouteSpec(name="gov_info", method="GET", path="/v1/governance", auth="member", response=GovernanceInfo,
                  summary="The federation's governance rules and session kinds."),
        RouteSpec(name="gov_propose", method="POST", path=base, auth="member", request=StatementPost,
                  response=ProposalSummary, summary="Publish a signed proposal of a learning session."),
        RouteSpec(name="gov_proposals", method="GET", path=base, auth="member", response=ProposalList,
                  summary="Every proposal with its phase (and the coordinator's informative tally)."),
        RouteSpec(name="gov_report", method="GET", path=one, auth="member", response=SessionReport,
                  summary="A session's report: every signed statement, rounds, privacy spent, results (free)."),
    ]
    specs += [RouteSpec(name=name, method="POST", path=f"{one}/{kind.replace('_', '-')}", auth="member",
                        request=StatementPost, response=ActionReceipt,
                        summary=f"Publish a signed {kind.replace('_', '-')} statement.")
              for name, kind in GOVERNANCE_STATEMENT_ROUTES.items()]
    specs += [
        RouteSpec(name="session_round", method="GET", path=one + "/round", auth="member", response=RoundState,
                  summary="The session's current round as the caller may see it."),
        RouteSpec(name="session_round_of", method="GET", path=sround, auth="member", response=RoundState,
                  summary="One round of the session."),
        RouteSpec(name="session_secagg_roster", method="GET", path=sround + "/secagg/roster", auth="member",
                  response=KeyRoster, summary="Advertised keys of the session round's roster."),
        RouteSpec(name="session_secagg_inbox", method="GET", path=sround + "/secagg/inbox", auth="member",
                  response=ShareInbox, summary="Encrypted shares addressed to the caller."),
        RouteSpec(name="session_secagg_survivors", method="GET", path=sround + "/secagg/survivors", auth="member",
                  response=SurvivorList, summary="Who sent a masked input."),
        RouteSpec(name="session_secagg_post", method="POST", path=sround + "/secagg/{kind}", auth="member",
                  request=SecAggPost, response=ActionReceipt, summary="One signed secagg message of a session round."),
    ]
    return specs


#: a release round's route -> the same step of a session round (the participant speaks release names)
SESSION_ROUTES: dict[str, str] = {"round_current": "session_round", "round": "session_round_of",
                                  "secagg_roster": "session_secagg_roster", "secagg_inbox": "session_secagg_inbox",
                                  "secagg_survivors": "session_secagg_survivors", "secagg_post": "session_secagg_post"}


@functools.cache
def routes() -> dict[str, RouteSpec]:
    """The route table, by name (built once: the table is a constant of the protocol)."""
    return _routes()
