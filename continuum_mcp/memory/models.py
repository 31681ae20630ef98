"""Pydantic models shared by the core and its adapters."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SearchMode = Literal["semantic", "keyword", "hybrid"]


class Memory(BaseModel):
    """One stored memory, as every adapter returns it."""

    model_config = ConfigDict(frozen=True)

    id: int = Field(description="Stable numeric id of the memory.")
    text: str
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    created_at: datetime
    updated_at: datetime
    content_hash: str = Field(description="SHA-256 of the normalised text.")
