"""Coordinator hardening (issue 9, fault and fuzz campaign): one test per finding.

Route-level cases use Starlette's TestClient on the real app (no server needed); the idle
connection cases need a real socket, so they start the real server on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from continuum_mcp.crypto.identity import Identity
from continuum_mcp.errors import StoreCorrupt
from continuum_mcp.federation.coordinator import FederationCoordinator, main
from continuum_mcp.federation.coordinator.store import DB_NAME, LEDGER_DB_NAME
from continuum_mcp.federation.protocol import ErrorBody, JoinRequest

#: every test runs on both coordinator backends (SQLite, PostgreSQL: tests/conftest.py)
pytestmark = pytest.mark.usefixtures("backend")

FED = "fed-hard"


@pytest.fixture()
def coord(tmp_path: Path) -> Any:
    c = FederationCoordinator(storage_path=tmp_path / "coord", federation_id=FED, privacy_mode="open", slots=4, dim=8,
                              address_rate_limit_per_minute=10_000)
    yield c
    c.stop()


def signed(client: TestClient, ident: Identity, method: str, path: str, body: bytes = b"") -> Any:
    headers = ident.sign_request(method, path, body)
    if body:
        headers["content-type"] = "application/json"
    return client.request(method, path, content=body, headers=headers)


def error_code(r: Any, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    return ErrorBody.model_validate(r.json()).code


# ------------------------------------------------------------------- (a) absurdly nested bodies


def test_deeply_nested_bodies_are_a_json_400_from_a_fresh_key(coord: FederationCoordinator) -> None:
    client = TestClient(coord.app)
    nested = b"[" * 200_000
    assert error_code(signed(client, Identity.generate(), "POST", "/v1/join", nested), 400) == "invalid_input"
    # the same from a member, on a member route, and nested objects inside a valid envelope
    token = coord.create_admission_tokens(1)[0]
    member = Identity.generate()
    join = json.dumps(JoinRequest(admission_token=token, privacy_mode="open").model_dump()).encode()
    assert signed(client, member, "POST", "/v1/join", join).status_code == 200
    assert error_code(signed(client, member, "POST", "/v1/contributions", nested), 400) == "invalid_input"
    deep = b'{"message": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001
    assert error_code(signed(client, member, "POST", "/v1/rounds/0/secagg/advertise", deep), 400) == "invalid_input"


# ------------------------------------------------------------------- (b) corrupt or empty database


@pytest.mark.sqlite_only
def test_corrupt_database_refuses_to_start_with_one_line_and_exit_code(tmp_path: Path, capsys: Any) -> None:
    storage = tmp_path / "coord"
    storage.mkdir()
    (storage / DB_NAME).write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(StoreCorrupt, match="cannot be opened"):
        FederationCoordinator(storage_path=storage, federation_id=FED)
    assert main(["--storage", str(storage), "--port", "0", "--federation-id", FED]) == StoreCorrupt.exit_code == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: store_corrupt:") and "Traceback" not in err[0]


@pytest.mark.sqlite_only
def test_empty_database_file_does_not_start_a_new_federation(tmp_path: Path, capsys: Any) -> None:
    storage = tmp_path / "coord"
    storage.mkdir()
    (storage / DB_NAME).write_bytes(b"")
    with pytest.raises(StoreCorrupt, match="empty"):
        FederationCoordinator(storage_path=storage, federation_id=FED)
    assert main(["--storage", str(storage), "--port", "0"]) == 5
    assert "refusing to start a new federation" in capsys.readouterr().err.lower()
    assert (storage / DB_NAME).stat().st_size == 0  # nothing was written over it


@pytest.mark.sqlite_only
def test_missing_database_beside_ledgers_is_refused(tmp_path: Path) -> None:
    storage = tmp_path / "coord"
    c = FederationCoordinator(storage_path=storage, federation_id=FED)
    c.stop()
    (storage / LEDGER_DB_NAME).write_bytes(b"")  # ledgers from earlier rounds
    for p in storage.glob(DB_NAME + "*"):
        p.unlink()
    with pytest.raises(StoreCorrupt, match="no coordinator.db"):
        FederationCoordinator(storage_path=storage, federation_id=FED)


# ------------------------------------------------------------------- (c) throttling fresh keys


def test_fresh_key_pairs_are_throttled_per_address_and_leave_no_replay_rows(tmp_path: Path) -> None:
    coord = FederationCoordinator(storage_path=tmp_path / "coord", federation_id=FED, privacy_mode="open",
                                  address_rate_limit_per_minute=20, rate_limit_per_minute=10_000)
    try:
        client = TestClient(coord.app)
        bad = json.dumps(JoinRequest(admission_token="not-a-token", privacy_mode="open").model_dump()).encode()
        codes = [signed(client, Identity.generate(), "POST", "/v1/join", bad).status_code for _ in range(40)]
        assert codes.count(403) <= 21 and codes.count(429) >= 19, codes  # each key fresh: the address pays
        assert len(coord.replay_guard) == 0  # failed admissions persisted no nonce
        limited = signed(client, Identity.generate(), "GET", "/v1/federation")
        assert error_code(limited, 429) == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
    finally:
        coord.stop()


def test_members_are_not_charged_to_the_address_and_a_join_persists_its_nonce(tmp_path: Path) -> None:
    coord = FederationCoordinator(storage_path=tmp_path / "coord", federation_id=FED, privacy_mode="open",
                                  address_rate_limit_per_minute=3)
    try:
        client = TestClient(coord.app)
        token = coord.create_admission_tokens(1)[0]
        member = Identity.generate()
        join = json.dumps(JoinRequest(admission_token=token, privacy_mode="open").model_dump()).encode()
        assert signed(client, member, "POST", "/v1/join", join).status_code == 200
        assert len(coord.replay_guard) == 1
        for _ in range(5):
            assert signed(client, Identity.generate(), "GET", "/v1/status").status_code in (403, 429)
        assert signed(client, member, "GET", "/v1/status").status_code == 200  # the address is spent, not the member
        assert signed(client, member, "GET", "/v1/credits").status_code == 200
    finally:
        coord.stop()


# ------------------------------------------------------------------- (d) idle connections


@pytest.fixture()
def served(tmp_path: Path) -> Any:
    c = FederationCoordinator(storage_path=tmp_path / "coord", federation_id=FED, header_timeout_seconds=1.0,
                              keep_alive_timeout_seconds=1.0)
    c.start()
    yield c
    c.stop()


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (reads until EOF); fails after ``seconds``."""
    sock.settimeout(seconds)
    start = time.monotonic()
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        pytest.fail(f"the server kept an idle connection open for more than {seconds} s")
    return time.monotonic() - start


def test_idle_connections_are_closed_by_the_server(served: FederationCoordinator) -> None:
    silent = socket.create_connection((served.host, served.port))
    partial = socket.create_connection((served.host, served.port))
    partial.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # headers never finished (slowloris)
    kept = socket.create_connection((served.host, served.port))
    kept.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")  # one request, then idle keep-alive
    for s in (silent, partial, kept):
        assert closed_within(s, 5.0) < 4.0
        s.close()
