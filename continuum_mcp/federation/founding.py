"""Founding a federation: the founder's federation key, kept on the founder's machine, and invites.

Why here and not in the coordinator: the coordinator must never hold the federation key (it
would read every pattern). The founder makes the key once, keeps it in a 0600 file, and turns the
coordinator's single-use admission tokens into full invites
(``continuum-invite:v1:<public part>#<key>``); only the public part ever reaches the coordinator,
when a member joins with it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from continuum_mcp._sqlite import atomic_write
from continuum_mcp.crypto.cipher import Invite, generate_federation_key
from continuum_mcp.errors import Conflict, InvalidInput, NotFound

#: Under the founder's data directory: one file per federation founded there.
FOUNDER_DIR = "founder"


class FoundedFederation(BaseModel):
    """What the founder keeps: where the coordinator is, which federation, and its key."""

    federation_id: str = Field(min_length=1, max_length=128)
    coordinator_url: str
    federation_key_b64: str = Field(repr=False, description="the 32-byte key, base64; never sent anywhere")
    created_at: datetime

    @property
    def federation_key(self) -> bytes:
        return base64.b64decode(self.federation_key_b64)


def founder_file(data_dir: Path, federation_id: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", federation_id):
        raise InvalidInput(f"federation id {federation_id!r}: use letters, digits, '.', '_' or '-'")
    return data_dir / FOUNDER_DIR / f"{federation_id}.json"


def found_federation(data_dir: Path, coordinator_url: str, federation_id: str) -> tuple[FoundedFederation, Path]:
    """Make and keep (0600) a new federation key; refuses to replace an existing one (Conflict),
    since every invite already given out carries the old key."""
    path = founder_file(data_dir, federation_id)
    if path.exists():
        raise Conflict(f"a federation {federation_id!r} was already founded here ({path}); its invites carry "
                       "that key, so it is not replaced. Mint more with `continuum-mcp federation invite`.")
    key = generate_federation_key()
    Invite.build(coordinator_url, federation_id, "check", key)  # validates the URL and id (InvalidInput)
    record = FoundedFederation(federation_id=federation_id, coordinator_url=coordinator_url.rstrip("/"),
                               federation_key_b64=base64.b64encode(key).decode("ascii"),
                               created_at=datetime.now(UTC))
    atomic_write(path, record.model_dump_json(indent=2).encode("utf-8"), mode=0o600)
    return record, path


def founded(data_dir: Path, federation_id: str | None = None) -> FoundedFederation:
    """The federation founded in ``data_dir`` (the only one, or the one named)."""
    folder = data_dir / FOUNDER_DIR
    if federation_id is None:
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if len(files) != 1:
            raise NotFound("no federation was founded with this data dir; found one with `continuum-mcp federation "
                           "create`" if not files else
                           f"{len(files)} federations were founded here; name one with --federation-id "
                           f"({', '.join(f.stem for f in files)})")
        path = files[0]
    else:
        path = founder_file(data_dir, federation_id)
        if not path.is_file():
            raise NotFound(f"no federation {federation_id!r} was founded with this data dir ({path} is missing)")
    try:
        return FoundedFederation.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        raise InvalidInput(f"{path} is not a founder file ({exc})") from exc


def mint_invites(federation: FoundedFederation, admission_tokens: Sequence[str]) -> list[str]:
    """One full invite string per admission token (each token admits one instance once)."""
    return [Invite.build(federation.coordinator_url, federation.federation_id, t, federation.federation_key).format()
            for t in admission_tokens]


__all__ = ["FOUNDER_DIR", "FoundedFederation", "found_federation", "founded", "founder_file", "mint_invites"]
