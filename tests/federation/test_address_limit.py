"""The per-address limit of callers that are not members holds across coordinator processes (issue 13).

Strangers choose their own instance ids, so behind nginx they reach every one of the N processes;
each process's bucket alone would give them N times ``--address-rate-limit``. The limit is therefore
also kept in the database all processes share: whichever process a stranger's requests reach, the
address gets the configured number in total. Members are limited by identity, never by the
strangers on their address; ``GET /v1/health`` stays answerable and writes nothing; a database
failure in the shared step is the usual JSON 503. Both backends (SQLite files, PostgreSQL).

Counts are exact where the bucket's clock is injected; where it is the real clock (the cluster of
real processes) the limit is small, so a refill during the test is bounded by the rate.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from clusterkit import Cluster, nginx_available
from fedkit import admin_api, member_api, refused, send
from test_log_migration import _set_version, _version  # the store's version record, on either backend

from continuum_mcp.crypto.identity import Identity
from continuum_mcp.errors import RateLimited
from continuum_mcp.federation.coordinator import FederationCoordinator
from continuum_mcp.federation.coordinator._schema import SCHEMA_VERSION
from continuum_mcp.federation.coordinator.ratelimit import StoreBucket
from continuum_mcp.federation.coordinator.store import DB_NAME, CoordinatorStore
from continuum_mcp.federation.protocol import JoinRequest

pytestmark = pytest.mark.usefixtures("backend")

FED, ADMIN = "fed-addrlimit", "addrlimit-admin"
LIMIT = 5  # requests per minute per address
STRANGERS, MEMBER_HOME = "203.0.113.7", "198.51.100.1"


def buckets(store: CoordinatorStore) -> dict[str, float]:
    return {str(a): float(t) for a, t in store.db.read("SELECT address, tokens FROM address_buckets")}


def drop_buckets_table(storage: Path, database: str | None) -> None:
    """Break the shared step from outside, as a damaged database would."""
    if database is None:
        with sqlite3.connect(storage / DB_NAME) as conn:
            conn.execute("DROP TABLE address_buckets")
        return
    with psycopg.connect(database, autocommit=True) as pg:
        pg.execute("DROP TABLE address_buckets")


# ----------------------------------------------------------------------------- the SQL bucket

def test_the_shared_bucket_refills_at_its_rate_up_to_its_capacity_whichever_store_takes(
        tmp_path: Path, backend: str | None) -> None:
    a, b = CoordinatorStore(tmp_path, database=backend), CoordinatorStore(tmp_path, database=backend)
    try:
        cap, rate = 3.0, 3.0 / 60.0  # one token per 20 s

        def take(s: CoordinatorStore, t: float, key: str = "x") -> bool:
            return s.take_token(key, cap, rate, 1000.0 + t)

        assert [take(a, 0), take(b, 0), take(a, 0), take(b, 0)] == [True, True, True, False]
        assert not take(a, 19.5)  # half a token back: still none
        assert take(b, 20.5) and not take(a, 20.5)
        assert not take(a, 5.0)  # a clock behind the row's adds nothing
        assert [take(b, 10_000) for _ in range(4)] == [True, True, True, False]  # full is capacity, not more
        assert take(a, 0, key="y")  # another key: its own bucket
        assert buckets(a) == pytest.approx({"x": 0.0, "y": 2.0})
    finally:
        a.close()
        b.close()


def test_buckets_full_again_are_pruned_once_a_period_so_the_table_stays_small(
        tmp_path: Path, backend: str | None) -> None:
    store = CoordinatorStore(tmp_path, database=backend)
    try:
        clock = [1000.0]
        bucket = StoreBucket(store, 6, lambda: clock[0])  # capacity 6, full again after 60 s
        for i in range(50):
            bucket.take(f"old-{i}")
        clock[0] = 1030.0
        bucket.take("recent")
        assert len(buckets(store)) == 51  # nothing is full again yet, and no prune is due
        clock[0] = 1061.0
        bucket.take("now")  # the period is over: the buckets untouched for 60 s go
        assert set(buckets(store)) == {"recent", "now"}
        for _ in range(6):  # a pruned address starts full, as it would have refilled
            bucket.take("old-0")
        with pytest.raises(RateLimited) as refusal:
            bucket.take("old-0")
        assert refusal.value.retry_after == pytest.approx(10.0)  # within one token's refill time
    finally:
        store.close()


def test_a_store_of_schema_3_gets_the_buckets_table_when_opened(tmp_path: Path, backend: str | None) -> None:
    CoordinatorStore(tmp_path, database=backend).close()
    drop_buckets_table(tmp_path, backend)  # as the previous release left it
    _set_version(tmp_path, backend, 3)
    store = CoordinatorStore(tmp_path, database=backend)
    try:
        assert _version(store) == SCHEMA_VERSION == 4
        assert store.take_token("203.0.113.9", 2.0, 1.0, 1.0) and buckets(store) == {"203.0.113.9": 1.0}
    finally:
        store.close()


# ----------------------------------------------------------------------------- two coordinators, one database

@pytest.fixture
def pair(tmp_path: Path) -> Iterator[list[FederationCoordinator]]:
    """Two coordinator nodes on one store (the backend's), each with its own in-process buckets, serving
    on 127.0.0.1; they believe X-Forwarded-For (as workers behind nginx do), so a test picks each
    caller's address. Their clock is one frozen wall time: no bucket refills during the test."""
    t0 = time.time()
    nodes: list[FederationCoordinator] = []
    try:
        for _ in range(2):
            nodes.append(FederationCoordinator(
                storage_path=tmp_path / "coord", federation_id=FED, privacy_mode="open", slots=4, dim=8,
                address_rate_limit_per_minute=LIMIT, trusted_proxies="127.0.0.1", now=lambda: t0))
            nodes[-1].start()
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def stranger(node: FederationCoordinator, address: str = STRANGERS) -> httpx.Response:
    """A signed request of a fresh key pair (a new instance id each time), from ``address``."""
    return send(node.url, "GET", "/v1/federation", sign_as=Identity.generate(), headers={"X-Forwarded-For": address})


def test_strangers_spread_over_two_coordinators_get_the_address_limit_once_not_twice(
        pair: list[FederationCoordinator]) -> None:
    codes = [stranger(pair[k % 2]).status_code for k in range(2 * LIMIT)]
    assert codes == [200] * LIMIT + [429] * LIMIT  # each node alone would have let LIMIT through
    for node in pair:  # refused as every 429 is: JSON, Retry-After
        r = stranger(node)
        assert refused(r, 429, "rate_limited") and int(r.headers["Retry-After"]) >= 1
    assert buckets(pair[0].store)[STRANGERS] < 1.0
    assert stranger(pair[1], "203.0.113.8").status_code == 200  # another address has its own limit


def test_a_member_is_not_limited_by_the_strangers_on_its_address(pair: list[FederationCoordinator]) -> None:
    member = Identity.generate()
    join = JoinRequest(admission_token=pair[0].create_admission_tokens(1)[0], privacy_mode="open")
    assert send(pair[0].url, "POST", "/v1/join", join, sign_as=member,
                headers={"X-Forwarded-For": MEMBER_HOME}).status_code == 200
    while stranger(pair[0]).status_code == 200:  # strangers on the member's address spend it
        pass
    assert stranger(pair[1]).status_code == 429
    for node in pair:  # on its own identity's bucket, on either node
        for path in ("/v1/status", "/v1/federation", "/v1/credits"):
            assert send(node.url, "GET", path, sign_as=member, headers={"X-Forwarded-For": STRANGERS}
                        ).status_code == 200, path


def test_health_answers_on_every_node_and_writes_nothing(pair: list[FederationCoordinator]) -> None:
    while stranger(pair[0]).status_code == 200:  # the address is spent in the database
        pass
    before = buckets(pair[0].store)

    def health(node: FederationCoordinator, address: str = STRANGERS) -> int:
        return httpx.get(node.url + "/v1/health", headers={"X-Forwarded-For": address}).status_code

    for node in pair:  # health has this process's bucket only: LIMIT probes per node and address
        assert [health(node) for _ in range(LIMIT)] == [200] * LIMIT
        assert health(node) == 429
    assert buckets(pair[0].store) == before  # no probe wrote a bucket
    drop_buckets_table(pair[0].config.storage_path, pair[0].config.database)
    assert [health(node, "203.0.113.20") for node in pair] == [200, 200]  # it does not even read them


def test_a_database_failure_in_the_shared_step_is_a_json_503_and_members_go_on(
        pair: list[FederationCoordinator]) -> None:
    member = Identity.generate()
    join = JoinRequest(admission_token=pair[0].create_admission_tokens(1)[0], privacy_mode="open")
    assert send(pair[0].url, "POST", "/v1/join", join, sign_as=member).status_code == 200
    drop_buckets_table(pair[0].config.storage_path, pair[0].config.database)
    for node in pair:
        body = refused(stranger(node), 503, "coordinator_unavailable")
        assert "nothing was changed" in body.message and "address" in body.message
        assert send(node.url, "GET", "/v1/status", sign_as=member).status_code == 200
        assert httpx.get(node.url + "/v1/health").status_code == 200


# ----------------------------------------------------------------------------- real processes behind nginx

@pytest.mark.slow
@pytest.mark.skipif(not nginx_available(), reason="needs nginx (Debian: nginx)")
def test_two_worker_processes_behind_nginx_hold_one_address_limit(tmp_path: Path, backend: str | None) -> None:
    limit = 4  # one token back per 15 s of the real clock
    args = ["--federation-id", FED, "--admin-token", ADMIN, "--privacy-mode", "open", "--slots", "4", "--dim", "8",
            "--address-rate-limit", str(limit), "--log-level", "WARNING", *(["--database", backend] if backend else [])]
    with Cluster(args, workers=2, nginx=True, storage=tmp_path / "coord") as cl:
        token = admin_api(cl.url, ADMIN).admin_invites(1).admission_tokens[0]  # admin: a bucket of its own
        member = member_api(cl.url, max_retries=0)
        started = time.monotonic()
        member.join(JoinRequest(admission_token=token, privacy_mode="open"))  # a stranger until admitted: 1 of 4
        # every caller here is 127.0.0.1 (nginx says so; the workers see it directly); each stranger's
        # fresh instance id is hashed by nginx to either worker, and a third of them go to each directly
        targets = [*cl.worker_urls(), cl.url]
        codes = [send(targets[k % 3], "GET", "/v1/federation", sign_as=Identity.generate()).status_code
                 for k in range(3 * limit)]
        refills = int((time.monotonic() - started) * limit / 60.0)
        assert limit - 1 <= codes.count(200) <= limit - 1 + refills, codes  # not 2 x limit: one limit
        assert set(codes) == {200, 429}
        for url in targets:  # the member: its identity's limit, on every process; health answers on each
            assert member_api(url, member.identity, max_retries=0).status().instance_id == member.identity.instance_id
            assert httpx.get(url + "/v1/health").status_code == 200
        store = CoordinatorStore(tmp_path / "coord", database=backend)
        try:
            assert set(buckets(store)) == {"127.0.0.1", "admin:127.0.0.1"}  # health probes wrote none
        finally:
            store.close()
