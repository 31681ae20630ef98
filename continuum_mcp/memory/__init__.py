"""Local long-term memory: the store (write path, lifecycle), recall (search, fusion), JSONL
import/export, and the models every adapter returns."""

from continuum_mcp.memory.facts import same_facts
from continuum_mcp.memory.models import (
    Filters, ForgetResult, ImportResult, Memory, MemoryInput, MemoryPage, OnDuplicate, Progress, RecallHit,
    RecallResult, RememberResult, SearchMode, StoreStats,
)
from continuum_mcp.memory.store import DB_FILE, MemoryStore, open_store
from continuum_mcp.memory.vector_index import VectorIndex

__all__ = [
    "DB_FILE", "Filters", "ForgetResult", "ImportResult", "Memory", "MemoryInput", "MemoryPage", "MemoryStore",
    "OnDuplicate", "Progress", "RecallHit", "RecallResult", "RememberResult", "SearchMode", "StoreStats",
    "VectorIndex", "open_store", "same_facts",
]
