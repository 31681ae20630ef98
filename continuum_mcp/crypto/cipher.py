"""Federation key, invites, end-to-end encryption of pattern text, opaque phrase tokens, KDF.

The federation key (32 random bytes) is shared by the members of one federation and never reaches
the coordinator: the invite carries it after a ``#``, the way a URL fragment is never sent to a web
server, and :meth:`Invite.public_part` is the only thing a client may send.

Every key used for a purpose is derived from a master key by :func:`derive_key`, a keyed BLAKE2b
(a PRF) over a domain tag plus length-prefixed context, so keys for different purposes, federations,
sessions or rounds are independent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import unicodedata
from typing import Any

import nacl.bindings
import nacl.exceptions
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from continuum_mcp.errors import CryptoError, InvalidInput
from continuum_mcp.crypto.signing import canonical_json

FEDERATION_KEY_BYTES = 32
INVITE_PREFIX = "continuum-invite:v1:"
_KDF_PERSON = b"continuum-mcp/kd"  # BLAKE2b personalisation: at most 16 bytes
_CIPHERTEXT_VERSION = 1
_SEALED_VERSION = 2  # deterministic, token-bound (protocol v2)
_NONCE_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
_TAG_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16

ContextPart = str | int | bytes


def generate_federation_key() -> bytes:
    """32 bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(FEDERATION_KEY_BYTES)


def encode_context(purpose: str, context: tuple[ContextPart, ...]) -> bytes:
    """Unambiguous encoding of (purpose, *context): a type byte and a 4-byte length before each part.

    Used as KDF input and as AEAD associated data."""
    out = bytearray()
    for part in (purpose, *context):
        if isinstance(part, bool):
            raise InvalidInput("booleans are not key-derivation context")
        if isinstance(part, bytes):
            tag, raw = b"b", part
        elif isinstance(part, str):
            tag, raw = b"s", part.encode("utf-8")
        elif isinstance(part, int):
            tag, raw = b"i", str(part).encode("ascii")
        else:
            raise InvalidInput(f"unsupported context type {type(part).__name__}")
        out += tag + len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def derive_key(master: bytes, purpose: str, *context: ContextPart, size: int = 32) -> bytes:
    """Derive a subkey: keyed BLAKE2b(master; purpose || context), domain-separated.

    ``purpose`` names what the key is for (e.g. ``"secagg/pairwise-mask"``); ``context`` binds it to
    federation, session, round, parties. Keyed BLAKE2b is a PRF, so subkeys are independent.
    """
    if not 16 <= len(master) <= 64:
        raise InvalidInput("a master key has 16 to 64 bytes")
    if not 16 <= size <= 64:
        raise InvalidInput("derived keys have 16 to 64 bytes")
    return hashlib.blake2b(
        encode_context(purpose, context), key=master, digest_size=size, person=_KDF_PERSON
    ).digest()


# --------------------------------------------------------------------------- AEAD


def aead_encrypt(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """XChaCha20-Poly1305 with a random 24-byte nonce: ``version || nonce || ciphertext+tag``."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, associated_data, nonce, key
    )
    return bytes([_CIPHERTEXT_VERSION]) + nonce + ct


def aead_decrypt(key: bytes, blob: bytes, associated_data: bytes) -> bytes:
    """Inverse of :func:`aead_encrypt`; any change to key, data or ciphertext raises CryptoError."""
    if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES or blob[0] != _CIPHERTEXT_VERSION:
        raise CryptoError("ciphertext is malformed or of an unknown version")
    nonce, ct = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ct, associated_data, nonce, key
        )
    except nacl.exceptions.CryptoError as exc:
        raise CryptoError("decryption failed: wrong key, wrong context or tampered data") from exc


# --------------------------------------------------------------------------- phrases


_WS = re.compile(r"\s+")


def normalise_phrase(phrase: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the form that is tokenised and encrypted."""
    text = _WS.sub(" ", unicodedata.normalize("NFKC", phrase).casefold()).strip()
    if not text:
        raise InvalidInput("phrase is empty after normalisation")
    return text


def _siv_nonce(key: bytes, associated_data: bytes, plaintext: bytes) -> bytes:
    """A synthetic nonce: keyed BLAKE2b of (associated data, plaintext).

    Equal inputs give equal ciphertexts (so equal phrases from different members can be compared
    without decrypting them); different plaintexts get independent nonces, so no nonce is ever
    reused with a different message. Deterministic encryption reveals only plaintext equality,
    which the phrase token already reveals."""
    data = len(associated_data).to_bytes(4, "big") + associated_data + plaintext
    return hashlib.blake2b(data, key=key, digest_size=_NONCE_BYTES, person=b"continuum-mcp/sv").digest()


class FederationCipher:
    """Pattern-text encryption and phrase/statement tokens for one federation.

    Why XChaCha20-Poly1305 rather than ``SecretBox``: ``SecretBox`` (XSalsa20-Poly1305) has no
    associated data. libsodium's XChaCha20-Poly1305 IETF AEAD (via PyNaCl's bindings) has the same
    24-byte nonces and Poly1305 tag and authenticates associated data directly: a ciphertext moved
    to another token, slot or federation fails to decrypt. Keys are derived from the federation
    key with their own domain tags and the federation id.

    Integrity (protocol v2): a phrase is sealed under associated data naming its token, with a
    synthetic nonce (:func:`_siv_nonce`), and :meth:`open_phrase` recomputes the token of the
    decrypted text and refuses a mismatch. Every member holds the key, so the AEAD alone cannot
    stop a member from encrypting *its own* text under a popular phrase's token; the token check
    does (the token is a PRF of the text), and the deterministic ciphertext lets the coordinator
    see that such a ciphertext differs from the one already released for the token.

    Phrase tokens are keyed BLAKE2b of the normalised phrase (no slot); statement tokens are keyed
    BLAKE2b of the normalised statement under another derived key (open mode counts contributors
    of a statement itself). Neither is bound to the round: contributors are counted across rounds.
    """

    def __init__(self, federation_key: bytes, federation_id: str) -> None:
        if len(federation_key) != FEDERATION_KEY_BYTES:
            raise InvalidInput("a federation key has 32 bytes")
        if not federation_id:
            raise InvalidInput("federation id is empty")
        self.federation_id = federation_id
        self._text_key = derive_key(federation_key, "federation/pattern-text/v1", federation_id)
        self._sealed_key = derive_key(federation_key, "federation/sealed-text/v2", federation_id)
        self._nonce_key = derive_key(federation_key, "federation/synthetic-nonce/v2", federation_id)
        self._statement_key = derive_key(federation_key, "federation/statement-token/v2", federation_id)
        self._phrase_key = derive_key(federation_key, "federation/phrase-token/v2", federation_id)

    def __repr__(self) -> str:
        return f"FederationCipher({self.federation_id!r})"

    @staticmethod
    def _check_slot(slot: int) -> None:
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < 2**32:
            raise InvalidInput("slot must be an integer in [0, 2^32)")

    def _associated_data(self, slot: int, round_id: int | str) -> bytes:
        self._check_slot(slot)
        return canonical_json(
            {
                "purpose": "continuum-mcp/pattern-text/v1",
                "federation_id": self.federation_id,
                "slot": slot,
                "round": round_id,
            }
        )

    def encrypt(self, slot: int, round_id: int | str, plaintext: str) -> bytes:
        """Encrypt free pattern text for (this federation, slot, round) with a random nonce."""
        return aead_encrypt(
            self._text_key, plaintext.encode("utf-8"), self._associated_data(slot, round_id)
        )

    def decrypt(self, slot: int, round_id: int | str, ciphertext: bytes) -> str:
        """Decrypt; raises CryptoError if slot, round, federation or key differ, or on tampering."""
        return _utf8(aead_decrypt(self._text_key, ciphertext, self._associated_data(slot, round_id)))

    def token(self, phrase: str) -> str:
        """Opaque, deterministic token of a phrase itself (release v2: hex, 256 bits).

        Keyed BLAKE2b (a PRF, used as the MAC "HMAC(federation key, phrase)" of DESIGN.md) of the
        normalised phrase only, under its own derived key: the same phrase from two members whose
        paraphrases landed in different slots has one token, so its contributors count together."""
        return hashlib.blake2b(normalise_phrase(phrase).encode("utf-8"), key=self._phrase_key, digest_size=32).hexdigest()

    def statement_token(self, statement: str) -> str:
        """Opaque, deterministic token of a normalised statement (hex, 256 bits)."""
        data = normalise_phrase(statement).encode("utf-8")
        return hashlib.blake2b(data, key=self._statement_key, digest_size=32).hexdigest()

    # ----- sealed text: bound to its token, checked on opening ---------------------------
    def _sealed_ad(self, kind: str, token: str) -> bytes:
        if not re.fullmatch(r"[0-9a-f]{64}", token):
            raise InvalidInput("a token is 64 lowercase hex digits")
        return canonical_json({"purpose": f"continuum-mcp/sealed-{kind}/v2", "federation_id": self.federation_id,
                               "token": token})

    def _seal(self, kind: str, token: str, text: str) -> bytes:
        ad, plain = self._sealed_ad(kind, token), normalise_phrase(text).encode("utf-8")
        nonce = _siv_nonce(self._nonce_key, ad, plain)
        ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, self._sealed_key)
        return bytes([_SEALED_VERSION]) + nonce + ct

    def _open(self, kind: str, token: str, blob: bytes) -> str:
        if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES or blob[0] != _SEALED_VERSION:
            raise CryptoError("sealed ciphertext is malformed or of an unknown version")
        return _utf8(aead_decrypt(self._sealed_key, bytes([_CIPHERTEXT_VERSION]) + blob[1:], self._sealed_ad(kind, token)))

    def seal_phrase(self, slot: int, phrase: str) -> tuple[str, bytes]:
        """(token, ciphertext) of a phrase: the ciphertext is bound to the token and deterministic."""
        self._check_slot(slot)
        token = self.token(phrase)
        return token, self._seal("phrase", token, phrase)

    def open_phrase(self, slot: int, token: str, ciphertext: bytes) -> str:
        """The phrase, only if it decrypts under ``token`` *and* hashes back to it (else CryptoError):
        a member cannot make others read its own text under a popular phrase's token."""
        self._check_slot(slot)
        text = self._open("phrase", token, ciphertext)
        if not hmac.compare_digest(self.token(text), token):
            raise CryptoError("the phrase does not match its token (substituted text); dropped")
        return text

    def seal_statement(self, statement: str) -> tuple[str, bytes]:
        """(statement token, ciphertext) of a normalised statement, bound to each other."""
        token = self.statement_token(statement)
        return token, self._seal("statement", token, statement)

    def open_statement(self, token: str, ciphertext: bytes) -> str:
        """The statement, only if it decrypts under ``token`` and hashes back to it (else CryptoError)."""
        text = self._open("statement", token, ciphertext)
        if not hmac.compare_digest(self.statement_token(text), token):
            raise CryptoError("the statement does not match its token (substituted text); dropped")
        return text


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:  # pragma: no cover - authenticated, so only a bug
        raise CryptoError("decrypted text is not UTF-8") from exc


# --------------------------------------------------------------------------- invites


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64url_decode(text: str, what: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise InvalidInput(f"invite {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"invite {what} is not base64url") from exc


class InvitePublic(BaseModel):
    """The part of an invite that may be sent to the coordinator (no federation key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = 1
    coordinator_url: str
    federation_id: str = Field(min_length=1, max_length=128)
    admission_token: str = Field(min_length=1, max_length=512)

    @field_validator("coordinator_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s#]+", value):
            raise ValueError("coordinator URL must be an http(s) URL without a fragment")
        return value


class Invite(BaseModel):
    """An invitation: public part plus the federation key, which only members ever see.

    String form: ``continuum-invite:v1:<b64url(canonical JSON of public part)>#<b64url(key)>``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    coordinator_url: str
    federation_id: str
    admission_token: str
    federation_key: bytes = Field(repr=False, exclude=True)

    @field_validator("federation_key")
    @classmethod
    def _key(cls, value: bytes) -> bytes:
        if len(value) != FEDERATION_KEY_BYTES:
            raise ValueError("federation key must be 32 bytes")
        return value

    @classmethod
    def create(cls, coordinator_url: str, federation_id: str, admission_token: str) -> Invite:
        """A new invite with a freshly generated federation key."""
        return cls.build(coordinator_url, federation_id, admission_token, generate_federation_key())

    @classmethod
    def build(
        cls, coordinator_url: str, federation_id: str, admission_token: str, federation_key: bytes
    ) -> Invite:
        """Validate all fields (raises ``InvalidInput``) and assemble an invite."""
        try:
            public = InvitePublic(
                coordinator_url=coordinator_url,
                federation_id=federation_id,
                admission_token=admission_token,
            )
            return cls(
                coordinator_url=public.coordinator_url,
                federation_id=public.federation_id,
                admission_token=public.admission_token,
                federation_key=federation_key,
            )
        except ValidationError as exc:
            raise InvalidInput(f"invalid invite: {exc.errors()[0]['msg']}") from exc

    def public_part(self) -> InvitePublic:
        """What may be sent to the coordinator: everything except the federation key."""
        return InvitePublic(
            coordinator_url=self.coordinator_url,
            federation_id=self.federation_id,
            admission_token=self.admission_token,
        )

    def cipher(self) -> FederationCipher:
        return FederationCipher(self.federation_key, self.federation_id)

    def format(self) -> str:
        public = canonical_json(self.public_part().model_dump(mode="json"))
        return f"{INVITE_PREFIX}{_b64url(public)}#{_b64url(self.federation_key)}"

    def __str__(self) -> str:  # never print the key by accident
        return f"Invite({self.federation_id!r} at {self.coordinator_url})"

    @classmethod
    def parse(cls, text: str) -> Invite:
        """Parse the string form; every malformation raises ``InvalidInput`` saying what is wrong."""
        text = text.strip()
        if not text.startswith(INVITE_PREFIX):
            raise InvalidInput(f"not a continuum invite (expected it to start with {INVITE_PREFIX})")
        body = text[len(INVITE_PREFIX) :]
        if body.count("#") != 1:
            raise InvalidInput("invite must contain exactly one '#' before the federation key")
        public_b64, key_b64 = body.split("#")
        key = _b64url_decode(key_b64, "federation key")
        if len(key) != FEDERATION_KEY_BYTES:
            raise InvalidInput("invite federation key must be 32 bytes")
        raw = _b64url_decode(public_b64, "public part")
        try:
            data: Any = json.loads(raw.decode("utf-8"))
            public = InvitePublic.model_validate(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput("invite public part is not JSON") from exc
        except ValidationError as exc:
            raise InvalidInput(f"invalid invite: {exc.errors()[0]['msg']}") from exc
        if public.v != 1:
            raise InvalidInput(f"unsupported invite version {public.v}")
        return cls.build(public.coordinator_url, public.federation_id, public.admission_token, key)
