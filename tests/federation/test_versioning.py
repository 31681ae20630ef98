"""Protocol versioning: a v1 peer meets a v2 peer and stops at once with an "upgrade" error.

Requests name their protocol version in ``X-Continuum-Protocol`` and every coordinator answer
names its own; a mismatch on either side is ``upgrade_required`` (HTTP 426, exit code 11), never
a half-working round. An existing v1 coordinator database is migrated (ciphertexts of v1 dropped,
members, credits and rounds kept) and a newer one is refused with the reason.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fedapp import BASE, Kit
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import Invite, generate_federation_key
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.errors import ERRORS_BY_CODE, EXIT_CODE_MEANINGS, StoreCorrupt, UpgradeRequired
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.client import FederationClient
from continuum_mcp.federation.coordinator import CoordinatorStore
from continuum_mcp.federation.coordinator._schema import SCHEMA_VERSION
from continuum_mcp.federation.coordinator.store import DB_NAME
from continuum_mcp.federation.protocol import ERRORS, PROTOCOL_HEADER, PROTOCOL_VERSION
from continuum_mcp.memory.store import MemoryStore

#: every test runs on both coordinator backends (SQLite, PostgreSQL: tests/conftest.py)
pytestmark = pytest.mark.usefixtures("backend")

V1_INFO = {"federation_id": "fed-old", "api_version": 1, "private": True, "privacy_mode": "high",
           "min_contributors": 3, "require_contribution": True, "codebook_version": "v0", "slots": 256, "dim": 384,
           "round_interval_seconds": 86400, "phase_timeout_seconds": 60, "credit_rules": {}}


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    k = Kit(tmp_path)
    yield k
    k.close()


def v1_coordinator() -> TestClient:
    """A stand-in for a coordinator of the previous release: same paths, v1 answers, no header."""
    async def federation(_: Request) -> JSONResponse:
        return JSONResponse(V1_INFO)

    return TestClient(Starlette(routes=[Route("/v1/federation", federation)]), base_url=BASE)


def test_upgrade_required_is_one_typed_error_with_its_own_status_and_exit_code() -> None:
    assert ERRORS_BY_CODE["upgrade_required"] is UpgradeRequired
    assert (UpgradeRequired.http_status, UpgradeRequired.exit_code) == (426, 11) and ERRORS["upgrade_required"] == 426
    assert "upgrade" in EXIT_CODE_MEANINGS[11]


def test_a_v1_client_is_told_to_upgrade_by_a_v2_coordinator(kit: Kit) -> None:
    http = kit.http()
    ident = Identity.generate()
    headers = ident.sign_request("GET", "/v1/federation")
    assert headers.pop(PROTOCOL_HEADER) == str(PROTOCOL_VERSION)  # what a v1 client sends: no protocol header
    resp = http.get("/v1/federation", headers=headers)
    assert resp.status_code == 426 and resp.json()["code"] == "upgrade_required"
    assert "upgrade this client" in resp.json()["message"] and "v2" in resp.json()["message"]
    assert resp.headers[PROTOCOL_HEADER] == str(PROTOCOL_VERSION)
    # a client from the future is told the other way round
    future = {**ident.sign_request("GET", "/v1/federation"), PROTOCOL_HEADER: str(PROTOCOL_VERSION + 1)}
    resp = http.get("/v1/federation", headers=future)
    assert resp.status_code == 426 and "upgrade this coordinator" in resp.json()["message"]
    # unsigned routes answer without the header, and every answer names the version
    for path in ("/v1/health", "/openapi.json", "/v1/no-such-route"):
        assert http.get(path).headers[PROTOCOL_HEADER] == str(PROTOCOL_VERSION)
    assert kit.api().health().protocol_version == PROTOCOL_VERSION


def test_a_v2_client_is_told_the_coordinator_must_be_upgraded(kit: Kit, tmp_path: Path, embedder: object) -> None:
    api = CoordinatorAPI(BASE, Identity.generate(), http=v1_coordinator(), max_retries=0)
    with pytest.raises(UpgradeRequired, match="speaks federation protocol v1"):
        api.federation()
    # the same through a whole join: refused before anything is sent or stored
    settings = Settings(data_dir=tmp_path / "member")
    store = MemoryStore(settings, embedder)  # type: ignore[arg-type]
    client = FederationClient(store, settings, http=v1_coordinator(), max_retries=0)
    try:
        invite = Invite.build(BASE, "fed-old", "token", generate_federation_key()).format()
        with pytest.raises(UpgradeRequired):
            client.join(invite)
        assert client.membership() is None
    finally:
        client.close()
        store.close()


def test_a_newer_coordinator_tells_this_client_to_upgrade() -> None:
    def newer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={**V1_INFO, "api_version": PROTOCOL_VERSION + 1},
                              headers={PROTOCOL_HEADER: str(PROTOCOL_VERSION + 1)})

    api = CoordinatorAPI(BASE, Identity.generate(), transport=httpx.MockTransport(newer), max_retries=0)
    with pytest.raises(UpgradeRequired, match="upgrade this client"):
        api.federation()

    def refuses(request: httpx.Request) -> httpx.Response:
        return httpx.Response(426, json={"code": "upgrade_required", "message": "the coordinator says: upgrade"},
                              headers={PROTOCOL_HEADER: str(PROTOCOL_VERSION + 1)})

    api = CoordinatorAPI(BASE, Identity.generate(), transport=httpx.MockTransport(refuses), max_retries=0)
    with pytest.raises(UpgradeRequired, match="the coordinator says: upgrade"):
        api.federation()


def make_v1_database(storage: Path) -> None:
    """A coordinator database as the previous release left it: schema 1, a member, a credit, a
    released v1 phrase ciphertext and a pending submission."""
    store = CoordinatorStore(storage)
    store.ensure_federation("fed-old")
    ident = Identity.generate()
    store.admit(ident.instance_id, ident.public_key, "standard", "high", None, private=False, now=1.0)
    store.close()
    conn = sqlite3.connect(storage / DB_NAME)
    with conn:
        conn.execute("DROP TABLE invite_journal")
        conn.execute("ALTER TABLE submissions DROP COLUMN statement_token")
        conn.execute("INSERT INTO credit_journal (instance_id, amount, kind, ref, at) VALUES (?, 2, 'earn', 'r0', 1)",
                     (ident.instance_id,))
        conn.execute("INSERT INTO rounds (round_id, attempt, phase, opened_at, next_close_at) "
                     "VALUES (0, 0, 'collecting', 1, 2)")
        conn.execute("INSERT INTO submissions (instance_id, round_id, ct_round, slot, confidence, submitted_at) "
                     "VALUES (?, 0, 0, 3, 0.9, 1)", (ident.instance_id,))
        conn.execute("INSERT INTO released_phrases VALUES (3, ?, 'AXYZ', 0, 4, 4.2, 0)", ("ab" * 32,))
        conn.execute("PRAGMA user_version = 1")
    conn.close()


@pytest.mark.sqlite_only
def test_a_v1_database_is_migrated_keeping_members_and_credits(tmp_path: Path) -> None:
    make_v1_database(tmp_path)
    store = CoordinatorStore(tmp_path)
    try:
        with store.reading() as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert conn.execute("SELECT COUNT(*) FROM members").fetchone()[0] == 1
            assert conn.execute("SELECT COUNT(*) FROM credit_journal").fetchone()[0] == 1
            assert conn.execute("SELECT COUNT(*) FROM rounds").fetchone()[0] == 1
            # v1 ciphertexts cannot be opened by v2 members: dropped, and said so
            assert conn.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 0
            assert conn.execute("SELECT COUNT(*) FROM released_phrases").fetchone()[0] == 0
            assert "v1 ciphertexts dropped" in conn.execute(
                "SELECT value FROM meta WHERE key='migrated_from_v1'").fetchone()[0]
        assert store.invite_journal() == []  # the new table exists
    finally:
        store.close()


@pytest.mark.sqlite_only
def test_a_database_of_a_newer_release_is_refused_with_the_reason(tmp_path: Path) -> None:
    CoordinatorStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreCorrupt, match="newer than this release understands"):
        CoordinatorStore(tmp_path)
