"""Bad input at the MCP boundary, one test per case: each is refused with a precise tool error
(or JSON-RPC error), the server stays alive, and nothing in the store changes.

Driven by the real ``mcp`` client in process, and over a real ``continuum-mcp serve`` stdio
subprocess with raw JSON lines for what a client library would never send.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_calls import call, error

from continuum_mcp.config import Settings
from continuum_mcp.server import ContinuumServer, build_server
from embeddings import SentenceTransformerEmbedder

FIRST = "The boiler was serviced in March"


def refused(settings: Settings, embedder: SentenceTransformerEmbedder, tool: str, args: dict[str, Any],
            *, settings_after: Callable[[ContinuumServer], None] | None = None) -> str:
    """Seed one memory, make the bad call, check the store is unchanged; the error text."""
    async def go() -> str:
        server = build_server(settings, embedder)
        async with Client(server) as c:
            await call(c, "remember", {"text": FIRST, "tags": ["home"]})
            before = await call(c, "list_memories", {"limit": 100})
            if settings_after is not None:
                settings_after(server)
            msg = await error(c, tool, args)
            assert await call(c, "list_memories", {"limit": 100}) == before
            return msg
    return anyio.run(go)


def test_a_numeric_string_is_not_a_memory_id(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    msg = refused(settings, embedder, "forget", {"ids": ["1"]})
    assert msg.startswith("invalid_input: ids.0: Input should be a valid integer (got str '1')"), msg


def test_a_boolean_is_not_a_memory_id(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    assert "ids.0: Input should be a valid integer (got bool True)" in refused(settings, embedder, "forget",
                                                                              {"ids": [True]})


def test_update_memory_refuses_a_boolean_id(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    msg = refused(settings, embedder, "update_memory", {"id": True, "text": "Edited by a boolean"})
    assert "id: Input should be a valid integer (got bool True)" in msg


def test_recall_refuses_a_boolean_count(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    assert "k: Input should be a valid integer (got bool True)" in refused(settings, embedder, "recall",
                                                                          {"query": "boiler", "k": True})


def test_recall_refuses_a_string_for_a_flag(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    msg = refused(settings, embedder, "recall", {"query": "boiler", "include_federated": "yes"})
    assert "include_federated: Input should be a valid boolean (got str 'yes')" in msg


def test_an_id_beyond_sqlite_range_is_refused_precisely(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    msg = refused(settings, embedder, "forget", {"ids": [2**63]})
    assert "ids.0: Input should be less than or equal to 9223372036854775807" in msg
    msg = refused(settings, embedder, "update_memory", {"id": 2**63, "text": "x"})
    assert "id: Input should be less than or equal to 9223372036854775807" in msg


def test_supersedes_must_name_an_existing_memory(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    msg = refused(settings, embedder, "remember", {"text": "The boiler was serviced in May", "supersedes": 4242})
    assert msg.startswith("not_found: supersedes: no memory with id 4242"), msg
    assert "(got str '1')" in refused(settings, embedder, "remember", {"text": "x y", "supersedes": "1"})


def test_text_of_only_invisible_characters_is_refused(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    msg = refused(settings, embedder, "remember", {"text": "\u200b\u200d\u2060"})
    assert msg.startswith("invalid_input: text has only invisible"), msg


def test_a_read_only_store_says_so(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    data = tmp_path / "m"

    async def seed() -> None:
        async with Client(build_server(Settings(data_dir=data), embedder)) as c:
            await call(c, "remember", {"text": FIRST})
    anyio.run(seed)

    async def go() -> None:
        async with Client(build_server(Settings(data_dir=data, read_only=True), embedder)) as c:
            msg = await error(c, "remember", {"text": "Something new"})
            assert msg.startswith("store_read_only: ") and "nothing was written" in msg, msg
            assert "corrupt" not in msg
            assert (await call(c, "recall", {"query": "boiler"}))["hits"][0]["memory"]["text"] == FIRST
            assert (await error(c, "forget", {"ids": [1]})).startswith("store_read_only: ")
    anyio.run(go)


def test_a_full_disk_says_so_and_keeps_what_was_stored(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    def fill_disk(server: ContinuumServer) -> None:
        conn = server.app.store._conn  # SQLite answers SQLITE_FULL past max_page_count, as on a full disk
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")

    msg = refused(settings, embedder, "remember", {"text": "A long memory that will not fit " + "x" * 15000},
                  settings_after=fill_disk)
    assert msg.startswith("disk_full: ") and "Free some space" in msg, msg


# ----- raw JSON-RPC over a real `continuum-mcp serve` ---------------------------------------

class RawServer:
    """A `continuum-mcp serve` subprocess spoken to in raw JSON lines."""

    def __init__(self, data_dir: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen([sys.executable, "-m", "continuum_mcp.cli.main", "serve", "--data-dir",
                                      str(data_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, text=True, encoding="utf-8")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next message from the server (fails instead of hanging)."""
        assert self.proc.stdout is not None
        out: list[str] = []

        def read() -> None:
            out.append(self.proc.stdout.readline())  # type: ignore[union-attr]
        import threading

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        assert out and out[0], "no reply from the server"
        return json.loads(out[0])

    def request(self, mid: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.send(json.dumps({"jsonrpc": "2.0", "id": mid, "method": method, "params": params}))
        return self.reply()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def raw(tmp_path: Path) -> Any:
    server = RawServer(tmp_path / "m")
    init = server.request(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                            "clientInfo": {"name": "raw", "version": "0"}})
    assert init["result"]["serverInfo"]["name"] == "continuum-mcp"
    assert init["result"]["capabilities"]["tools"]["listChanged"] is True
    server.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    yield server
    server.close()


def remember_line(mid: int, text_json: str, extra: str = "") -> str:
    return ('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"remember","arguments":'
            '{"text":%s%s}}}' % (mid, text_json, extra))


def count(raw: RawServer, mid: int) -> int:
    r = raw.request(mid, "tools/call", {"name": "memory_stats", "arguments": {}})
    return int(r["result"]["structuredContent"]["count"])


@pytest.mark.slow
def test_unparseable_line_gets_a_parse_error(raw: RawServer) -> None:
    raw.send("this is not json")
    r = raw.reply()
    assert r["id"] is None and r["error"]["code"] == -32700 and "Parse error" in r["error"]["message"]
    raw.send('{"jsonrpc":"2.0","id":7,"method":"tools/list"')  # cut short: nobody can read its id
    assert raw.reply()["error"]["code"] == -32700
    assert count(raw, 8) == 0


@pytest.mark.slow
def test_a_lone_surrogate_escape_gets_an_error_for_its_request(raw: RawServer) -> None:
    raw.send(remember_line(5, r'"I feel \ud83d today"'))
    r = raw.reply()
    assert r["id"] == 5 and r["error"]["code"] == -32700
    assert "unpaired UTF-16 surrogate" in r["error"]["message"]
    assert count(raw, 6) == 0


@pytest.mark.slow
def test_metadata_nested_300_deep_gets_an_error_for_its_request(raw: RawServer) -> None:
    deep = '{"a":' * 300 + "1" + "}" * 300
    raw.send(remember_line(9, '"Deep metadata"', ',"metadata":' + deep))
    r = raw.reply()
    assert r["id"] == 9 and r["error"]["code"] == -32700 and "nested too deeply" in r["error"]["message"]
    assert count(raw, 10) == 0


@pytest.mark.slow
def test_recall_refuses_a_nan_min_score(raw: RawServer) -> None:
    # The SDK's client sends NaN as null; a raw client (or a model-written request) can send NaN.
    raw.send('{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"recall","arguments":'
             '{"query":"boiler","min_score":NaN}}}')
    r = raw.reply()
    assert r["id"] == 3 and r["result"]["isError"] is True
    assert "min_score: Input should be a finite number (got float nan)" in r["result"]["content"][0]["text"]


@pytest.mark.slow
def test_a_message_that_is_not_json_rpc_gets_invalid_request(raw: RawServer) -> None:
    raw.send('{"jsonrpc":"2.0","id":11}')
    r = raw.reply()
    assert r["id"] == 11 and r["error"]["code"] == -32600
    r = raw.request(12, "tools/call", {"name": "remember", "arguments": {"text": "Still alive after bad input"}})
    assert r["result"]["structuredContent"]["status"] == "created"


