"""Strict argument types of the tools, with the documented limits in their schemas.

Strict: a JSON string or a boolean is never coerced to an id, a count or a flag (pydantic's lax
mode would turn ``"1"`` and ``true`` into memory 1). Numbers are finite. The limits come from
:class:`~continuum_mcp.config.Settings` and the core's constants, so the schema says what the
core enforces; the core checks again.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

from continuum_mcp.config import Settings
from continuum_mcp.memory._validate import MAX_ID, MAX_TAG_CHARS

Flag = StrictBool
MemoryId = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]


def count(lo: int, hi: int | None = None) -> Any:
    return Annotated[StrictInt, Field(ge=lo, le=hi)]


def number(lo: float | None = None, hi: float | None = None) -> Any:
    return Annotated[StrictFloat, Field(ge=lo, le=hi, allow_inf_nan=False)]


def text(settings: Settings) -> Any:
    return Annotated[StrictStr, Field(max_length=settings.max_text_chars)]  # emptiness: the core says it better


def tags(settings: Settings) -> Any:
    return list[Annotated[StrictStr, Field(min_length=1, max_length=MAX_TAG_CHARS)]] | None
