"""Federation key, invites, pattern-text AEAD, phrase tokens and key derivation."""

from __future__ import annotations

import base64

import pytest

from continuum_mcp.crypto.cipher import (
    FederationCipher,
    Invite,
    derive_key,
    generate_federation_key,
    normalise_phrase,
)
from continuum_mcp.errors import CryptoError, InvalidInput

FED = "fed-acme"


def test_federation_keys_are_random_32_bytes() -> None:
    keys = {generate_federation_key() for _ in range(100)}
    assert len(keys) == 100 and all(len(k) == 32 for k in keys)


def test_key_derivation_is_domain_separated_and_unambiguous() -> None:
    master = generate_federation_key()
    k = derive_key(master, "purpose", "session-1", 3)
    assert k == derive_key(master, "purpose", "session-1", 3) and len(k) == 32
    others = [
        derive_key(master, "other-purpose", "session-1", 3),
        derive_key(master, "purpose", "session-2", 3),
        derive_key(master, "purpose", "session-1", 4),
        derive_key(master, "purpose", "session-1", "3"),
        derive_key(generate_federation_key(), "purpose", "session-1", 3),
    ]
    assert len({k, *others}) == 6
    assert derive_key(master, "p", "ab", "c") != derive_key(master, "p", "a", "bc")


def test_pattern_text_round_trip_and_binding() -> None:
    key = generate_federation_key()
    cipher = FederationCipher(key, FED)
    text = "prefers <PERSON> to review PRs before merging — ünïcode"
    blob = cipher.encrypt(12, 5, text)
    assert cipher.decrypt(12, 5, blob) == text
    assert text.encode() not in blob
    assert cipher.encrypt(12, 5, text) != blob  # random nonce
    with pytest.raises(CryptoError):
        cipher.decrypt(13, 5, blob)  # wrong slot
    with pytest.raises(CryptoError):
        cipher.decrypt(12, 6, blob)  # wrong round
    with pytest.raises(CryptoError):
        FederationCipher(key, "fed-other").decrypt(12, 5, blob)  # wrong federation
    with pytest.raises(CryptoError):
        FederationCipher(generate_federation_key(), FED).decrypt(12, 5, blob)  # wrong key
    for pos in (0, 5, len(blob) // 2, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[pos] ^= 0x01
        with pytest.raises(CryptoError):
            cipher.decrypt(12, 5, bytes(tampered))
    with pytest.raises(CryptoError):
        cipher.decrypt(12, 5, blob[:20])


def test_phrase_tokens_depend_on_the_phrase_only() -> None:
    key = generate_federation_key()
    cipher = FederationCipher(key, FED)
    t = cipher.token("Code Review")
    assert len(t) == 64 and int(t, 16) >= 0
    assert t == cipher.token("  code\treview ") == FederationCipher(key, FED).token("CODE REVIEW")
    # no slot: the same phrase sealed in two slots has one token, so its contributors count together
    assert cipher.seal_phrase(4, "code review")[0] == cipher.seal_phrase(5, "code review")[0] == t
    assert t != cipher.token("code reviews")
    assert t != FederationCipher(generate_federation_key(), FED).token("code review")
    assert t != FederationCipher(key, "fed-other").token("code review")
    assert normalise_phrase("Ｃｏｄｅ  REVIEW") == "code review"  # NFKC + casefold
    with pytest.raises(InvalidInput):
        cipher.token("   ")


def test_invite_round_trip_never_exposes_the_key() -> None:
    invite = Invite.create("https://coord.example.org:8443/api", FED, "tok-123")
    text = invite.format()
    assert text.startswith("continuum-invite:v1:")
    public_b64, key_b64 = text[len("continuum-invite:v1:"):].split("#")
    parsed = Invite.parse(text)
    assert parsed == invite and parsed.federation_key == invite.federation_key
    key_forms = {
        invite.federation_key.hex(),
        base64.b64encode(invite.federation_key).decode(),
        key_b64,
    }
    public = invite.public_part()
    sendable = [public.model_dump_json(), public_b64, repr(invite), str(invite),
                invite.model_dump_json(), repr(invite.model_dump())]
    for blob in sendable:
        assert not any(form in blob for form in key_forms)
    assert public.federation_id == FED and public.admission_token == "tok-123"


@pytest.mark.parametrize(
    "text, message",
    [
        ("https://x#y", "not a continuum invite"),
        ("continuum-invite:v1:abc", "exactly one '#'"),
        ("continuum-invite:v1:abc#def#ghi", "exactly one '#'"),
        ("continuum-invite:v1:ab$c#" + "A" * 43, "base64url"),
        ("continuum-invite:v1:e30#AAAA", "32 bytes"),
        ("continuum-invite:v1:bm90IGpzb24#" + "A" * 43, "not JSON"),
    ],
)
def test_invite_parse_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Invite.parse(text)


def test_invite_field_validation() -> None:
    with pytest.raises(InvalidInput, match="URL"):
        Invite.create("ftp://coord", FED, "tok")
    with pytest.raises(InvalidInput):
        Invite.create("https://coord", "", "tok")
    good = Invite.create("https://coord", FED, "tok").format()
    # A public part whose JSON has an unknown field is refused, not ignored.
    bad_public = base64.urlsafe_b64encode(
        b'{"admission_token":"t","coordinator_url":"https://c","federation_id":"f","v":1,"x":1}'
    ).decode().rstrip("=")
    with pytest.raises(InvalidInput):
        Invite.parse(f"continuum-invite:v1:{bad_public}#{good.split('#')[1]}")
