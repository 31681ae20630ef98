"""Streamable HTTP needs the bearer token of the data directory; without it: 401 JSON.

A real uvicorn on 127.0.0.1 serves the real app; httpx and the real `mcp` client talk to it.
"""

from __future__ import annotations

import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_calls import call

from continuum_mcp.config import Settings
from continuum_mcp.errors import InvalidInput
from continuum_mcp.server import build_http_app, build_server, http_token, run_http, token_path
from embeddings import SentenceTransformerEmbedder

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@contextmanager
def serving(settings: Settings, embedder: SentenceTransformerEmbedder, token: str | None) -> Iterator[str]:
    """The MCP endpoint URL of a real uvicorn running the app in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_http_app(build_server(settings, embedder), token=token)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_token_is_made_once_and_readable_only_by_the_user(tmp_path: Path) -> None:
    token = http_token(tmp_path / "m")
    path = token_path(tmp_path / "m")
    assert len(token) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    assert http_token(tmp_path / "m") == token  # kept across restarts, and tightened again
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_requests_without_the_token_get_401_json(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    token = http_token(settings.data_dir)
    with serving(settings, embedder, token) as url:
        for auth in ({}, {"authorization": "Bearer wrong"}, {"authorization": token}):
            r = httpx.post(url, json=INIT, headers={**HEADERS, **auth})
            assert r.status_code == 401, auth
            assert r.headers["content-type"] == "application/json" and r.json()["error"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
        r = httpx.post(url, json=INIT, headers={**HEADERS, "authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "continuum-mcp" in r.text


def test_an_mcp_client_with_the_token_uses_the_memory(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    token = http_token(settings.data_dir)
    with serving(settings, embedder, token) as url:
        async def go() -> None:
            http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=120)
            async with http, Client(streamable_http_client(url, http_client=http)) as c:
                r = await call(c, "remember", {"text": "Spoken over authenticated HTTP"})
                hits = (await call(c, "recall", {"query": "authenticated HTTP"}))["hits"]
                assert hits[0]["memory"]["id"] == r["memory"]["id"]
        anyio.run(go)


def test_no_auth_serves_on_loopback_only(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    for host in ("0.0.0.0", "192.168.1.20", "example.org"):
        with pytest.raises(InvalidInput, match="only on a loopback host"):
            run_http(build_server(settings, embedder), host=host, port=1, require_auth=False)
    with serving(settings, embedder, None) as url:
        assert httpx.post(url, json=INIT, headers=HEADERS).status_code == 200
    assert not token_path(settings.data_dir).exists()
