"""Identity, canonical serialisation, signed envelopes and replay guards (real Ed25519, real SQLite)."""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import nacl.signing
import pytest

from continuum_mcp.errors import CryptoError, InvalidInput, ReplayError
from continuum_mcp.crypto.identity import (
    Envelope,
    Identity,
    MemoryReplayGuard,
    SQLiteReplayGuard,
    Verifier,
    canonical_json,
    derive_instance_id,
    verify_signature_only,
)


class Clock:
    """A controllable clock for the verifier (time is an input, not a component)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _verifier(clock: Clock | None = None, guard: object | None = None) -> Verifier:
    guard = MemoryReplayGuard() if guard is None else guard
    return Verifier(guard, clock=clock or Clock())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- key file


def test_key_file_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "identity.key"
    old = os.umask(0)  # even with a permissive umask the file must be private
    try:
        ident = Identity.load_or_create(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(r"fed-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}", ident.instance_id)
    assert base64.b64decode(ident.public_key_b64) == ident.public_key
    assert ident.instance_id == derive_instance_id(ident.public_key)
    again = Identity.load_or_create(path)
    assert again.instance_id == ident.instance_id and again.public_key == ident.public_key
    assert not list(path.parent.glob("*.tmp"))
    assert ident.instance_id != Identity.load_or_create(tmp_path / "other.key").instance_id


def test_loose_key_file_refused_or_repaired(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    ident = Identity.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(CryptoError, match="mode"):
        Identity.load_or_create(path)
    repaired = Identity.load_or_create(path, repair_mode=True)
    assert repaired.instance_id == ident.instance_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_corrupt_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"format": "something else"}')
    os.close(fd)
    with pytest.raises(CryptoError, match="corrupt"):
        Identity.load_or_create(path)


# --------------------------------------------------------------------------- canonical JSON


def test_canonical_json_is_unique_and_strict() -> None:
    a = canonical_json({"b": [1, True, None], "a": "é", "c": {"y": 1, "x": "z"}})
    b = canonical_json({"c": {"x": "z", "y": 1}, "a": "é", "b": [1, True, None]})
    assert a == b == '{"a":"é","b":[1,true,null],"c":{"x":"z","y":1}}'.encode("utf-8")
    for bad in ({"x": 1.5}, {"x": [0.0]}, {1: "a"}, {"x": b"bytes"}, {"x": {1, 2}}):
        with pytest.raises(InvalidInput):
            canonical_json(bad)


# --------------------------------------------------------------------------- envelopes

FIELDS = ["v", "instance_id", "public_key", "method", "path", "timestamp", "nonce",
          "body_sha256", "signature"]


def _tampered(env: Envelope, field: str) -> Envelope:
    data = env.model_dump()
    value = data[field]
    if isinstance(value, int):
        data[field] = value + 1
    elif field in ("public_key", "signature", "nonce"):
        raw = bytearray(base64.b64decode(value))
        raw[0] ^= 1
        data[field] = base64.b64encode(bytes(raw)).decode()
    elif field == "instance_id":
        data[field] = "fed-0000-0000-0000"
    elif field == "body_sha256":
        data[field] = "0" * 64
    else:
        data[field] = value + "x"
    return Envelope(**data)


@pytest.mark.parametrize("field", FIELDS)
def test_every_tampered_field_is_rejected(field: str) -> None:
    clock = Clock()
    ident = Identity.generate()
    body = b'{"hello":"world"}'
    env = ident.sign("POST", "/v1/contribute", body, timestamp=int(clock.now))
    verifier = _verifier(clock)
    bad = _tampered(env, field)
    with pytest.raises(CryptoError):
        verifier.verify(bad, method=bad.method, path=bad.path, body=body)
    # The genuine envelope still verifies: the forged one did not burn its nonce.
    assert verifier.verify(env, method="POST", path="/v1/contribute", body=body) == ident.instance_id


def test_method_path_body_and_keys_are_bound() -> None:
    clock = Clock()
    ident, other = Identity.generate(), Identity.generate()
    env = ident.sign("POST", "/a", b"body", timestamp=int(clock.now))
    v = _verifier(clock)
    with pytest.raises(CryptoError):
        v.verify(env, method="GET", path="/a", body=b"body")
    with pytest.raises(CryptoError):
        v.verify(env, method="POST", path="/b", body=b"body")
    with pytest.raises(CryptoError):
        v.verify(env, method="POST", path="/a", body=b"other body")
    with pytest.raises(CryptoError, match="registered"):
        v.verify(env, method="POST", path="/a", body=b"body", expected_public_key=other.public_key)
    # A key that does not hash to the claimed instance id: an impostor re-signs under its own key
    # while claiming the victim's id.
    forged = other.sign("POST", "/a", b"body", timestamp=int(clock.now))
    impostor = Envelope(**{**forged.model_dump(), "instance_id": ident.instance_id})
    with pytest.raises(CryptoError, match="does not match the instance id"):
        v.verify(impostor, method="POST", path="/a", body=b"body")
    # A wrong key: a signature made by another key over the same fields.
    wrong = nacl.signing.SigningKey.generate().sign(env.signing_bytes()).signature
    wrong_env = Envelope(**{**env.model_dump(), "signature": base64.b64encode(wrong).decode()})
    with pytest.raises(CryptoError, match="bad signature"):
        v.verify(wrong_env, method="POST", path="/a", body=b"body")
    assert v.verify(env, method="POST", path="/a", body=b"body",
                    expected_public_key=ident.public_key) == ident.instance_id


def test_timestamp_window_and_replay() -> None:
    clock = Clock()
    ident = Identity.generate()
    v = _verifier(clock)
    now = int(clock.now)
    for offset in (-301, 301, -10_000):
        env = ident.sign("POST", "/x", b"", timestamp=now + offset)
        with pytest.raises(ReplayError, match="window"):
            v.verify(env, method="POST", path="/x", body=b"")
    for offset in (-300, 0, 300):
        env = ident.sign("POST", "/x", b"", timestamp=now + offset)
        v.verify(env, method="POST", path="/x", body=b"")
        with pytest.raises(ReplayError, match="replayed"):
            v.verify(env, method="POST", path="/x", body=b"")
    # The same nonce from another identity is a different message.
    nonce = os.urandom(16)
    v.verify(ident.sign("GET", "/y", b"", timestamp=now, nonce=nonce), method="GET", path="/y",
             body=b"")
    other = Identity.generate()
    v.verify(other.sign("GET", "/y", b"", timestamp=now, nonce=nonce), method="GET", path="/y",
             body=b"")


def test_memory_guard_expires_nonces_and_is_bounded() -> None:
    clock = Clock()
    guard = MemoryReplayGuard(max_entries=50)
    v = _verifier(clock, guard)
    ident = Identity.generate()
    for _ in range(50):
        v.verify(ident.sign("GET", "/", b"", timestamp=int(clock.now)), method="GET", path="/",
                 body=b"")
    assert len(guard) == 50
    with pytest.raises(ReplayError, match="too many"):  # fails closed rather than forgetting
        v.verify(ident.sign("GET", "/", b"", timestamp=int(clock.now)), method="GET", path="/",
                 body=b"")
    old = ident.sign("GET", "/", b"", timestamp=int(clock.now))
    clock.now += 601  # every remembered message is now outside the window
    v.verify(ident.sign("GET", "/", b"", timestamp=int(clock.now)), method="GET", path="/",
             body=b"")
    assert len(guard) == 1
    with pytest.raises(ReplayError, match="window"):  # the forgotten nonce is still refused
        v.verify(old, method="GET", path="/", body=b"")


def test_sqlite_guard_survives_restart_and_purges(tmp_path: Path) -> None:
    clock = Clock()
    db = tmp_path / "nonces.sqlite"
    ident = Identity.generate()
    env = ident.sign("POST", "/r", b"x", timestamp=int(clock.now))
    guard = SQLiteReplayGuard(db)
    _verifier(clock, guard).verify(env, method="POST", path="/r", body=b"x")
    guard.close()
    reopened = SQLiteReplayGuard(db)
    with pytest.raises(ReplayError, match="replayed"):
        _verifier(clock, reopened).verify(env, method="POST", path="/r", body=b"x")
    assert len(reopened) == 1
    reopened.purge(int(clock.now) + 301)
    assert len(reopened) == 0
    reopened.close()


def test_http_headers_round_trip() -> None:
    clock = Clock()
    ident = Identity.generate()
    body = b'{"slot":3}'
    headers = ident.sign("post", "/v1/rounds/7", body, timestamp=int(clock.now)).to_headers()
    lowered = {k.lower(): v for k, v in headers.items()}
    env = Envelope.from_headers(lowered, method="POST", path="/v1/rounds/7", body=body)
    assert _verifier(clock).verify(env, method="POST", path="/v1/rounds/7", body=body) == (
        ident.instance_id
    )
    tampered = Envelope.from_headers(headers, method="POST", path="/v1/rounds/7", body=b"{}")
    with pytest.raises(CryptoError):
        _verifier(clock).verify(tampered, method="POST", path="/v1/rounds/7", body=b"{}")
    with pytest.raises(CryptoError, match="missing"):
        Envelope.from_headers({}, method="POST", path="/", body=b"")
    assert verify_signature_only(env, body) == ident.instance_id
