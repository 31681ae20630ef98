"""Local long-term memory: the store (write path, lifecycle), recall (search, fusion), JSONL
import/export, and the models every adapter returns.

Names load on first use (PEP 562): the models are light, but the store pulls numpy and FAISS,
which an MCP handshake should not wait for.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "same_facts": "facts",
    **{name: "models" for name in (
        "Filters", "ForgetResult", "ImportResult", "Memory", "MemoryInput", "MemoryPage", "OnDuplicate", "Progress",
        "RecallHit", "RecallResult", "RememberResult", "SearchMode", "StoreStats")},
    "DB_FILE": "store", "MemoryStore": "store", "open_store": "store",
    "VectorIndex": "vector_index",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
