"""Cryptography of the federation: who an instance is, how it signs, how replays are refused,
how federation content is encrypted, and how secrets are shared.

- :mod:`.identity`: the Ed25519 key pair of an instance and its key file.
- :mod:`.signing`: canonical JSON, the signed :class:`Envelope`, the :class:`Verifier`.
- :mod:`.replay`: in-memory and durable (SQLite) replay guards.
- :mod:`.cipher`: the federation key, invites and the AEAD helpers.
- :mod:`.shamir`: Shamir secret sharing over GF(2^31 - 1).
"""

from continuum_mcp.crypto.cipher import (
    FederationCipher, Invite, InvitePublic, aead_decrypt, aead_encrypt, derive_key,
    encode_context, generate_federation_key,
)
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.crypto.replay import MemoryReplayGuard, ReplayGuard, SQLiteReplayGuard
from continuum_mcp.crypto.shamir import Reconstructor, ShamirDealer, Share, reconstruct_secret, split_secret
from continuum_mcp.crypto.signing import (
    Envelope, Verifier, b64decode, b64encode, canonical_json, derive_instance_id,
    verify_signature_only,
)

__all__ = [
    "Envelope", "FederationCipher", "Identity", "Invite", "InvitePublic", "MemoryReplayGuard",
    "Reconstructor", "ReplayGuard", "SQLiteReplayGuard", "ShamirDealer", "Share", "Verifier",
    "aead_decrypt", "aead_encrypt", "b64decode", "b64encode", "canonical_json",
    "derive_instance_id", "derive_key", "encode_context", "generate_federation_key",
    "reconstruct_secret", "split_secret", "verify_signature_only",
]
