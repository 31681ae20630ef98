"""Cryptography of the federation: who an instance is, how it signs, how replays are refused,
how federation content is encrypted, and how secrets are shared.

- :mod:`.identity`: the Ed25519 key pair of an instance and its key file.
- :mod:`.signing`: canonical JSON, the signed :class:`Envelope`, the :class:`Verifier`.
- :mod:`.replay`: in-memory and durable (SQLite file, or any database of `_db`) replay guards.
- :mod:`.cipher`: the federation key, invites and the AEAD helpers.
- :mod:`.shamir`: Shamir secret sharing over GF(2^31 - 1).

The names below are imported on first use (PEP 562): importing one module (say ``identity``)
does not load the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME: dict[str, str] = {
    **dict.fromkeys(("FederationCipher", "Invite", "InvitePublic", "aead_decrypt", "aead_encrypt", "derive_key",
                     "encode_context", "generate_federation_key"), "cipher"),
    "Identity": "identity",
    **dict.fromkeys(("DatabaseReplayGuard", "MemoryReplayGuard", "ReplayGuard", "SQLiteReplayGuard"), "replay"),
    **dict.fromkeys(("Reconstructor", "ShamirDealer", "Share", "reconstruct_secret", "split_secret"), "shamir"),
    **dict.fromkeys(("Envelope", "Verifier", "b64decode", "b64encode", "canonical_json", "derive_instance_id",
                     "verify_signature_only"), "signing"),
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
