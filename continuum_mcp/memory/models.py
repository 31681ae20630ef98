"""Pydantic models at the memory store's boundary, shared by the core and its adapters."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: the most hits one recall returns (a boundary limit: the MCP schema and the store share it).
MAX_K = 100

SearchMode = Literal["semantic", "keyword", "hybrid"]
OnDuplicate = Literal["merge", "store"]
Progress = Callable[[int, int], None]


class Memory(BaseModel):
    """One stored memory, as every adapter returns it."""

    model_config = ConfigDict(frozen=True)

    id: int = Field(description="Stable numeric id of the memory.")
    text: str
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    created_at: datetime = Field(description="When the memory happened or was said (remember(at=...)), else when stored.")
    updated_at: datetime
    content_hash: str = Field(description="SHA-256 of the normalised text.")
    supersedes: int | None = Field(
        default=None, description="Id of the earlier memory this one updates or contradicts (it stays stored).")
    superseded_by: int | None = Field(
        default=None, description="Id of the newest memory that updates this one; None if this is current.")


class MemoryInput(BaseModel):
    """What a caller supplies to remember something."""

    text: str
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    supersedes: int | None = Field(default=None, description="Kept on import so update links survive.")


class RememberResult(BaseModel):
    status: Literal["created", "updated", "duplicate", "near_duplicate"] = Field(
        description="created: stored anew; updated: stored anew as a newer version of `updates` "
                    "(same subject, different facts: confirm with the user or forget the old one); "
                    "duplicate: the same text was already stored; near_duplicate: an existing memory "
                    "says the same thing with the same facts (numbers, dates, names, negation), so "
                    "nothing new was stored.")
    memory: Memory
    similarity: float | None = Field(default=None, description="Cosine to the related existing memory.")
    duplicate_of: int | None = Field(default=None, description="The existing memory returned instead of a copy.")
    updates: int | None = Field(default=None, description="The earlier memory this new one updates or contradicts.")


class RecallHit(BaseModel):
    memory: Memory
    score: float = Field(description="The mode's ranking score: cosine (semantic), BM25 (keyword), "
                                     "fused (hybrid: cosine plus a bounded keyword boost).")
    similarity: float | None = Field(
        description="Cosine similarity between the query and this memory (None in keyword mode, "
                    "which does not embed the query).")


class RecallResult(BaseModel):
    query: str
    mode: SearchMode
    hits: list[RecallHit]
    no_good_match: bool = Field(
        default=False, description="True when no hit is really about the query (every cosine below the "
                                   "store's relevance floor, or no keyword match): say so instead of "
                                   "using the hits as an answer.")


class MemoryPage(BaseModel):
    memories: list[Memory]
    total: int = Field(description="How many memories match the filters in all.")
    offset: int
    limit: int


class ForgetResult(BaseModel):
    deleted: list[int]


class StoreStats(BaseModel):
    count: int
    data_dir: str
    model_id: str
    dim: int
    model_loaded: bool
    oldest: datetime | None
    newest: datetime | None
    top_tags: dict[str, int]
    sources: dict[str, int]
    index_kind: str
    db_bytes: int


class ImportResult(BaseModel):
    read: int
    created: int
    duplicates: int
    reembedded: bool


class Filters(BaseModel):
    """Filters shared by list and recall (``since``/``until`` bound the memory's own time)."""

    tags_any: list[str] = Field(default_factory=list)
    tags_all: list[str] = Field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None


__all__ = ["Filters", "ForgetResult", "ImportResult", "Memory", "MemoryInput", "MemoryPage", "OnDuplicate",
           "Progress", "RecallHit", "RecallResult", "RememberResult", "SearchMode", "StoreStats"]
