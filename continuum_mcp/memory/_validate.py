"""Input checks of the memory core: bad input gets a precise :class:`InvalidInput` and changes nothing."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from continuum_mcp.config import Settings
from continuum_mcp.errors import InvalidInput
from continuum_mcp.memory.models import Filters, MemoryInput

MAX_TAG_CHARS = 64
MAX_ID = 2**63 - 1  # SQLite's INTEGER PRIMARY KEY range
_TAG_RE = re.compile(r"^[\w][\w\-:./+#]*$", re.UNICODE)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_INVISIBLE = {"Cc", "Cf", "Zs", "Zl", "Zp", "Cn", "Co"}


def normalize_text(text: str) -> str:
    """What counts as 'the same text' for exact de-duplication."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def content_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def ts(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def now() -> float:
    return datetime.now(timezone.utc).timestamp()


def dt(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, tz=timezone.utc)


def make_input(**fields: Any) -> MemoryInput:
    """Build a :class:`MemoryInput`, turning pydantic's complaints into :class:`InvalidInput`."""
    try:
        return MemoryInput.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "input"
        raise InvalidInput(f"{where}: {err['msg']}") from exc


def check_id(memory_id: object) -> int:
    """Ids are plain integers in SQLite's range; a bool or a numeric string is not an id."""
    if isinstance(memory_id, bool) or not isinstance(memory_id, int):
        raise InvalidInput(f"memory id must be an integer, got {type(memory_id).__name__}")
    if not 1 <= memory_id <= MAX_ID:
        raise InvalidInput(f"memory id {memory_id} is out of range (1 to {MAX_ID})")
    return memory_id


def clean_text(text: object, settings: Settings, what: str = "text") -> str:
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a string, got {type(text).__name__}")
    if _SURROGATE_RE.search(text):
        raise InvalidInput(f"{what} contains an unpaired surrogate (broken Unicode); send valid UTF-8 text")
    stripped = text.strip()
    if not stripped:
        raise InvalidInput(f"{what} is empty: give the thing to remember as non-blank text")
    # The first character decides for nearly every text (a visible one ends the check).
    if unicodedata.category(stripped[0]) in _INVISIBLE and all(unicodedata.category(ch) in _INVISIBLE for ch in stripped):
        raise InvalidInput(f"{what} has only invisible (zero-width or control) characters: it is empty")
    if len(stripped) > settings.max_text_chars:
        raise InvalidInput(f"{what} is {len(stripped)} characters; the limit is "
                           f"{settings.max_text_chars}. Split it into smaller memories.")
    return stripped


def clean_tags(tags: object, settings: Settings) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str) or not isinstance(tags, (list, tuple)):
        raise InvalidInput("tags must be a list of strings")
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidInput(f"every tag must be a string, got {type(tag).__name__}")
        t = tag.strip().lower()
        if not t or len(t) > MAX_TAG_CHARS or not _TAG_RE.match(t):
            raise InvalidInput(f"invalid tag {tag!r}: use 1-{MAX_TAG_CHARS} letters, digits or "
                               "- _ : . / + #, starting with a letter or digit, no spaces")
        if t not in out:
            out.append(t)
    if len(out) > settings.max_tags:
        raise InvalidInput(f"{len(out)} tags given; at most {settings.max_tags} are allowed")
    return out


def clean_metadata(metadata: object, settings: Settings) -> str:
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be a JSON object (a dict)")
    if not metadata:
        return "{}"
    try:
        blob = json.dumps(metadata, sort_keys=True, ensure_ascii=False, allow_nan=False)
        blob.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"metadata must be JSON-serialisable: {exc}") from exc
    if len(blob.encode()) > settings.max_metadata_bytes:
        raise InvalidInput(f"metadata is {len(blob.encode())} bytes as JSON; the limit is "
                           f"{settings.max_metadata_bytes}")
    return blob


def clean_filters(filters: Filters | None, settings: Settings) -> Filters:
    f = filters or Filters()
    f = Filters(tags_any=clean_tags(f.tags_any, settings), tags_all=clean_tags(f.tags_all, settings),
                since=f.since, until=f.until)
    if f.since and f.until and ts(f.since) > ts(f.until):  # type: ignore[operator]
        raise InvalidInput("since is after until: the time range is empty")
    return f


def clean_input(item: MemoryInput, settings: Settings) -> dict[str, Any]:
    """A validated row (times as epoch seconds, tags normalised, metadata as JSON)."""
    text = clean_text(item.text, settings)
    source = item.source
    if source is not None and (not isinstance(source, str) or len(source) > 200):
        raise InvalidInput("source must be a string of at most 200 characters")
    supersedes = check_id(item.supersedes) if item.supersedes is not None else None
    return {"text": text, "tags": clean_tags(item.tags, settings), "metadata": clean_metadata(item.metadata, settings),
            "source": source, "created_at": ts(item.created_at), "updated_at": ts(item.updated_at),
            "supersedes": supersedes}
