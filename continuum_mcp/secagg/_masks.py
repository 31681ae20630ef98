"""Key agreement, mask seeds and the PRG shared by the client and the server (private helpers)."""

from __future__ import annotations

import hashlib

import nacl.bindings
import nacl.exceptions
import numpy as np

from continuum_mcp.crypto.cipher import derive_key, encode_context
from continuum_mcp.errors import CryptoError, InvalidInput
from continuum_mcp.secagg.params import SecAggParams

SEED_BYTES = 32
_PRG_DOMAIN = b"continuum-mcp/secagg/prg/v1\x00"


def prg_uint32(seed: bytes, dim: int) -> np.ndarray:
    """Expand a >= 128-bit seed into ``dim`` uniform uint32 values with SHAKE-256."""
    if len(seed) < 16:
        raise InvalidInput("PRG seeds have at least 128 bits")
    stream = hashlib.shake_256(_PRG_DOMAIN + seed).digest(4 * dim)
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32)


def _x25519(private_key: bytes, public_key: bytes) -> bytes:
    try:
        return nacl.bindings.crypto_scalarmult(private_key, public_key)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, TypeError) as exc:
        raise CryptoError("X25519 agreement failed (invalid or low-order public key)") from exc


def _ordered(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def pairwise_mask_seed(
    params: SecAggParams,
    own_id: str,
    own_private: bytes,
    own_public: bytes,
    peer_id: str,
    peer_public: bytes,
    digest: str | None = None,
) -> bytes:
    """Seed s_uv, equal for both parties: KDF(X25519) bound to session, round, params (or, for
    SecAgg+, the round digest that also binds the key roster), parties."""
    shared = _x25519(own_private, peer_public)
    (low_id, high_id) = _ordered(own_id, peer_id)
    low_pk, high_pk = (own_public, peer_public) if own_id == low_id else (peer_public, own_public)
    return derive_key(
        shared,
        "secagg/pairwise-mask/v1",
        params.session_id,
        params.round_id,
        digest or params.digest(),
        low_id,
        high_id,
        low_pk,
        high_pk,
    )


def _share_key(
    params: SecAggParams, digest: str, own_id: str, own_private: bytes, peer_id: str,
    peer_public: bytes,
) -> bytes:
    shared = _x25519(own_private, peer_public)
    low_id, high_id = _ordered(own_id, peer_id)
    return derive_key(
        shared, "secagg/share-encryption/v1", params.session_id, params.round_id, digest,
        low_id, high_id,
    )


def _share_ad(params: SecAggParams, digest: str, sender: str, recipient: str) -> bytes:
    """Associated data of a share ciphertext: direction and context, unambiguously encoded."""
    return encode_context(
        "secagg/share/v1", (params.session_id, params.round_id, digest, sender, recipient)
    )


def self_mask_seed(params: SecAggParams, owner: str, seed: bytes) -> bytes:
    return derive_key(seed, "secagg/self-mask/v1", params.session_id, params.round_id,
                      params.digest(), owner)


def self_seed_commitment(params: SecAggParams, owner: str, seed: bytes) -> bytes:
    """Hiding, binding commitment to b (a PRF of a 256-bit random key) checked after recovery."""
    return derive_key(seed, "secagg/self-seed-commitment/v1", params.session_id,
                      params.round_id, params.digest(), owner)
