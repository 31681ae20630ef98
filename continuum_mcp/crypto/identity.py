"""Ed25519 identity of an instance: its key pair, its key file and its public name.

An instance is known to the federation by an Ed25519 key pair made on first use. Its public name,
``instance_id`` (``fed-xxxx-xxxx-xxxx``), is derived from a hash of the public key
(:func:`~continuum_mcp.crypto.signing.derive_instance_id`), so a message that carries both can be
checked for consistency without any directory. (The id has 48 bits; a coordinator must still pin
the public key it admitted for an id, because grinding a key pair to hit a chosen id costs about
2^48 work. ``Verifier.verify(expected_public_key=...)`` does that pinning.)

Signing and verification live in :mod:`continuum_mcp.crypto.signing`, replay guards in
:mod:`continuum_mcp.crypto.replay`; their names are re-exported here for the import paths that
callers already use.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from pathlib import Path

import nacl.signing

from continuum_mcp.crypto.replay import DatabaseReplayGuard, MemoryReplayGuard, ReplayGuard, SQLiteReplayGuard
from continuum_mcp.crypto.signing import (
    DEFAULT_WINDOW_SECONDS, ENVELOPE_VERSION, HEADER_INSTANCE, HEADER_NONCE, HEADER_PUBLIC_KEY,
    HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_VERSION, NONCE_BYTES, Envelope, Verifier,
    b64decode, b64encode, body_sha256, canonical_json, derive_instance_id, sign_envelope,
    verify_signature_only,
)
from continuum_mcp.errors import CryptoError, InvalidInput

logger = logging.getLogger(__name__)

_KEY_FILE_FORMAT = "continuum-mcp/ed25519-identity/v1"


def _check_private_mode(path: Path, *, repair: bool) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        if not repair:
            raise CryptoError(
                f"identity key file {path} has mode {oct(mode)}; it must be readable by its owner "
                "only (chmod 600), and may have been exposed"
            )
        logger.warning("identity key file %s had mode %s; tightening to 0600", path, oct(mode))
        os.chmod(path, 0o600)


class Identity:
    """An instance's Ed25519 key pair. Holds the private key; never serialise this object."""

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key
        self._public_key = bytes(signing_key.verify_key)
        self.instance_id = derive_instance_id(self._public_key)

    def __repr__(self) -> str:
        return f"Identity({self.instance_id})"

    @classmethod
    def generate(cls) -> Identity:
        """A fresh identity held in memory only (tests, ephemeral roles)."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str], *, repair_mode: bool = False) -> Identity:
        """Load the identity at ``path`` or create it there with mode 0600.

        Creation is atomic: the key is written to a temporary file opened with ``O_EXCL`` and mode
        0600 from the start, fsynced, then hard-linked into place, so a concurrent creator or a
        crash never leaves a partial or world-readable key. A key file with a looser mode is refused
        (it may have been read by others) unless ``repair_mode`` is true, which tightens it.
        """
        target = Path(path)
        if target.exists():
            return cls._load(target, repair_mode=repair_mode)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        signing_key = nacl.signing.SigningKey.generate()
        content = canonical_json(
            {"format": _KEY_FILE_FORMAT, "seed": b64encode(bytes(signing_key))}
        )
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # umask cannot loosen it, but make the intent explicit
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, target)
            except FileExistsError:
                return cls._load(target, repair_mode=repair_mode)  # another process won the race
        finally:
            tmp.unlink(missing_ok=True)
        return cls(signing_key)

    @classmethod
    def _load(cls, path: Path, *, repair_mode: bool) -> Identity:
        _check_private_mode(path, repair=repair_mode)
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
            if not isinstance(data, dict) or data.get("format") != _KEY_FILE_FORMAT:
                raise ValueError("unknown format")
            seed = b64decode(str(data["seed"]), what="identity seed", length=32)
        except (ValueError, KeyError, UnicodeDecodeError, InvalidInput) as exc:
            raise CryptoError(f"identity key file {path} is unreadable or corrupt") from exc
        return cls(nacl.signing.SigningKey(seed))

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def public_key_b64(self) -> str:
        return b64encode(self._public_key)

    def sign(self, method: str, path: str, body: bytes, *, timestamp: int | None = None,
             nonce: bytes | None = None) -> Envelope:
        """Sign (method, path, SHA-256 of body) with a fresh nonce and the current time."""
        return sign_envelope(self._signing_key, method, path, body, timestamp=timestamp, nonce=nonce)

    def sign_request(self, method: str, path: str, body: bytes = b"") -> dict[str, str]:
        """HTTP headers authenticating one request."""
        return self.sign(method, path, body).to_headers()


__all__ = [
    "DEFAULT_WINDOW_SECONDS", "ENVELOPE_VERSION", "HEADER_INSTANCE", "HEADER_NONCE",
    "HEADER_PUBLIC_KEY", "HEADER_SIGNATURE", "HEADER_TIMESTAMP", "HEADER_VERSION", "NONCE_BYTES",
    "DatabaseReplayGuard", "Envelope", "Identity", "MemoryReplayGuard", "ReplayGuard", "SQLiteReplayGuard", "Verifier",
    "b64decode", "b64encode", "body_sha256", "canonical_json", "derive_instance_id",
    "verify_signature_only",
]
