"""The founder's side of a federation: the federation key is made and kept here, never at the coordinator.

Why a separate role: whoever holds the federation key can read every released phrase and
statement, and whoever runs the coordinator can mint admission tokens (fake identities). One
party doing both can add sybils *and* read what they help release; so by default they are
separate. The operator mints an admission token (``coordinator invite`` or the admin route) and
hands it to the founder; the founder turns it into a full invite locally with
:meth:`Founder.invite` and gives that to the new member. The invite's key part comes after the
``#`` and the client sends only :meth:`Invite.public_part`, so the key never reaches the
coordinator. See docs/threat-model.md for what an operator who is also a member can see.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from continuum_mcp._sqlite import atomic_write
from continuum_mcp.crypto.cipher import FEDERATION_KEY_BYTES, Invite, InvitePublic, generate_federation_key
from continuum_mcp.crypto.identity import b64decode, b64encode
from continuum_mcp.errors import Conflict, CryptoError, InvalidInput, NotFound

#: Under the founder's data directory: one founder file per federation founded there.
FOUNDER_DIR = "founder"


class _FounderFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: int = 1
    federation_id: str = Field(min_length=1, max_length=128)
    coordinator_url: str
    federation_key_b64: str


class Founder:
    """The holder of one federation's key: creates it, stores it (0600), and mints invites."""

    def __init__(self, federation_id: str, coordinator_url: str, federation_key: bytes) -> None:
        if len(federation_key) != FEDERATION_KEY_BYTES:
            raise InvalidInput("a federation key has 32 bytes")
        try:  # the same checks an invite's public part gets
            public = InvitePublic(coordinator_url=coordinator_url, federation_id=federation_id, admission_token="-")
        except ValidationError as exc:
            raise InvalidInput(f"invalid federation: {exc.errors()[0]['msg']}") from exc
        self.federation_id, self.coordinator_url = public.federation_id, public.coordinator_url
        self._key = federation_key

    def __repr__(self) -> str:  # never print the key
        return f"Founder({self.federation_id!r} at {self.coordinator_url})"

    @classmethod
    def create(cls, federation_id: str, coordinator_url: str) -> Founder:
        """A new federation key from the OS CSPRNG, made on the founder's machine."""
        return cls(federation_id, coordinator_url, generate_federation_key())

    def invite(self, admission_token: str) -> str:
        """The full invite string (``continuum-invite:v1:...#key``) for one admission token the
        operator minted; made locally, nothing is sent anywhere."""
        return Invite.build(self.coordinator_url, self.federation_id, admission_token, self._key).format()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the founder file atomically with mode 0600 (it holds the federation key)."""
        data = _FounderFile(federation_id=self.federation_id, coordinator_url=self.coordinator_url,
                            federation_key_b64=b64encode(self._key))
        out = Path(path)
        atomic_write(out, data.model_dump_json(indent=2).encode("utf-8"), mode=0o600)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Founder:
        p = Path(path)
        try:
            data = _FounderFile.model_validate_json(p.read_bytes())
        except (OSError, ValidationError) as exc:
            raise CryptoError(f"founder file {p} is unreadable or corrupt") from exc
        if p.stat().st_mode & 0o077:
            raise CryptoError(f"founder file {p} is readable by others (chmod 600 it): it holds the federation key")
        key = b64decode(data.federation_key_b64, what="federation key", length=FEDERATION_KEY_BYTES)
        return cls(data.federation_id, data.coordinator_url, key)


def founder_file(data_dir: Path, federation_id: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", federation_id):
        raise InvalidInput(f"federation id {federation_id!r}: use letters, digits, '.', '_' or '-'")
    return data_dir / FOUNDER_DIR / f"{federation_id}.json"


def found_federation(data_dir: Path, coordinator_url: str, federation_id: str) -> tuple[Founder, Path]:
    """Make and keep (0600) a new federation key in ``data_dir``; refuses to replace an existing
    one (Conflict), since every invite already given out carries the old key."""
    path = founder_file(data_dir, federation_id)
    if path.exists():
        raise Conflict(f"a federation {federation_id!r} was already founded here ({path}); its invites carry "
                       "that key, so it is not replaced. Mint more with `continuum-mcp federation invite`.")
    founder = Founder.create(federation_id, coordinator_url.rstrip("/"))
    return founder, founder.save(path)


def founded(data_dir: Path, federation_id: str | None = None) -> Founder:
    """The federation founded in ``data_dir`` (the only one, or the one named)."""
    folder = data_dir / FOUNDER_DIR
    if federation_id is None:
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if len(files) != 1:
            raise NotFound("no federation was founded with this data dir; found one with `continuum-mcp federation "
                           "create`" if not files else
                           f"{len(files)} federations were founded here; name one with --federation-id "
                           f"({', '.join(f.stem for f in files)})")
        return Founder.load(files[0])
    path = founder_file(data_dir, federation_id)
    if not path.is_file():
        raise NotFound(f"no federation {federation_id!r} was founded with this data dir ({path} is missing)")
    return Founder.load(path)


def mint_invites(founder: Founder, admission_tokens: Sequence[str]) -> list[str]:
    """One full invite string per admission token (each token admits one instance once)."""
    return [founder.invite(t) for t in admission_tokens]


__all__ = ["FOUNDER_DIR", "Founder", "found_federation", "founded", "founder_file", "mint_invites"]
