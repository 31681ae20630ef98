"""Canonical JSON and signed envelopes: how a message is signed and how it is checked.

Every signed message is an :class:`Envelope` whose fields are serialised with
:func:`canonical_json` (sorted keys, no insignificant whitespace, UTF-8, no floats) and prefixed with
a domain-separation tag before signing. The same envelope authenticates HTTP requests (method, path
and a SHA-256 of the body) and secure-aggregation protocol messages (a pseudo-method and a path
naming session, round and message kind). Never pickle: canonical JSON is the only wire format.

The instance id is derived here because the envelope binds it to the public key it carries: a
message is self-checking without any directory (the coordinator still pins admitted keys, see
``Verifier.verify(expected_public_key=...)``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import nacl.exceptions
import nacl.signing
from pydantic import BaseModel, ConfigDict, Field

from continuum_mcp.crypto.replay import ReplayGuard
from continuum_mcp.errors import CryptoError, InvalidInput, ReplayError

ENVELOPE_VERSION = 1
DEFAULT_WINDOW_SECONDS = 300
NONCE_BYTES = 16
_SIGNING_DOMAIN = b"continuum-mcp/signed-envelope/v1\n"
_INSTANCE_ID_DOMAIN = b"continuum-mcp/instance-id/v1\n"

# HTTP header names used by :meth:`Envelope.to_headers` / :meth:`Envelope.from_headers`.
HEADER_VERSION = "X-Continuum-Version"
HEADER_INSTANCE = "X-Continuum-Instance"
HEADER_PUBLIC_KEY = "X-Continuum-Public-Key"
HEADER_TIMESTAMP = "X-Continuum-Timestamp"
HEADER_NONCE = "X-Continuum-Nonce"
HEADER_SIGNATURE = "X-Continuum-Signature"
#: the federation wire protocol version a signed request speaks (``federation.protocol`` re-exports
#: it as PROTOCOL_VERSION). Sent beside the envelope, not inside it: the envelope format is its own
#: version (``v``), and a coordinator must be able to answer "upgrade" before checking a signature.
HEADER_PROTOCOL = "X-Continuum-Protocol"
WIRE_PROTOCOL_VERSION = 2


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
            HEADER_PROTOCOL: str(WIRE_PROTOCOL_VERSION),
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


def sign_envelope(signing_key: nacl.signing.SigningKey, method: str, path: str, body: bytes, *,
                  timestamp: int | None = None, nonce: bytes | None = None) -> Envelope:
    """Sign (method, path, SHA-256 of body) with a fresh nonce and the current time."""
    public_key = bytes(signing_key.verify_key)
    unsigned = {
        "v": ENVELOPE_VERSION,
        "instance_id": derive_instance_id(public_key),
        "public_key": b64encode(public_key),
        "method": method.upper(),
        "path": path,
        "timestamp": int(time.time()) if timestamp is None else int(timestamp),
        "nonce": b64encode(nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)),
        "body_sha256": body_sha256(body),
    }
    signature = signing_key.sign(_SIGNING_DOMAIN + canonical_json(unsigned)).signature
    return Envelope(**unsigned, signature=b64encode(signature))


# --------------------------------------------------------------------------- verification


def _decode_keys(envelope: Envelope) -> tuple[bytes, bytes]:
    """Version, encodings and the id/key binding: the structure every check starts from."""
    if envelope.v != ENVELOPE_VERSION:
        raise CryptoError(f"unsupported envelope version {envelope.v}")
    try:
        public_key = b64decode(envelope.public_key, what="public key", length=32)
        signature = b64decode(envelope.signature, what="signature", length=64)
    except InvalidInput as exc:
        raise CryptoError(exc.message) from exc
    if derive_instance_id(public_key) != envelope.instance_id:
        raise CryptoError("the public key does not match the instance id")
    return public_key, signature


def _check_signature(envelope: Envelope, public_key: bytes, signature: bytes, body: bytes) -> None:
    if envelope.body_sha256 != body_sha256(body):
        raise CryptoError("message body does not match the signed hash")
    try:
        nacl.signing.VerifyKey(public_key).verify(envelope.signing_bytes(), signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise CryptoError("bad signature") from exc


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

    def verify(self, envelope: Envelope, *, method: str, path: str, body: bytes,
               expected_public_key: bytes | None = None, expected_instance_id: str | None = None) -> str:
        """Verify ``envelope`` for this (method, path, body); return the sender's instance id."""
        public_key, signature = _decode_keys(envelope)
        try:
            b64decode(envelope.nonce, what="nonce", length=NONCE_BYTES)
        except InvalidInput as exc:
            raise CryptoError(exc.message) from exc
        if expected_instance_id is not None and envelope.instance_id != expected_instance_id:
            raise CryptoError("message is from an unexpected instance")
        if expected_public_key is not None and public_key != expected_public_key:
            raise CryptoError("the public key is not the one registered for this instance")
        if envelope.method != method.upper() or envelope.path != path:
            raise CryptoError("message was signed for another method or path")
        _check_signature(envelope, public_key, signature, body)
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
    public_key, signature = _decode_keys(envelope)
    _check_signature(envelope, public_key, signature, body)
    return envelope.instance_id
