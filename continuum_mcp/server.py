"""The MCP adapter: tools and resources over the memory store, on the mcp 2.x ``MCPServer`` API.

Each tool validates nothing itself beyond what its signature says: the store checks every
argument and raises typed errors, which become MCP tool errors here. Blocking work runs in a
worker thread so the event loop keeps answering (``tools/list`` never waits for the model).
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from continuum_mcp import __version__
from continuum_mcp.config import Settings
from continuum_mcp.errors import ContinuumError
from continuum_mcp.models import Memory, SearchMode
from continuum_mcp.store import (
    Filters, ForgetResult, MemoryPage, MemoryStore, RecallResult, RememberResult, StoreStats, open_store,
)
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
"""


class StoreHolder:
    """Opens the store on first use and closes it with the server; one per server, not global."""

    def __init__(self, settings: Settings, embedder: Embedder | None) -> None:
        self._settings, self._embedder = settings, embedder
        self._store: MemoryStore | None = None
        self._lock = threading.Lock()

    def get(self) -> MemoryStore:
        with self._lock:
            if self._store is None:
                self._store = open_store(self._settings, self._embedder, load_delay=MODEL_LOAD_DELAY)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    async def run(self, fn: Callable[[MemoryStore], T]) -> T:
        """Run a store call in a worker thread and turn core errors into tool errors."""
        try:
            return await anyio.to_thread.run_sync(lambda: fn(self.get()))
        except ContinuumError as exc:
            raise ToolError(f"{exc.code}: {exc.message}") from exc


def build_server(settings: Settings, embedder: Embedder | None = None) -> MCPServer[StoreHolder]:
    """An MCP server over the memory in ``settings.data_dir``."""
    holder = StoreHolder(settings, embedder)

    @asynccontextmanager
    async def lifespan(_: MCPServer[StoreHolder]) -> AsyncIterator[StoreHolder]:
        # Opening SQLite is quick; the model keeps loading in the background meanwhile.
        await anyio.to_thread.run_sync(holder.get)
        try:
            yield holder
        finally:
            await anyio.to_thread.run_sync(holder.close)

    mcp: MCPServer[StoreHolder] = MCPServer(
        name="continuum-mcp", title="Continuum memory", version=__version__, instructions=INSTRUCTIONS,
        lifespan=lifespan, log_level="WARNING")

    @mcp.tool(
        title="Remember",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                    open_world_hint=False))
    async def remember(
        text: Annotated[str, Field(description="The fact, preference or note to keep, as one self-contained statement.")],
        tags: Annotated[list[str] | None, Field(description="Short labels, e.g. ['work', 'project-x']. "
                                                         "Tag 'private' to keep it out of any federation.")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="Optional JSON object stored with the memory.")] = None,
    ) -> RememberResult:
        """Store a memory for later recall. If the same or a nearly identical memory already
        exists, it is returned instead of a copy (status 'duplicate' or 'near_duplicate')."""
        return await holder.run(lambda s: s.remember(text, tags=tags, metadata=metadata, source="mcp"))

    @mcp.tool(
        title="Recall",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
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
    ) -> RecallResult:
        """Search the user's memories by meaning and keywords; best matches first."""
        filters = Filters(tags_any=tags_any or [], tags_all=tags_all or [], since=since, until=until)
        return await holder.run(lambda s: s.recall(query, k=k, mode=mode, filters=filters, min_score=min_score))

    @mcp.tool(
        title="Forget",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                    open_world_hint=False))
    async def forget(
        ids: Annotated[list[int], Field(description="Ids of the memories to delete for good.")],
    ) -> ForgetResult:
        """Permanently delete memories. All or nothing: if any id is unknown, none is deleted."""
        return await holder.run(lambda s: s.forget(ids))

    @mcp.tool(
        title="Update memory",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                    open_world_hint=False))
    async def update_memory(
        id: Annotated[int, Field(description="Id of the memory to change.")],
        text: Annotated[str | None, Field(description="New text (replaces the old; re-indexed).")] = None,
        tags: Annotated[list[str] | None, Field(description="New tags (replace the old ones).")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="New metadata (replaces the old).")] = None,
    ) -> Memory:
        """Correct or re-tag an existing memory. Fields left out stay as they are."""
        return await holder.run(lambda s: s.update(id, text=text, tags=tags, metadata=metadata))

    @mcp.tool(
        title="List memories",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
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
        return await holder.run(lambda s: s.list(filters, offset=offset, limit=limit))

    @mcp.tool(
        title="Memory statistics",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def memory_stats() -> StoreStats:
        """How many memories there are, top tags, time span, model and storage size."""
        return await holder.run(lambda s: s.stats())

    @mcp.resource("memory://stats", name="stats", title="Memory statistics", mime_type="application/json")
    async def stats_resource() -> str:
        """Current statistics of the memory store."""
        stats = await holder.run(lambda s: s.stats())
        return stats.model_dump_json(indent=2)

    @mcp.resource("memory://recent", name="recent", title="Recent memories", mime_type="application/json")
    async def recent_resource() -> str:
        """The 20 most recent memories."""
        page = await holder.run(lambda s: s.list(limit=20))
        return json.dumps([m.model_dump(mode="json") for m in page.memories], indent=2, ensure_ascii=False)

    return mcp
