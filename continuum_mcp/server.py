"""The MCP adapter: tools and resources over :class:`continuum_mcp.app.Continuum`, on mcp 2.x ``MCPServer``.

It only translates: each tool calls one ``Continuum`` method in a worker thread (so the event
loop keeps answering; ``tools/list`` never waits for the model) and turns the core's typed errors
into MCP tool errors (``code: message``). Arguments are checked by the core. Nothing of the
federation or privacy stack is imported when this module is; their result models are needed for
the tools' output schemas and are imported by :func:`build_server`.
"""

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from continuum_mcp import __version__
from continuum_mcp.app import Continuum, FederatedQueryResult, RecallWithFederated, resolve_models
from continuum_mcp.config import Settings
from continuum_mcp.errors import ContinuumError
from continuum_mcp.memory.models import Memory, SearchMode
from continuum_mcp.memory.store import Filters, ForgetResult, MemoryPage, RememberResult, StoreStats
from embeddings import Embedder

T = TypeVar("T")
MODEL_LOAD_DELAY = 0.5  # seconds; a request that needs the model starts the load at once

INSTRUCTIONS = """\
Long-term memory for this user, stored privately on their machine.
- Call `recall` at the start of a task or when the user refers to something from before
  (preferences, people, projects, decisions) instead of asking them again.
- Call `remember` when the user states a durable fact, preference, decision or instruction worth
  keeping across conversations. One self-contained statement per memory; add a few tags.
  Tag anything sensitive the user does not want shared as `private`.
- Use `update_memory` to correct a memory and `forget` when the user asks to delete one.
- The `federation_*` tools share anonymised patterns with other people's memories; use them only
  when the user asks, and show `federation_contribute` with `dry_run` before contributing.
"""


#: Tool hints: local tools touch nothing outside this machine; federation tools are open-world.
LOCAL_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
LOCAL_ADD = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
LOCAL_EDIT = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
FED_READ = ToolAnnotations(read_only_hint=True, open_world_hint=True)
FED_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)


async def _in_thread(call: Callable[[], T]) -> T:
    """Blocking core work off the event loop; a typed core error becomes an MCP tool error."""
    try:
        return await anyio.to_thread.run_sync(call)
    except ContinuumError as exc:
        raise ToolError(f"{exc.code}: {exc.message}") from exc


def build_server(settings: Settings, embedder: Embedder | None = None) -> MCPServer[Continuum]:
    """An MCP server over the memory in ``settings.data_dir``."""
    # The tools' output schemas need these result models; the annotations below are evaluated
    # here (this module has no postponed annotations), so importing the module stays light.
    from continuum_mcp.federation.client._client import (
        AutoSyncSettings, ContributionResult, FederationStatus, JoinResult, LeaveResult, SyncResult, VerifyResult,
        VoteResult,
    )
    from continuum_mcp.federation.protocol import CreditBalance
    from continuum_mcp.privacy.preview import PatternPreview

    resolve_models()
    app = Continuum(settings, embedder, load_delay=MODEL_LOAD_DELAY)

    def run(call: Callable[[Continuum], T]) -> Coroutine[Any, Any, T]:
        return _in_thread(lambda: call(app))

    @asynccontextmanager
    async def lifespan(_: MCPServer[Continuum]) -> AsyncIterator[Continuum]:
        # Opening SQLite is quick; the model keeps loading in the background meanwhile.
        await anyio.to_thread.run_sync(lambda: app.store)
        await anyio.to_thread.run_sync(app.resume_auto_sync)
        try:
            yield app
        finally:
            await anyio.to_thread.run_sync(app.close)

    mcp: MCPServer[Continuum] = MCPServer(
        name="continuum-mcp", title="Continuum memory", version=__version__, instructions=INSTRUCTIONS,
        lifespan=lifespan, log_level="WARNING")

    @mcp.tool(title="Remember", annotations=LOCAL_ADD)
    async def remember(
        text: Annotated[str, Field(description="The fact, preference or note to keep, as one self-contained statement.")],
        tags: Annotated[list[str] | None, Field(description="Short labels, e.g. ['work', 'project-x']. "
                                                         "Tag 'private' to keep it out of any federation.")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="Optional JSON object stored with the memory.")] = None,
    ) -> RememberResult:
        """Store a memory for later recall. If the same or a nearly identical memory already
        exists, it is returned instead of a copy (status 'duplicate' or 'near_duplicate')."""
        return await run(lambda a: a.remember(text, tags=tags, metadata=metadata, source="mcp"))

    @mcp.tool(title="Recall", annotations=LOCAL_READ)
    async def recall(
        query: Annotated[str, Field(description="What to look for, in natural language or keywords.")],
        k: Annotated[int, Field(description="How many memories to return (1-100).")] = 5,
        mode: Annotated[SearchMode, Field(description="'hybrid' (default: meaning and keywords), "
                                                      "'semantic' (meaning only) or 'keyword' (exact words).")] = "hybrid",
        tags_any: Annotated[list[str] | None, Field(description="Only memories with at least one of these tags.")] = None,
        tags_all: Annotated[list[str] | None, Field(description="Only memories with all of these tags.")] = None,
        since: Annotated[datetime | None, Field(description="Only memories created at or after this ISO time.")] = None,
        until: Annotated[datetime | None, Field(description="Only memories created at or before this ISO time.")] = None,
        min_score: Annotated[float | None, Field(description="Drop results whose cosine similarity "
                                                             "(BM25 score in keyword mode) is below this.")] = None,
        include_federated: Annotated[bool, Field(description="Also return matching patterns from the local cache "
                                                             "of the federation's released patterns, in the "
                                                             "separate 'federated' list (not the user's memories).")] = False,
    ) -> RecallWithFederated:
        """Search the user's memories by meaning and keywords; best matches first. With
        include_federated, patterns learned from the federation are listed separately under
        'federated', clearly not the user's own memories."""
        filters = Filters(tags_any=tags_any or [], tags_all=tags_all or [], since=since, until=until)
        return await run(lambda a: a.recall(query, k=k, mode=mode, filters=filters, min_score=min_score,
                                            include_federated=include_federated))

    @mcp.tool(title="Forget", annotations=LOCAL_EDIT)
    async def forget(
        ids: Annotated[list[int], Field(description="Ids of the memories to delete for good.")],
    ) -> ForgetResult:
        """Permanently delete memories. All or nothing: if any id is unknown, none is deleted."""
        return await run(lambda a: a.forget(ids))

    @mcp.tool(title="Update memory", annotations=LOCAL_EDIT)
    async def update_memory(
        id: Annotated[int, Field(description="Id of the memory to change.")],
        text: Annotated[str | None, Field(description="New text (replaces the old; re-indexed).")] = None,
        tags: Annotated[list[str] | None, Field(description="New tags (replace the old ones).")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="New metadata (replaces the old).")] = None,
    ) -> Memory:
        """Correct or re-tag an existing memory. Fields left out stay as they are."""
        return await run(lambda a: a.update(id, text=text, tags=tags, metadata=metadata))

    @mcp.tool(title="List memories", annotations=LOCAL_READ)
    async def list_memories(
        tags_any: Annotated[list[str] | None, Field(description="Only memories with at least one of these tags.")] = None,
        tags_all: Annotated[list[str] | None, Field(description="Only memories with all of these tags.")] = None,
        since: Annotated[datetime | None, Field(description="Created at or after this ISO time.")] = None,
        until: Annotated[datetime | None, Field(description="Created at or before this ISO time.")] = None,
        offset: Annotated[int, Field(description="How many to skip (paging).")] = 0,
        limit: Annotated[int, Field(description="How many to return (1-1000).")] = 20,
    ) -> MemoryPage:
        """Browse memories newest first, with optional tag and time filters."""
        filters = Filters(tags_any=tags_any or [], tags_all=tags_all or [], since=since, until=until)
        return await run(lambda a: a.list(filters, offset=offset, limit=limit))

    @mcp.tool(title="Memory statistics", annotations=LOCAL_READ)
    async def memory_stats() -> StoreStats:
        """How many memories there are, top tags, time span, model and storage size."""
        return await run(lambda a: a.stats())

    # ----- federation (opt-in; see DESIGN.md section 2) -------------------------------------

    @mcp.tool(title="Join a federation", annotations=FED_WRITE)
    async def federation_join(
        invite: Annotated[str, Field(description="The invite string 'continuum-invite:v1:...#...' from the "
                                                 "federation's founder. Its key part never leaves this machine.")],
        contribution_level: Annotated[Literal["minimal", "standard", "extensive"],
                                      Field(description="How many patterns per round at most: minimal 20, "
                                                        "standard 100, extensive 250.")] = "standard",
        privacy_mode: Annotated[Literal["high", "balanced", "open"],
                                Field(description="The user's own privacy mode; joining a federation that "
                                                  "releases less privately is refused.")] = "high",
    ) -> JoinResult:
        """Join a federation of memories (only when the user asks to). Creates this instance's
        identity if needed and admits it with the invite."""
        return await run(lambda a: a.join(invite, contribution_level, privacy_mode))

    @mcp.tool(title="Federation status", annotations=FED_READ)
    async def federation_status() -> FederationStatus:
        """Membership, coordinator, contribution level, privacy mode, privacy budget left, credits,
        auto-sync and the last round this instance took part in."""
        return await run(lambda a: a.federation_status())

    @mcp.tool(title="Contribute patterns", annotations=FED_WRITE)
    async def federation_contribute(
        min_confidence: Annotated[float, Field(description="Only patterns at least this confident (0-1).")] = 0.7,
        domain: Annotated[str | None, Field(description="Only memories with this tag.")] = None,
        dry_run: Annotated[bool, Field(description="Show exactly what would be shared, in plain text, "
                                                   "and send nothing.")] = False,
    ) -> ContributionResult:
        """Share anonymised patterns (never raw memories) with the federation. Use dry_run first to
        show the user what would leave. If the coordinator is down the contribution waits in the
        local outbox; nothing is lost. Refused when the privacy budget is spent."""
        return await run(lambda a: a.contribute(min_confidence=min_confidence, domain=domain, dry_run=dry_run))

    @mcp.tool(title="Sync with the federation", annotations=FED_WRITE)
    async def federation_sync(
        timeout_seconds: Annotated[float | None, Field(description="How long to take part in a running round "
                                                                   "(default: from the federation's phase timeout).")] = None,
    ) -> SyncResult:
        """Send waiting contributions, take part in the current round's secure aggregation, and
        refresh the local cache of released patterns."""
        return await run(lambda a: a.sync(timeout_seconds=timeout_seconds))

    @mcp.tool(title="Query the federation", annotations=FED_WRITE)
    async def federation_query(
        query: Annotated[str, Field(description="What to ask the federation's collective knowledge.")],
        min_confidence: Annotated[float, Field(description="Drop patterns below this confidence (0-1).")] = 0.8,
        max_results: Annotated[int, Field(description="At most this many patterns (1-100).")] = 10,
    ) -> FederatedQueryResult:
        """Find patterns other members share, ranked and decrypted on this machine. Costs credits
        (a few free queries a day). Results are anonymised patterns, not anybody's memories."""
        return await run(lambda a: a.query(query, min_confidence=min_confidence, max_results=max_results))

    @mcp.tool(title="Federation credits", annotations=FED_READ)
    async def federation_credits() -> CreditBalance:
        """Credits available, earned and spent this month, pending, and free queries left today."""
        return await run(lambda a: a.credits())

    @mcp.tool(title="Verify a federated pattern", annotations=FED_WRITE)
    async def federation_verify(
        pattern_id: Annotated[str, Field(description="Id of a released pattern from federation_query, e.g. 'p-12'.")],
    ) -> VerifyResult:
        """Confirm a released pattern that the user's own memory supports (earns credits). Refused
        when no non-private memory is similar enough."""
        return await run(lambda a: a.verify(pattern_id))

    @mcp.tool(title="Vote on a federated pattern", annotations=FED_WRITE)
    async def federation_vote(
        pattern_id: Annotated[str, Field(description="Id of a released pattern, e.g. 'p-12'.")],
        up: Annotated[bool, Field(description="True: useful, good quality; false: poor.")],
    ) -> VoteResult:
        """Rate the quality of a released pattern (one vote per pattern; a new vote replaces it)."""
        return await run(lambda a: a.vote(pattern_id, up))

    @mcp.tool(title="Leave the federation",
              annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                          open_world_hint=True))
    async def federation_leave(
        force: Annotated[bool, Field(description="Forget the membership locally even if the coordinator "
                                                 "cannot be reached.")] = False,
    ) -> LeaveResult:
        """Delete all of this instance's contributions from the federation, then forget the
        federation key and membership. Only when the user asks to leave."""
        return await run(lambda a: a.leave(force=force))

    @mcp.tool(title="Federation auto-sync",
              annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                          open_world_hint=True))
    async def federation_auto_sync(
        enabled: Annotated[bool, Field(description="Turn background sync on or off (persisted).")],
        interval_minutes: Annotated[float, Field(description="Minutes between syncs.")] = 15,
        contribute_on_sync: Annotated[bool, Field(description="Contribute when there are new patterns.")] = True,
        query_on_sync: Annotated[bool, Field(description="Fetch newly released patterns into the local cache.")] = True,
    ) -> AutoSyncSettings:
        """Sync with the federation in the background while this server runs."""
        return await run(lambda a: a.set_auto_sync(enabled, interval_minutes=interval_minutes,
                                                   contribute_on_sync=contribute_on_sync, query_on_sync=query_on_sync))

    @mcp.tool(title="Preview shareable patterns",
              annotations=LOCAL_READ)
    async def preview_patterns(
        min_confidence: Annotated[float, Field(description="Only patterns at least this confident (0-1).")] = 0.0,
        exclude_ids: Annotated[list[int] | None, Field(description="Memory ids to hold back.")] = None,
    ) -> PatternPreview:
        """The anonymised patterns (scrubbed statements and key phrases) this memory would yield
        for a federation, and which memories were held back. Local only: nothing is sent."""
        return await run(lambda a: a.preview(min_confidence=min_confidence, exclude=exclude_ids or ()))

    @mcp.resource("memory://stats", name="stats", title="Memory statistics", mime_type="application/json")
    async def stats_resource() -> str:
        """Current statistics of the memory store."""
        stats = await run(lambda a: a.stats())
        return stats.model_dump_json(indent=2)

    @mcp.resource("memory://recent", name="recent", title="Recent memories", mime_type="application/json")
    async def recent_resource() -> str:
        """The 20 most recent memories."""
        page = await run(lambda a: a.list(limit=20))
        return json.dumps([m.model_dump(mode="json") for m in page.memories], indent=2, ensure_ascii=False)

    return mcp
