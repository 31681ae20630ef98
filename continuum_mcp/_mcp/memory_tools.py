"""The memory tools, resources and prompts: each tool is one ``Continuum`` call in a worker thread."""


import json
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from pydantic import Field

from continuum_mcp._mcp import args as a
from continuum_mcp.app import Continuum
from continuum_mcp.config import Settings
from continuum_mcp.memory.models import MAX_K, Memory, OnDuplicate, RecallResult, RememberResult, SearchMode
from continuum_mcp.memory.models import Filters, ForgetResult, MemoryPage, StoreStats

T = TypeVar("T")
Run = Callable[[Callable[[Continuum], T]], Coroutine[Any, Any, T]]

#: Tool hints: local tools touch nothing outside this machine.
LOCAL_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
LOCAL_ADD = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
LOCAL_EDIT = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)


class RememberAnswer(RememberResult):
    """The store's answer plus one sentence telling the assistant what to do about it."""

    hint: str


class RecallAnswer(RecallResult):
    """Recall hits; ``federated`` (only with include_federated) holds released patterns, not memories."""

    federated: list[dict[str, Any]] | None = None


def _quote(m: Memory) -> str:
    return repr(m.text if len(m.text) <= 80 else m.text[:77] + "...")


def remember_hint(r: RememberResult, earlier: Memory | None) -> str:
    """What the status means for this call, with the ids to act on."""
    mid = r.memory.id
    if r.status == "updated" and r.updates is not None:
        old = f"memory {r.updates}" + (f" ({_quote(earlier)})" if earlier is not None else "")
        return (f"Stored as memory {mid}, a newer version of {old}: same subject, different facts. Both are kept and "
                f"{mid} ranks first; if {r.updates} is simply wrong now, confirm with the user and forget it.")
    if r.status == "duplicate":
        return (f"Already stored as memory {mid}; nothing new was stored. Pass on_duplicate='store' to keep a "
                "separate copy on purpose.")
    if r.status == "near_duplicate":
        return (f"Memory {mid} already says this with the same facts (similarity {r.similarity}); nothing new was "
                f"stored. Use update_memory({mid}) to reword it, or on_duplicate='store' to keep both.")
    return f"Stored as memory {mid}."


def register_memory_tools(mcp: MCPServer[Any], run: Run, settings: Settings) -> None:
    """remember, recall, forget, update_memory, list_memories, memory_stats and two resources."""
    Text, Tags = a.text(settings), a.tags(settings)
    Metadata = dict[str, Any] | None

    @mcp.tool(title="Remember", annotations=LOCAL_ADD)
    async def remember(
        text: Annotated[Text, Field(description="The fact, preference or note to keep, as one self-contained "
                                                "statement.")],
        tags: Annotated[Tags, Field(max_length=settings.max_tags, description="Short labels, e.g. ['work']. "
                                    "Tag 'private' to keep it out of any federation.")] = None,
        metadata: Annotated[Metadata, Field(description="Optional JSON object stored with the memory.")] = None,
        at: Annotated[datetime | None, Field(description="When it happened or was said (ISO 8601), if not "
                                                         "now; time filters of recall use it.")] = None,
        on_duplicate: Annotated[OnDuplicate, Field(description="'merge' (default): a restatement returns the "
                                                               "existing memory; 'store': keep a copy anyway.")] = "merge",
        supersedes: Annotated[a.MemoryId | None, Field(description="Id of the memory this one replaces "
                                                                   "(it stays stored, ranked below).")] = None,
    ) -> RememberAnswer:
        """Store a memory. A restatement of an existing memory (same facts) is not stored twice
        (status duplicate/near_duplicate, duplicate_of); a new version of an earlier memory (same
        subject, other facts) is stored and linked (status updated, updates). `hint` says what to do."""
        def go(app: Continuum) -> RememberAnswer:
            r = app.remember(text, tags=tags, metadata=metadata, source="mcp", at=at, on_duplicate=on_duplicate,
                             supersedes=supersedes)
            earlier = app.get(r.updates) if r.updates is not None else None
            return RememberAnswer(**dict(r), hint=remember_hint(r, earlier))
        return await run(go)

    @mcp.tool(title="Recall", annotations=LOCAL_READ)
    async def recall(
        query: Annotated[Text, Field(description="What to look for, in natural language or keywords.")],
        k: Annotated[a.count(1, MAX_K), Field(description="How many memories at most.")] = 5,
        mode: Annotated[SearchMode, Field(description="hybrid: meaning and keywords; semantic: meaning; "
                                                      "keyword: exact words.")] = "hybrid",
        tags_any: Annotated[Tags, Field(description="Only memories with one of these tags.")] = None,
        tags_all: Annotated[Tags, Field(description="Only memories with all of these tags.")] = None,
        since: Annotated[datetime | None, Field(description="Only memories from this ISO time on.")] = None,
        until: Annotated[datetime | None, Field(description="Only memories up to this ISO time.")] = None,
        min_score: Annotated[a.number(-1.0) | None, Field(description="Drop hits whose cosine similarity "
                                                                      "(BM25 in keyword mode) is lower.")] = None,
        include_federated: Annotated[a.Flag, Field(description="Also list matching released federation "
                                                               "patterns under 'federated'.")] = False,
    ) -> RecallAnswer:
        """Search the user's memories, best first. no_good_match=true means nothing is really about
        the query: say so rather than answer from the hits. A hit with superseded_by is an older
        version of another memory (its supersedes names what it updates)."""
        filters = Filters(tags_any=tags_any or [], tags_all=tags_all or [], since=since, until=until)

        def go(app: Continuum) -> RecallAnswer:
            r = app.recall(query, k=k, mode=mode, filters=filters, min_score=min_score,
                           include_federated=include_federated)
            fed = None if r.federated is None else [p.model_dump(mode="json") for p in r.federated]
            return RecallAnswer(query=r.query, mode=r.mode, hits=r.hits, no_good_match=r.no_good_match, federated=fed)
        return await run(go)

    @mcp.tool(title="Forget", annotations=LOCAL_EDIT)
    async def forget(
        ids: Annotated[list[a.MemoryId], Field(description="Ids of the memories to delete for good.")],
    ) -> ForgetResult:
        """Permanently delete memories. All or nothing: if any id is unknown, none is deleted."""
        return await run(lambda app: app.forget(ids))

    @mcp.tool(title="Update memory", annotations=LOCAL_EDIT)
    async def update_memory(
        id: Annotated[a.MemoryId, Field(description="Id of the memory to change.")],
        text: Annotated[Text | None, Field(description="New text (replaces the old; re-indexed).")] = None,
        tags: Annotated[Tags, Field(max_length=settings.max_tags, description="New tags (replace the old).")] = None,
        metadata: Annotated[Metadata, Field(description="New metadata (replaces the old).")] = None,
    ) -> Memory:
        """Correct or re-tag a memory in place. Fields left out stay as they are."""
        return await run(lambda app: app.update(id, text=text, tags=tags, metadata=metadata))

    @mcp.tool(title="List memories", annotations=LOCAL_READ)
    async def list_memories(
        tags_any: Annotated[Tags, Field(description="Only memories with one of these tags.")] = None,
        tags_all: Annotated[Tags, Field(description="Only memories with all of these tags.")] = None,
        since: Annotated[datetime | None, Field(description="From this ISO time on.")] = None,
        until: Annotated[datetime | None, Field(description="Up to this ISO time.")] = None,
        offset: Annotated[a.count(0), Field(description="How many to skip (paging).")] = 0,
        limit: Annotated[a.count(1, 1000), Field(description="How many to return.")] = 20,
    ) -> MemoryPage:
        """Browse memories newest first, with optional tag and time filters."""
        filters = Filters(tags_any=tags_any or [], tags_all=tags_all or [], since=since, until=until)
        return await run(lambda app: app.list(filters, offset=offset, limit=limit))

    @mcp.tool(title="Memory statistics", annotations=LOCAL_READ)
    async def memory_stats() -> StoreStats:
        """How many memories there are, top tags, time span, model and storage size."""
        return await run(lambda app: app.stats())

    @mcp.resource("memory://stats", name="stats", title="Memory statistics", mime_type="application/json")
    async def stats_resource() -> str:
        """Current statistics of the memory store."""
        return (await run(lambda app: app.stats())).model_dump_json(indent=2)

    @mcp.resource("memory://recent", name="recent", title="Recent memories", mime_type="application/json")
    async def recent_resource() -> str:
        """The 20 most recent memories."""
        page = await run(lambda app: app.list(limit=20))
        return json.dumps([m.model_dump(mode="json") for m in page.memories], indent=2, ensure_ascii=False)


__all__ = ["LOCAL_ADD", "LOCAL_EDIT", "LOCAL_READ", "RecallAnswer", "RememberAnswer", "Run", "register_memory_tools",
           "remember_hint"]
