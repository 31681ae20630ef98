"""The MCP server, driven by the real `mcp` client: in-process, and over stdio as Claude runs it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_calls import call, error

from continuum_mcp.config import Settings
from continuum_mcp.server import build_server
from embeddings import SentenceTransformerEmbedder

TOOLS = {"remember", "recall", "forget", "update_memory", "list_memories", "memory_stats"}


def stdio_params(data_dir: Path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable,
                                 args=["-m", "continuum_mcp.cli.main", "serve", "--data-dir", str(data_dir)])


def run(fn: Any, *args: Any) -> Any:
    return anyio.run(fn, *args)


def test_tools_are_described_for_the_model(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    async def go() -> None:
        async with Client(build_server(settings, embedder)) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert set(tools) >= TOOLS
            for t in tools.values():
                assert t.title and t.description and t.output_schema, t.name
                assert t.annotations is not None
                # Local tools touch nothing outside this machine; federation tools do.
                assert t.annotations.open_world_hint is (t.name.startswith("federation_")), t.name
            assert tools["recall"].annotations.read_only_hint is True
            assert tools["forget"].annotations.destructive_hint is True
            assert tools["remember"].annotations.destructive_hint is False
            props = tools["recall"].input_schema["properties"]
            assert set(props) >= {"query", "k", "mode", "tags_any", "tags_all", "since", "until", "min_score"}
            assert all(p.get("description") for p in props.values())
            uris = {str(r.uri) for r in (await c.list_resources()).resources}
            assert {"memory://stats", "memory://recent"} <= uris
    run(go)


def test_full_memory_lifecycle_in_process(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    async def go() -> None:
        async with Client(build_server(settings, embedder)) as c:
            r = await call(c, "remember", {"text": "Our staging server is staging-3 in eu-west",
                                           "tags": ["infra"], "metadata": {"from": "slack"}})
            assert r["status"] == "created"
            mid = r["memory"]["id"]
            assert r["memory"]["source"] == "mcp"
            dup = await call(c, "remember", {"text": "our staging server is staging-3 in eu-west"})
            assert dup["status"] == "duplicate" and dup["memory"]["id"] == mid
            await call(c, "remember", {"text": "Lunch on Fridays is at the Thai place", "tags": ["social"]})

            for mode in ("semantic", "keyword", "hybrid"):
                hits = (await call(c, "recall", {"query": "which staging server", "mode": mode}))["hits"]
                assert hits[0]["memory"]["id"] == mid, mode
            hits = (await call(c, "recall", {"query": "server", "tags_any": ["social"]}))["hits"]
            assert [h["memory"]["tags"] for h in hits] == [["social"]]
            hits = (await call(c, "recall", {"query": "server", "since": "2999-01-01T00:00:00Z"}))["hits"]
            assert hits == []

            upd = await call(c, "update_memory", {"id": mid, "text": "Our staging server is staging-4 in eu-central"})
            assert upd["text"].endswith("eu-central")
            hits = (await call(c, "recall", {"query": "staging-4", "mode": "keyword"}))["hits"]
            assert hits[0]["memory"]["id"] == mid

            page = await call(c, "list_memories", {"limit": 1})
            assert page["total"] == 2 and len(page["memories"]) == 1
            stats = await call(c, "memory_stats", {})
            assert stats["count"] == 2 and stats["top_tags"] == {"infra": 1, "social": 1}
            res = await c.read_resource("memory://stats")
            assert json.loads(res.contents[0].text)["count"] == 2  # type: ignore[union-attr]
            res = await c.read_resource("memory://recent")
            assert len(json.loads(res.contents[0].text)) == 2  # type: ignore[union-attr]

            assert (await call(c, "forget", {"ids": [mid]}))["deleted"] == [mid]
            hits = (await call(c, "recall", {"query": "staging server", "k": 10}))["hits"]
            assert mid not in [h["memory"]["id"] for h in hits]
    run(go)


BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("remember", {"text": ""}, "empty"),
    ("remember", {"text": "   "}, "empty"),
    ("remember", {"text": 12}, "valid string"),
    ("remember", {}, "text"),
    ("remember", {"text": "x" * 20_001}, "at most 20000 characters"),
    ("remember", {"text": "ok", "tags": "work"}, "valid list"),
    ("remember", {"text": "ok", "tags": ["two words"]}, "invalid tag"),
    ("remember", {"text": "ok", "metadata": [1, 2]}, "valid dictionary"),
    ("recall", {"query": ""}, "empty"),
    ("recall", {"query": "x", "k": 0}, "k: Input should be greater than or equal to 1"),
    ("recall", {"query": "x", "k": "five"}, "valid integer"),
    ("recall", {"query": "x", "mode": "fuzzy"}, "'semantic', 'keyword' or 'hybrid'"),
    ("recall", {"query": "x", "since": "yesterday-ish"}, "since"),
    ("recall", {"query": "x", "since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"}, "time range is empty"),
    ("forget", {"ids": [424242]}, "no memory with id 424242"),
    ("forget", {"ids": []}, "no memory ids"),
    ("forget", {"ids": "1"}, "valid list"),
    ("update_memory", {"id": 424242, "text": "x"}, "no memory with id 424242"),
    ("update_memory", {"id": 1}, "nothing to update"),
    ("update_memory", {"id": 1, "text": ""}, "empty"),
    ("list_memories", {"limit": 0}, "limit: Input should be greater than or equal to 1"),
    ("list_memories", {"offset": -3}, "offset: Input should be greater than or equal to 0"),
    ("no_such_tool", {}, "no_such_tool"),
]


def test_bad_input_on_every_tool_is_an_error_and_changes_nothing(settings: Settings,
                                                                 embedder: SentenceTransformerEmbedder) -> None:
    async def go() -> None:
        async with Client(build_server(settings, embedder)) as c:
            await call(c, "remember", {"text": "The boiler was serviced in March", "tags": ["home"]})
            before = await call(c, "list_memories", {"limit": 100})
            for tool, args, fragment in BAD_CALLS:
                msg = await error(c, tool, args)
                assert fragment in msg, (tool, args, msg)
            after = await call(c, "list_memories", {"limit": 100})
            assert after == before
    run(go)


@pytest.mark.slow
def test_stdio_server_answers_tools_list_before_the_model_loads(tmp_path: Path) -> None:
    """Spawned as Claude spawns it; the handshake must not wait for the ~5 s model load."""
    async def go() -> tuple[float, float]:
        t0 = time.perf_counter()
        async with Client(stdio_params(tmp_path / "m")) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            t_list = time.perf_counter() - t0
            assert names >= TOOLS
            r = await call(c, "remember", {"text": "Remembered while the model was still loading"})
            t_first = time.perf_counter() - t0
            assert r["status"] == "created"
            hits = (await call(c, "recall", {"query": "model loading"}))["hits"]
            assert hits[0]["memory"]["id"] == r["memory"]["id"]
            return t_list, t_first
    t_list, t_first = run(go)
    # Not a performance assertion (benchmarks measure that): the order of events is the behaviour.
    assert t_list < t_first


FACTS_A = ["The car needs new tyres before winter", "Grandma's birthday is on 12 June",
           "The VPN drops when the laptop sleeps", "Sam is vegetarian", "The gym closes at 9 pm on Sundays",
           "Invoices go to the finance inbox", "The router admin page is on port 8443",
           "Renew the passport before the Japan trip", "The basil on the balcony needs daily water",
           "Standup moved to 10:15"]
FACTS_B = ["Prefer aisle seats on long flights", "The landlord's agent is reachable on weekdays only",
           "Kotlin builds need JDK 17", "The kids' school starts at 8:20", "Backups run every night at 2 am",
           "The bike lock code was changed", "Yoga class is on Tuesday evenings",
           "The design review needs three approvals", "Do not schedule meetings on Friday afternoons",
           "The espresso machine descaling is due monthly"]


@pytest.mark.slow
def test_two_server_processes_share_one_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "shared"

    async def go() -> None:
        async with Client(stdio_params(data)) as a, Client(stdio_params(data)) as b:
            ra = await call(a, "remember", {"text": "Process A learned that the cat is called Miso"})
            hits = (await call(b, "recall", {"query": "what is the cat's name"}))["hits"]
            assert hits and hits[0]["memory"]["id"] == ra["memory"]["id"]
            rb = await call(b, "remember", {"text": "Process B learned that the dog is called Pepper"})
            hits = (await call(a, "recall", {"query": "what is the dog's name", "mode": "semantic"}))["hits"]
            assert hits[0]["memory"]["id"] == rb["memory"]["id"]
            # Concurrent writes from both sides all land, each exactly once.
            async with anyio.create_task_group() as tg:
                for i, (fa, fb) in enumerate(zip(FACTS_A, FACTS_B)):
                    tg.start_soon(call, a, "remember", {"text": fa})
                    tg.start_soon(call, b, "remember", {"text": fb})
            assert (await call(a, "memory_stats", {}))["count"] == 22
            await call(b, "forget", {"ids": [ra["memory"]["id"]]})
            hits = (await call(a, "recall", {"query": "cat called Miso", "k": 20}))["hits"]
            assert ra["memory"]["id"] not in [h["memory"]["id"] for h in hits]
    run(go)


@pytest.mark.slow
def test_streamable_http_transport_needs_the_token(tmp_path: Path) -> None:
    import socket
    import subprocess

    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from continuum_mcp.server import token_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-m", "continuum_mcp.cli.main", "serve", "--transport", "streamable-http",
                             "--port", str(port), "--data-dir", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "server did not start listening"
                time.sleep(0.1)
        token = token_path(data).read_text().strip()

        async def go() -> None:
            http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=120)
            async with http, Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as c:
                assert {t.name for t in (await c.list_tools()).tools} >= TOOLS
                r = await call(c, "remember", {"text": "Spoken over streamable HTTP"})
                hits = (await call(c, "recall", {"query": "streamable HTTP"}))["hits"]
                assert hits[0]["memory"]["id"] == r["memory"]["id"]
            async with httpx2.AsyncClient() as anonymous:
                assert (await anonymous.post(f"http://127.0.0.1:{port}/mcp", json={})).status_code == 401
        run(go)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
