"""The federation client's result models and its membership record (``membership.json``).

Models at the boundary: the MCP server and the CLI render exactly these.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from continuum_mcp.errors import FederationError
from continuum_mcp.federation.protocol import ContributionReceipt, CreditBalance, FederationInfo, LevelName, ModeName
from continuum_mcp.federation.submission import ContributionPlan, OutgoingPattern
from continuum_mcp.privacy.ledger import LedgerStatus


class JoinResult(BaseModel):
    instance_id: str
    federation_id: str
    coordinator_url: str
    contribution_level: LevelName
    privacy_mode: ModeName = Field(description="This instance's own mode.")
    federation_mode: ModeName = Field(description="The mode every round of the federation is released under.")
    min_contributors: int = Field(description="The federation's floor of distinct contributors for any release.")
    joined_at: datetime
    note: str = Field(default="", description="What the federation's mode means for this member, if notable.")


class ContributionResult(BaseModel):
    status: Literal["sent", "queued", "dry_run", "nothing"]
    round_id: int | None = None
    patterns: int = Field(description="Patterns sent, queued, or that would be sent.")
    pending_credits: float = Field(default=0.0, description="Credits earned when the round is released.")
    preview: list[OutgoingPattern] = Field(default_factory=list)
    what_leaves: str = ""
    held_back_private: int = 0
    below_confidence: int = 0
    dropped_same_slot: int = Field(default=0, description="Weaker patterns that fell into an already used slot.")
    dropped_over_level: int = Field(default=0, description="Patterns beyond the contribution level's slot cap.")
    privacy: LedgerStatus | None = None
    message: str = ""

    @classmethod
    def from_plan(cls, plan: ContributionPlan, budget: LedgerStatus) -> ContributionResult:
        return cls(status="dry_run", patterns=len(plan.planned), privacy=budget, **plan.model_dump(exclude={"planned"}))

    def sent(self, receipt: ContributionReceipt) -> None:
        self.status, self.round_id = "sent", receipt.round_id
        self.patterns, self.pending_credits = receipt.accepted_patterns, receipt.pending_credits
        self.message = (f"{receipt.accepted_patterns} pattern(s) submitted to round {receipt.round_id}; "
                        "credits are pending until the round is released")


class SessionSync(BaseModel):
    """What a sync did about one learning session this member stands opted in to.

    ``took_part``: an auto-sync pass took part (``rounds_taken``: the rounds it posted in); ``running``:
    a manual sync found it running and left it (the note says how to take part); ``waiting``: not
    started yet (discussion, approved); ``over``: ended, the standing opt-in is dropped; ``refused``:
    this client does not take part (its own count contradicts the coordinator, a statement of its
    own is not published, not in the roster); ``failed``: could not be counted or taken part in."""

    proposal_id: str
    status: Literal["took_part", "running", "waiting", "over", "refused", "failed"]
    phase: str | None = Field(default=None, description="The session's phase, when it could be counted.")
    rounds_taken: list[int] = Field(default_factory=list)
    error: str | None = Field(default=None, description="The error code of a refusal or failure.")
    next_check_seconds: float | None = Field(
        default=None, description="When auto-sync should look again, sooner than its interval: at the end of the "
                                  "discussion, or at once while the session runs.")
    note: str = ""


class SyncResult(BaseModel):
    outbox_sent: int = 0
    outbox_waiting: int = 0
    round_id: int | None = None
    phase: str | None = None
    steps_posted: list[str] = Field(default_factory=list)
    released: bool = False
    privacy_spent_round: bool = False
    cache_patterns: int = 0
    withdrawn_from_cache: int = 0
    sessions: list[SessionSync] = Field(default_factory=list, description="The learning sessions this member "
                                        "stands opted in to: auto-sync takes part in running ones, a manual sync "
                                        "only says they run.")
    release_error: str | None = Field(default=None, description="The error code of an auto-sync pass's release "
                                      "sync that failed (its sessions were still taken part in).")
    message: str = ""

    def summary(self) -> str:
        return (f"round {self.round_id} {self.phase}" + (f"; posted {', '.join(self.steps_posted)}" if self.steps_posted
                                                          else "") + ("; released" if self.released else ""))


class FederatedPattern(BaseModel):
    """A released pattern of the federation, decrypted and ranked on this machine."""

    source: Literal["federated"] = "federated"
    pattern_id: str
    slot: int
    summary: str
    phrases: list[str]
    statements: list[str] = Field(default_factory=list)
    confidence: float
    similarity: float = Field(description="Cosine of the query to the pattern text (local embeddings).")
    contributor_count: float = Field(description="Noisy (DP) count of distinct contributors, shown no lower than "
                                                 "the federation's release floor, which the true count always meets.")
    verification_count: int
    votes_up: int = 0
    votes_down: int = 0
    released_at_round: int


class VerifyResult(BaseModel):
    pattern_id: str
    verified: bool
    similarity: float
    memory_id: int
    credits: CreditBalance | None = None


class VoteResult(BaseModel):
    pattern_id: str
    up: bool
    detail: str
    credits: CreditBalance | None = None


class DownloadResult(BaseModel):
    patterns: int
    charged: float
    credits: CreditBalance


class DeletionResult(BaseModel):
    deleted_submissions: int
    withdrawn_patterns: int
    local_outbox_cleared: int


class LeaveResult(DeletionResult):
    federation_id: str
    forgot_federation_key: bool = True


class AutoSyncSettings(BaseModel):
    enabled: bool = False
    interval_minutes: float = 15.0
    contribute_on_sync: bool = True
    query_on_sync: bool = True


class FederationStatus(BaseModel):
    joined: bool
    instance_id: str
    federation_id: str | None = None
    coordinator_url: str | None = None
    coordinator_reachable: bool | None = None
    contribution_level: str | None = None
    privacy_mode: str | None = None
    federation_mode: str | None = None
    privacy_budget_epsilon: float | None = None
    privacy_spent_epsilon: float | None = None
    privacy_budget_left: float | None = None
    privacy_total_epsilon: float | None = Field(default=None, description="Releases and learning sessions of the "
                                                "window composed exactly: what this instance has disclosed in it.")
    credits: CreditBalance | None = None
    auto_sync: AutoSyncSettings = Field(default_factory=AutoSyncSettings)
    auto_sync_running: bool = False
    current_round: int | None = None
    last_round: int | None = Field(default=None, description="Last round this instance took part in.")
    last_released_round: int | None = None
    outbox_waiting: int = 0
    cached_patterns: int = 0
    message: str = ""


class Membership(BaseModel):
    """membership.json: who we are in which federation (holds the federation key: 0600)."""

    instance_id: str
    coordinator_url: str
    federation_id: str
    federation_key_b64: str
    contribution_level: LevelName
    privacy_mode: ModeName
    federation: FederationInfo
    joined_at: datetime
    auto_sync: AutoSyncSettings = Field(default_factory=AutoSyncSettings)
    last_round: int | None = None
    last_contributed_ids: list[str] = Field(default_factory=list)


class FederationStateError(FederationError):
    """membership.json exists but cannot be read."""

    code = "federation_state_corrupt"
