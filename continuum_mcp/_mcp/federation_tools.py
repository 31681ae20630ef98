"""The federation tools, shown only while this instance is a member (see DESIGN.md section 2).

Before joining, the model sees ``federation_join`` alone (its output typed loosely, so that
nothing of the federation client is imported for it); joining registers the other tools with
their full result models and sends ``notifications/tools/list_changed``; leaving takes them away
again. Federation tools are open-world: they talk to a coordinator.
"""


from typing import Annotated, Any, Literal

import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations
from pydantic import Field

from continuum_mcp._mcp import args as a
from continuum_mcp._mcp.governance_tool import register_governance_tool
from continuum_mcp._mcp.memory_tools import LOCAL_READ, Run
from continuum_mcp._mcp.surface import ContinuumServer, notify_tools_changed

FED_READ = ToolAnnotations(read_only_hint=True, open_world_hint=True)
FED_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
FED_LEAVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)
FED_SETTING = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)

JOIN = "federation_join"
MEMBER_TOOLS = ("federation_status", "federation_contribute", "federation_sync", "federation_query",
                "federation_credits", "federation_verify", "federation_vote", "federation_leave",
                "federation_auto_sync", "preview_patterns", "federation_governance")
Confidence = a.number(0.0, 1.0)
PatternId = Annotated[str, Field(min_length=1, max_length=200)]


def register_join(mcp: ContinuumServer, run: Run) -> None:
    @mcp.tool(title="Join a federation", annotations=FED_WRITE)
    async def federation_join(
        ctx: Context[Any, Any],
        invite: Annotated[str, Field(min_length=1, max_length=4000, description="The invite "
                                     "'continuum-invite:v1:...#...' from the founder; its key part never leaves "
                                     "this machine.")],
        contribution_level: Annotated[Literal["minimal", "standard", "extensive"], Field(
            description="Patterns per round at most: minimal 20, standard 100, extensive 250.")] = "standard",
        privacy_mode: Annotated[Literal["high", "balanced", "open"], Field(
            description="The user's own privacy mode; a federation releasing less privately is refused.")] = "high",
    ) -> dict[str, Any]:
        """Join a federation of memories (only when the user asks to). Creates this instance's
        identity if needed; the federation tools appear once joined."""
        joined = await run(lambda app: app.join(invite, contribution_level, privacy_mode))
        await anyio.to_thread.run_sync(_member_models)  # the slow import, off the event loop
        show_member_tools(mcp, run, member=True)
        await notify_tools_changed(ctx)
        return joined.model_dump(mode="json")


def show_member_tools(mcp: ContinuumServer, run: Run, member: bool) -> None:
    """The tools of a member, or of an instance that has not joined (federation_join alone); a
    call to a tool not shown gets the reason instead of 'Unknown tool'."""
    from continuum_mcp.app import NOT_JOINED

    mcp.unavailable = ({JOIN: "conflict: this instance is already a member of a federation; federation_leave first"}
                       if member else {name: f"not_joined: {NOT_JOINED} (federation_join)" for name in MEMBER_TOOLS})
    if member:
        if mcp.has_tool(JOIN):
            mcp.remove_tool(JOIN)
        if not mcp.has_tool(MEMBER_TOOLS[0]):
            _register_member_tools(mcp, run)
    else:
        for name in MEMBER_TOOLS:
            if mcp.has_tool(name):
                mcp.remove_tool(name)
        if not mcp.has_tool(JOIN):
            register_join(mcp, run)


def _member_models() -> None:
    """Import the federation client's result models (heavy: httpx, secure aggregation)."""
    from continuum_mcp.app import resolve_models
    from continuum_mcp.federation.client import _models  # noqa: F401
    from continuum_mcp.privacy import preview  # noqa: F401

    resolve_models()


def _register_member_tools(mcp: ContinuumServer, run: Run) -> None:
    _member_models()
    from continuum_mcp.app import FederatedQueryResult
    from continuum_mcp.federation.client._models import (
        AutoSyncSettings, ContributionResult, FederationStatus, LeaveResult, SyncResult, VerifyResult, VoteResult,
    )
    from continuum_mcp.federation.protocol import CreditBalance
    from continuum_mcp.privacy.preview import PatternPreview

    @mcp.tool(title="Federation status", annotations=FED_READ)
    async def federation_status() -> FederationStatus:
        """Membership, coordinator, level, privacy mode and budget left, credits, auto-sync, last round."""
        return await run(lambda app: app.federation_status())

    @mcp.tool(title="Contribute patterns", annotations=FED_WRITE)
    async def federation_contribute(
        min_confidence: Annotated[Confidence, Field(description="Only patterns at least this confident.")] = 0.7,
        domain: Annotated[str | None, Field(max_length=64, description="Only memories with this tag.")] = None,
        dry_run: Annotated[a.Flag, Field(description="true (default): show exactly what would be shared and send "
                                                     "nothing; false: send, after the user saw the dry run.")] = True,
    ) -> ContributionResult:
        """Share anonymised patterns (never raw memories). Show the dry run to the user first. If
        the coordinator is down the contribution waits in the outbox. Refused when the privacy
        budget is spent."""
        return await run(lambda app: app.contribute(min_confidence=min_confidence, domain=domain, dry_run=dry_run))

    @mcp.tool(title="Sync with the federation", annotations=FED_WRITE)
    async def federation_sync(
        timeout_seconds: Annotated[a.number(0.0, 3600.0) | None, Field(
            description="How long to take part in a running round (default: the federation's phase timeout).")] = None,
    ) -> SyncResult:
        """Send waiting contributions, take part in the current round, refresh released patterns."""
        return await run(lambda app: app.sync(timeout_seconds=timeout_seconds))

    @mcp.tool(title="Query the federation", annotations=FED_WRITE)
    async def federation_query(
        query: Annotated[str, Field(min_length=1, max_length=2000, description="What to ask.")],
        min_confidence: Annotated[Confidence, Field(description="Drop patterns below this confidence.")] = 0.8,
        max_results: Annotated[a.count(1, 100), Field(description="At most this many patterns.")] = 10,
    ) -> FederatedQueryResult:
        """Patterns other members share, ranked and decrypted here; anonymised, not anybody's
        memories. Costs credits (a few free queries a day)."""
        return await run(lambda app: app.query(query, min_confidence=min_confidence, max_results=max_results))

    @mcp.tool(title="Federation credits", annotations=FED_READ)
    async def federation_credits() -> CreditBalance:
        """Credits available, earned and spent this month, pending, and free queries left today."""
        return await run(lambda app: app.credits())

    @mcp.tool(title="Verify a federated pattern", annotations=FED_WRITE)
    async def federation_verify(
        pattern_id: Annotated[PatternId, Field(description="A released pattern's id, e.g. 'p-12'.")],
    ) -> VerifyResult:
        """Confirm a released pattern that the user's own memory supports (earns credits)."""
        return await run(lambda app: app.verify(pattern_id))

    @mcp.tool(title="Vote on a federated pattern", annotations=FED_WRITE)
    async def federation_vote(
        pattern_id: Annotated[PatternId, Field(description="A released pattern's id, e.g. 'p-12'.")],
        up: Annotated[a.Flag, Field(description="true: useful; false: poor.")],
    ) -> VoteResult:
        """Rate a released pattern (one vote per pattern; a new vote replaces it)."""
        return await run(lambda app: app.vote(pattern_id, up))

    @mcp.tool(title="Leave the federation", annotations=FED_LEAVE)
    async def federation_leave(
        ctx: Context[Any, Any],
        force: Annotated[a.Flag, Field(description="Forget the membership locally even if the coordinator "
                                                   "cannot be reached.")] = False,
    ) -> LeaveResult:
        """Delete this instance's contributions from the federation, then forget its key and
        membership. Only when the user asks to leave."""
        left = await run(lambda app: app.leave(force=force))
        show_member_tools(mcp, run, member=await run(lambda app: app.joined))
        await notify_tools_changed(ctx)
        return left

    @mcp.tool(title="Federation auto-sync", annotations=FED_SETTING)
    async def federation_auto_sync(
        enabled: Annotated[a.Flag, Field(description="Background sync on or off (persisted).")],
        interval_minutes: Annotated[a.number(1.0, 10080.0), Field(description="Minutes between syncs.")] = 15,
        contribute_on_sync: Annotated[a.Flag, Field(description="Contribute new patterns.")] = True,
        query_on_sync: Annotated[a.Flag, Field(description="Fetch newly released patterns.")] = True,
    ) -> AutoSyncSettings:
        """Sync with the federation in the background while this server runs."""
        return await run(lambda app: app.set_auto_sync(enabled, interval_minutes=interval_minutes,
                                                       contribute_on_sync=contribute_on_sync,
                                                       query_on_sync=query_on_sync))

    register_governance_tool(mcp, run, FED_WRITE)

    @mcp.tool(title="Preview shareable patterns", annotations=LOCAL_READ)
    async def preview_patterns(
        min_confidence: Annotated[Confidence, Field(description="Only patterns at least this confident.")] = 0.0,
        exclude_ids: Annotated[list[a.MemoryId] | None, Field(
            description="Memory ids to hold back.")] = None,
    ) -> PatternPreview:
        """The anonymised patterns this memory would yield for the federation, and which memories
        were held back. Local only: nothing is sent."""
        return await run(lambda app: app.preview(min_confidence=min_confidence, exclude=exclude_ids or ()))
