"""Ed25519 identity of an instance and signed, replay-protected messages.

An instance is known to the federation by an Ed25519 key pair made on first use. Its public name,
``instance_id`` (``fed-xxxx-xxxx-xxxx``), is derived from a hash of the public key, so a message
that carries both can be checked for consistency without any directory. (The id has 48 bits; a
coordinator must still pin the public key it admitted for an id, because grinding a key pair to hit a
chosen id costs about 2^48 work. ``verify(expected_public_key=...)`` does that pinning.)

Every signed message is an :class:`Envelope` whose fields are serialised with
:func:`canonical_json` (sorted keys, no insignificant whitespace, UTF-8, no floats) and prefixed with
a domain-separation tag before signing. The same envelope authenticates HTTP requests (method, path
and a SHA-256 of the body) and secure-aggregation protocol messages (a pseudo-method and a path
naming session, round and message kind). Never pickle: canonical JSON is the only wire format.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import json
import logging
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import nacl.exceptions
import nacl.signing
from pydantic import BaseModel, ConfigDict, Field

from continuum_mcp.errors import CryptoError, InvalidInput, ReplayError

logger = logging.getLogger(__name__)

ENVELOPE_VERSION = 1
DEFAULT_WINDOW_SECONDS = 300
NONCE_BYTES = 16
_SIGNING_DOMAIN = b"continuum-mcp/signed-envelope/v1\n"
_INSTANCE_ID_DOMAIN = b"continuum-mcp/instance-id/v1\n"
_KEY_FILE_FORMAT = "continuum-mcp/ed25519-identity/v1"

# HTTP header names used by :meth:`Envelope.to_headers` / :meth:`Envelope.from_headers`.
HEADER_VERSION = "X-Continuum-Version"
HEADER_INSTANCE = "X-Continuum-Instance"
HEADER_PUBLIC_KEY = "X-Continuum-Public-Key"
HEADER_TIMESTAMP = "X-Continuum-Timestamp"
HEADER_NONCE = "X-Continuum-Nonce"
HEADER_SIGNATURE = "X-Continuum-Signature"


# --------------------------------------------------------------------------- canonical JSON


_SCALARS = (str, int, bool, type(None))


def _check_canonical(value: Any, depth: int = 0) -> None:
    """Refuse anything whose JSON form is not unique (floats) or not JSON at all."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:  # fast path
        return
    if depth > 64:
        raise InvalidInput("value nests too deeply for a signed message")
    if isinstance(value, float):
        raise InvalidInput("floats are not allowed in signed messages (encode them as strings)")
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            if type(item) is not str:
                _check_canonical(item, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidInput("object keys in signed messages must be strings")
            if type(item) is not str:
                _check_canonical(item, depth + 1)
        return
    raise InvalidInput(f"type {type(value).__name__} cannot be serialised canonically")


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` to canonical JSON bytes: the only form that is ever signed or hashed.

    Sorted keys, ``,``/``:`` separators, UTF-8 without escaping, and only null, bools, ints,
    strings, lists and string-keyed objects, so two honest implementations produce the same bytes.
    """
    _check_canonical(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (the encoding of every bytes field on the wire)."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, *, what: str = "value", length: int | None = None) -> bytes:
    """Strict base64 decoding that raises ``InvalidInput`` instead of guessing."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not valid base64") from exc
    if length is not None and len(data) != length:
        raise InvalidInput(f"{what} must be {length} bytes, got {len(data)}")
    return data


def derive_instance_id(public_key: bytes) -> str:
    """``fed-xxxx-xxxx-xxxx`` from a domain-separated SHA-256 of the Ed25519 public key."""
    if len(public_key) != 32:
        raise InvalidInput("an Ed25519 public key has 32 bytes")
    digest = hashlib.sha256(_INSTANCE_ID_DOMAIN + public_key).hexdigest()[:12]
    return f"fed-{digest[0:4]}-{digest[4:8]}-{digest[8:12]}"


def body_sha256(body: bytes) -> str:
    """Hex SHA-256 of a request body (the envelope signs this, not the body itself)."""
    return hashlib.sha256(body).hexdigest()


# --------------------------------------------------------------------------- envelope


class Envelope(BaseModel):
    """A signed statement: *this identity* sent *this body* to *this method and path* at *this time*.

    ``signing_bytes`` is the domain tag followed by the canonical JSON of every field except
    ``signature``; a change to any of them invalidates the signature.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = ENVELOPE_VERSION
    instance_id: str
    public_key: str = Field(description="base64 Ed25519 public key (32 bytes)")
    method: str
    path: str
    timestamp: int = Field(description="Unix seconds when signed")
    nonce: str = Field(description="base64 of 16 random bytes, unique per message")
    body_sha256: str
    signature: str = Field(description="base64 Ed25519 signature over signing_bytes()")

    def signed_fields(self) -> dict[str, Any]:
        """The fields the signature covers."""
        return self.model_dump(mode="json", exclude={"signature"})

    def signing_bytes(self) -> bytes:
        """Exactly the bytes that are signed and verified."""
        return _SIGNING_DOMAIN + canonical_json(self.signed_fields())

    def to_headers(self) -> dict[str, str]:
        """HTTP headers carrying the envelope (method, path and body travel in the request)."""
        return {
            HEADER_VERSION: str(self.v),
            HEADER_INSTANCE: self.instance_id,
            HEADER_PUBLIC_KEY: self.public_key,
            HEADER_TIMESTAMP: str(self.timestamp),
            HEADER_NONCE: self.nonce,
            HEADER_SIGNATURE: self.signature,
        }

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str], *, method: str, path: str, body: bytes
    ) -> Envelope:
        """Rebuild the envelope of a received HTTP request; ``verify`` then checks it."""
        lowered = {k.lower(): v for k, v in headers.items()}

        def get(name: str) -> str:
            value = lowered.get(name.lower())
            if value is None:
                raise CryptoError(f"missing authentication header {name}")
            return value

        try:
            version = int(get(HEADER_VERSION))
            timestamp = int(get(HEADER_TIMESTAMP))
        except ValueError as exc:
            raise CryptoError("malformed authentication header") from exc
        return cls(
            v=version,
            instance_id=get(HEADER_INSTANCE),
            public_key=get(HEADER_PUBLIC_KEY),
            method=method.upper(),
            path=path,
            timestamp=timestamp,
            nonce=get(HEADER_NONCE),
            body_sha256=body_sha256(body),
            signature=get(HEADER_SIGNATURE),
        )


# --------------------------------------------------------------------------- identity


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

    def sign(
        self,
        method: str,
        path: str,
        body: bytes,
        *,
        timestamp: int | None = None,
        nonce: bytes | None = None,
    ) -> Envelope:
        """Sign (method, path, SHA-256 of body) with a fresh nonce and the current time."""
        unsigned = {
            "v": ENVELOPE_VERSION,
            "instance_id": self.instance_id,
            "public_key": self.public_key_b64,
            "method": method.upper(),
            "path": path,
            "timestamp": int(time.time()) if timestamp is None else int(timestamp),
            "nonce": b64encode(nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)),
            "body_sha256": body_sha256(body),
        }
        message = _SIGNING_DOMAIN + canonical_json(unsigned)
        signature = self._signing_key.sign(message).signature
        return Envelope(**unsigned, signature=b64encode(signature))

    def sign_request(self, method: str, path: str, body: bytes = b"") -> dict[str, str]:
        """HTTP headers authenticating one request."""
        return self.sign(method, path, body).to_headers()


# --------------------------------------------------------------------------- replay guards


class ReplayGuard(Protocol):
    """Remembers (instance_id, nonce) pairs until the messages that carried them expire."""

    def check_and_record(self, instance_id: str, nonce: str, expires_at: int, now: int) -> None:
        """Raise ``ReplayError`` if the pair was seen and has not expired; else remember it."""
        ...


class MemoryReplayGuard:
    """In-memory replay guard with bounded memory.

    An accepted message has ``|timestamp - now| <= window``, so its nonce only needs remembering
    until ``timestamp + window``; older entries are expired on every call. ``max_entries`` is a hard
    cap: when it is full of live nonces the guard refuses (fails closed) rather than forget.
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self._expiry: list[tuple[int, str, str]] = []
        self._max = max_entries
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: int) -> None:
        while self._expiry and self._expiry[0][0] < now:
            expires_at, instance_id, nonce = heapq.heappop(self._expiry)
            if self._seen.get((instance_id, nonce)) == expires_at:
                del self._seen[(instance_id, nonce)]

    def check_and_record(self, instance_id: str, nonce: str, expires_at: int, now: int) -> None:
        with self._lock:
            self._expire(now)
            key = (instance_id, nonce)
            if key in self._seen:
                raise ReplayError("this message was already received (replayed nonce)")
            if len(self._seen) >= self._max:
                raise ReplayError("too many messages in the replay window; try again later")
            self._seen[key] = expires_at
            heapq.heappush(self._expiry, (expires_at, instance_id, nonce))


class SQLiteReplayGuard:
    """Replay guard persisted in SQLite so that a restart does not reopen the replay window."""

    def __init__(self, path: str | os.PathLike[str], purge_every: int = 256) -> None:
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS seen_nonces ("
            " instance_id TEXT NOT NULL, nonce TEXT NOT NULL, expires_at INTEGER NOT NULL,"
            " PRIMARY KEY (instance_id, nonce)) WITHOUT ROWID"
        )
        self._conn.execute(
            "CREATE INDEX IF NOT EXISTS seen_nonces_expiry ON seen_nonces(expires_at)"
        )
        self._lock = threading.Lock()
        self._purge_every = purge_every
        self._calls = 0

    def close(self) -> None:
        self._conn.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM seen_nonces").fetchone()[0])

    def purge(self, now: int) -> None:
        """Drop nonces whose messages can no longer be accepted (bounds the table's size)."""
        with self._lock:
            self._conn.execute("DELETE FROM seen_nonces WHERE expires_at < ?", (now,))

    def check_and_record(self, instance_id: str, nonce: str, expires_at: int, now: int) -> None:
        self._calls += 1
        if self._calls % self._purge_every == 0:
            self.purge(now)
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                row = self._conn.execute(
                    "SELECT expires_at FROM seen_nonces WHERE instance_id = ? AND nonce = ?",
                    (instance_id, nonce),
                ).fetchone()
                if row is not None and int(row[0]) >= now:
                    self._conn.execute("ROLLBACK")
                    raise ReplayError("this message was already received (replayed nonce)")
                self._conn.execute(
                    "INSERT OR REPLACE INTO seen_nonces(instance_id, nonce, expires_at)"
                    " VALUES (?, ?, ?)",
                    (instance_id, nonce, expires_at),
                )
                self._conn.execute("COMMIT")
            except sqlite3.Error:
                self._conn.execute("ROLLBACK")
                raise


# --------------------------------------------------------------------------- verification


class Verifier:
    """Checks envelopes: structure, key/id binding, signature, freshness and replay, in that order.

    A tampered field fails the signature (``CryptoError``); a genuine but stale, future or repeated
    message fails freshness or replay (``ReplayError``, a subclass of ``CryptoError``). The nonce is
    recorded only after the signature verifies, so forged messages cannot burn nonces.
    """

    def __init__(
        self,
        replay_guard: ReplayGuard,
        *,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_seconds <= 0:
            raise InvalidInput("the replay window must be positive")
        self.replay_guard = replay_guard
        self.window_seconds = window_seconds
        self._clock = clock

    def verify(
        self,
        envelope: Envelope,
        *,
        method: str,
        path: str,
        body: bytes,
        expected_public_key: bytes | None = None,
        expected_instance_id: str | None = None,
    ) -> str:
        """Verify ``envelope`` for this (method, path, body); return the sender's instance id."""
        if envelope.v != ENVELOPE_VERSION:
            raise CryptoError(f"unsupported envelope version {envelope.v}")
        try:
            public_key = b64decode(envelope.public_key, what="public key", length=32)
            signature = b64decode(envelope.signature, what="signature", length=64)
            nonce = b64decode(envelope.nonce, what="nonce", length=NONCE_BYTES)
        except InvalidInput as exc:
            raise CryptoError(exc.message) from exc
        del nonce
        if derive_instance_id(public_key) != envelope.instance_id:
            raise CryptoError("the public key does not match the instance id")
        if expected_instance_id is not None and envelope.instance_id != expected_instance_id:
            raise CryptoError("message is from an unexpected instance")
        if expected_public_key is not None and public_key != expected_public_key:
            raise CryptoError("the public key is not the one registered for this instance")
        if envelope.method != method.upper() or envelope.path != path:
            raise CryptoError("message was signed for another method or path")
        if envelope.body_sha256 != body_sha256(body):
            raise CryptoError("message body does not match the signed hash")
        try:
            nacl.signing.VerifyKey(public_key).verify(envelope.signing_bytes(), signature)
        except nacl.exceptions.BadSignatureError as exc:
            raise CryptoError("bad signature") from exc
        now = int(self._clock())
        if abs(envelope.timestamp - now) > self.window_seconds:
            raise ReplayError(
                f"message timestamp is outside the ±{self.window_seconds} s window; "
                "check the clock of the sending machine"
            )
        self.replay_guard.check_and_record(
            envelope.instance_id, envelope.nonce, envelope.timestamp + self.window_seconds, now
        )
        return envelope.instance_id


def verify_signature_only(envelope: Envelope, body: bytes) -> str:
    """Check id binding, body hash and signature without freshness or replay state.

    For peer-relayed material (e.g. another client's key advertisement forwarded by the server)
    whose freshness the relaying party already enforced; returns the signer's instance id.
    """
    try:
        public_key = b64decode(envelope.public_key, what="public key", length=32)
        signature = b64decode(envelope.signature, what="signature", length=64)
    except InvalidInput as exc:
        raise CryptoError(exc.message) from exc
    if envelope.v != ENVELOPE_VERSION:
        raise CryptoError(f"unsupported envelope version {envelope.v}")
    if derive_instance_id(public_key) != envelope.instance_id:
        raise CryptoError("the public key does not match the instance id")
    if envelope.body_sha256 != body_sha256(body):
        raise CryptoError("message body does not match the signed hash")
    try:
        nacl.signing.VerifyKey(public_key).verify(envelope.signing_bytes(), signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise CryptoError("bad signature") from exc
    return envelope.instance_id
