"""The deployment shape: the generated nginx configuration, whom the coordinator believes about a
client's address, and the supervisor of ``continuum-mcp coordinator --workers N --nginx``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from clusterkit import NGINX, Cluster, nginx_available

from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.coordinator import FederationCoordinator
from continuum_mcp.federation.coordinator._nginx import nginx_config
from continuum_mcp.federation.coordinator.config import CoordinatorConfig, parse_config
from continuum_mcp.federation.coordinator.supervisor import DeployOptions, split_deploy_args
from continuum_mcp.federation.protocol import MAX_BODY_BYTES, ErrorBody

needs_nginx = pytest.mark.skipif(not nginx_available(), reason="needs nginx (Debian: nginx)")


def test_deploy_flags_are_taken_out_and_every_coordinator_option_goes_to_each_worker() -> None:
    opts, rest = split_deploy_args(["--storage", "/s", "--workers", "3", "--nginx", "--rate-limit", "5",
                                    "--database-like-future-option", "x"])
    assert opts == DeployOptions(workers=3, nginx=True)
    assert rest == ["--storage", "/s", "--rate-limit", "5", "--database-like-future-option", "x"]
    cfg = parse_config(["--storage", "/s", "--port", "8080"])
    assert opts.ports(cfg) == [8081, 8082, 8083]  # behind nginx: the next ports; nginx has 8080
    assert DeployOptions(workers=2).ports(cfg) == [8080, 8081]  # no nginx: the workers are the public ports
    with pytest.raises(InvalidInput, match="overlap"):
        DeployOptions(workers=2, nginx=True, worker_port=8079).ports(cfg)
    with pytest.raises(InvalidInput, match="fixed --port"):
        opts.ports(parse_config(["--storage", "/s", "--port", "0"]))


def test_the_nginx_config_enforces_the_coordinators_own_limits(tmp_path: Path) -> None:
    cfg = CoordinatorConfig(storage_path=tmp_path, keep_alive_timeout_seconds=7, header_timeout_seconds=9)
    text = nginx_config(cfg, [("127.0.0.1", 9001), ("127.0.0.1", 9002)], listen="127.0.0.1:9000")
    assert f"client_max_body_size {MAX_BODY_BYTES};" in text
    assert "client_header_timeout 9s;" in text and "keepalive_timeout 7s;" in text
    assert "keepalive_timeout 6s;" in text  # upstream idle connections close before the coordinator closes them
    # the client's own X-Forwarded-For is replaced, never appended to: it cannot choose its address
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text and "proxy_add_x_forwarded_for" not in text
    assert "hash $http_x_continuum_instance consistent;" in text  # one identity, one token bucket
    assert "server 127.0.0.1:9001" in text and "server 127.0.0.1:9002" in text


@needs_nginx
def test_nginx_accepts_the_generated_config(tmp_path: Path) -> None:
    cfg = CoordinatorConfig(storage_path=tmp_path)
    (tmp_path / "nginx.conf").write_text(nginx_config(cfg, [("127.0.0.1", 9001)], listen="127.0.0.1:9000",
                                                      run_dir=tmp_path))
    proc = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("trusted", [None, "127.0.0.1"])
def test_x_forwarded_for_counts_only_when_it_comes_from_a_trusted_proxy(tmp_path: Path, trusted: str | None) -> None:
    coord = FederationCoordinator(storage_path=tmp_path / "c", address_rate_limit_per_minute=2,
                                  trusted_proxies=trusted)
    coord.start()
    try:
        def health(client: str) -> int:
            return httpx.get(coord.url + "/v1/health", headers={"X-Forwarded-For": client}).status_code

        assert [health("203.0.113.1"), health("203.0.113.1"), health("203.0.113.1")] == [200, 200, 429]
        # another client address: its own bucket only if the header comes from the trusted proxy
        assert health("203.0.113.2") == (200 if trusted else 429)
    finally:
        coord.stop()


@pytest.mark.slow
@needs_nginx
def test_workers_behind_nginx_are_supervised_restarted_and_stopped(tmp_path: Path) -> None:
    args = ["--federation-id", "fed-deploy", "--address-rate-limit", "4", "--log-level", "WARNING"]
    cl = Cluster(args, workers=2, nginx=True, storage=tmp_path / "coord")
    try:
        health = httpx.get(cl.url + "/v1/health")
        assert health.status_code == 200 and health.json()["federation_id"] == "fed-deploy"
        # nginx answers a body over the coordinator's limit itself, in the coordinator's error format
        big = httpx.post(cl.url + "/v1/join", content=b"x" * (MAX_BODY_BYTES + 1))
        assert big.status_code == 413 and ErrorBody.model_validate(big.json()).code == "too_large"
        # the address limit sees the real client through nginx, whatever X-Forwarded-For it claims
        codes = [httpx.get(cl.url + "/v1/health", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
                 for i in range(12)]
        assert 429 in codes
        old = cl.kill_worker(0)
        new = cl.wait_restarted(0, old)
        assert new != old
        assert _answers(cl.worker_urls()[0] + "/v1/health")  # the restarted worker serves again
        pids = [*cl.pids().values()]
    finally:
        assert cl.stop() == 0
    for pid in pids:  # SIGTERM to the supervisor stopped every worker
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    assert any(line.startswith("worker 0 pid") and "exited with code -9" in line for line in cl.lines)


def _answers(url: str, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            return httpx.get(url).status_code in (200, 429)
        except httpx.TransportError:
            time.sleep(0.1)
    return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_more_than_one_worker_needs_a_fixed_port(tmp_path: Path) -> None:
    from continuum_mcp.federation.coordinator.cli import main

    assert main(["--storage", str(tmp_path / "c"), "--port", "0", "--workers", "2"]) == InvalidInput.exit_code
