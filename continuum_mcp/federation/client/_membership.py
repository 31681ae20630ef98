"""membership.json: who this instance is in which federation. It holds the federation key, so
it is written atomically with mode 0600 and never sent anywhere."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from continuum_mcp._sqlite import atomic_write
from continuum_mcp.crypto.cipher import FederationCipher
from continuum_mcp.crypto.identity import b64decode
from continuum_mcp.errors import NotJoined
from continuum_mcp.federation.client._models import FederationStateError, Membership

MEMBERSHIP_FILE = "membership.json"


class MembershipFile:
    """Read, replace and forget the membership record; one writer at a time (``lock``)."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / MEMBERSHIP_FILE
        self.lock = threading.RLock()

    def load(self) -> Membership | None:
        if not self.path.exists():
            return None
        try:
            return Membership.model_validate_json(self.path.read_bytes())
        except ValidationError as exc:
            raise FederationStateError(f"{self.path} is unreadable: {exc.errors()[0]['msg']}") from exc

    def require(self) -> Membership:
        m = self.load()
        if m is None:
            raise NotJoined("this instance has not joined a federation; use federation_join with an invite")
        return m

    def save(self, m: Membership) -> None:
        with self.lock:
            atomic_write(self.path, m.model_dump_json(indent=2).encode("utf-8"), mode=0o600)

    def update(self, **changes: Any) -> Membership:
        with self.lock:
            m = self.require().model_copy(update=changes)
            self.save(m)
            return m

    def forget(self) -> None:
        with self.lock:
            self.path.unlink(missing_ok=True)


def cipher_of(m: Membership) -> FederationCipher:
    """The end-to-end cipher of the member's federation (the key never leaves this machine)."""
    return FederationCipher(b64decode(m.federation_key_b64, what="federation key", length=32), m.federation_id)
