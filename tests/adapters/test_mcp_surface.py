"""What the model is shown: a small tools/list, limits in the schemas, memory v2 in the tools'
answers, prompts, and federation tools that appear only once joined (with list_changed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_calls import call, error

from continuum_mcp.config import Settings
from continuum_mcp.server import build_server
from embeddings import SentenceTransformerEmbedder

MEMORY_TOOLS = {"remember", "recall", "forget", "update_memory", "list_memories", "memory_stats"}
MEMBER_TOOLS = {"federation_status", "federation_contribute", "federation_sync", "federation_query",
                "federation_credits", "federation_verify", "federation_vote", "federation_leave",
                "federation_auto_sync", "preview_patterns", "federation_governance"}


def listing(tools: list[Any]) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]


def keys(node: Any) -> set[str]:
    """Every schema keyword used (property names excluded)."""
    if isinstance(node, list):
        return set().union(*(keys(n) for n in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    out = set(node) - {"properties", "$defs"}
    for k, v in node.items():
        if k in ("properties", "$defs"):
            out |= set().union(*(keys(s) for s in v.values())) if v else set()
        else:
            out |= keys(v)
    return out


def test_tools_list_before_joining_is_small(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    async def go() -> list[dict[str, Any]]:
        async with Client(build_server(settings, embedder)) as c:
            return listing((await c.list_tools()).tools)
    tools = anyio.run(go)
    size = len(json.dumps({"tools": tools}))
    print(f"tools/list before joining: {size} chars, {len(tools)} tools")
    assert size < 12_000
    assert {t["name"] for t in tools} == MEMORY_TOOLS | {"federation_join"}
    for t in tools:
        assert "\n " not in t["description"], t["name"]  # dedented
        assert "title" not in keys(t["inputSchema"]) | keys(t.get("outputSchema", {})), t["name"]
        assert "description" not in keys(t.get("outputSchema", {})), t["name"]


def test_schemas_carry_the_documented_limits(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    async def go() -> dict[str, dict[str, Any]]:
        async with Client(build_server(settings, embedder)) as c:
            return {t["name"]: t["inputSchema"]["properties"] for t in listing((await c.list_tools()).tools)}
    props = anyio.run(go)
    assert props["recall"]["k"].items() >= {"minimum": 1, "maximum": 100, "type": "integer"}.items()
    assert props["recall"]["query"]["maxLength"] == settings.max_text_chars
    assert props["remember"]["tags"]["maxItems"] == settings.max_tags
    assert props["remember"]["tags"]["items"]["maxLength"] == 64
    assert props["forget"]["ids"]["items"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    assert props["list_memories"]["limit"]["maximum"] == 1000 and props["list_memories"]["offset"]["minimum"] == 0
    assert set(props["remember"]) >= {"at", "on_duplicate", "supersedes"}
    assert props["remember"]["on_duplicate"]["enum"] == ["merge", "store"]


def test_remember_says_which_memory_it_updates_and_recall_shows_versions(
        settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    async def go() -> None:
        async with Client(build_server(settings, embedder)) as c:
            old = await call(c, "remember", {"text": "Dana's phone number is +44 7700 900987", "tags": ["contacts"]})
            assert old["status"] == "created" and old["hint"] == f"Stored as memory {old['memory']['id']}."
            new = await call(c, "remember", {"text": "Dana's phone number is +44 7700 900123", "tags": ["contacts"]})
            assert new["status"] == "updated" and new["updates"] == old["memory"]["id"]
            assert f"newer version of memory {old['memory']['id']}" in new["hint"] and "900987" in new["hint"]
            r = await call(c, "recall", {"query": "What is Dana's phone number?", "mode": "semantic"})
            assert not r["no_good_match"]
            first, second = r["hits"][0]["memory"], r["hits"][1]["memory"]
            assert first["id"] == new["memory"]["id"] and first["supersedes"] == old["memory"]["id"]
            assert second["superseded_by"] == new["memory"]["id"]
            nothing = await call(c, "recall", {"query": "quantum chromodynamics lecture notes", "mode": "semantic"})
            assert nothing["no_good_match"] is True
            strict = await call(c, "recall", {"query": "Dana phone", "min_score": 0.99})
            assert strict["hits"] == []

            dup = await call(c, "remember", {"text": "dana's phone number is +44 7700 900123"})
            assert dup["status"] == "duplicate" and dup["duplicate_of"] == new["memory"]["id"]
            assert "on_duplicate='store'" in dup["hint"]
            kept = await call(c, "remember", {"text": "dana's phone number is +44 7700 900123", "on_duplicate": "store"})
            assert kept["status"] in ("created", "updated") and kept["memory"]["id"] > new["memory"]["id"]

            dated = await call(c, "remember", {"text": "We moved to Leeds", "at": "2019-05-01T12:00:00Z"})
            assert dated["memory"]["created_at"].startswith("2019-05-01")
            linked = await call(c, "remember", {"text": "We moved to York", "supersedes": dated["memory"]["id"]})
            assert linked["status"] == "updated" and linked["updates"] == dated["memory"]["id"]
    anyio.run(go)


def test_prompts_save_learnings_and_recall_context(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    async def go() -> None:
        async with Client(build_server(settings, embedder)) as c:
            prompts = {p.name: p for p in (await c.list_prompts()).prompts}
            assert set(prompts) == {"save_conversation_learnings", "recall_context"}
            assert [a.name for a in prompts["recall_context"].arguments or []] == ["topic"]
            save = await c.get_prompt("save_conversation_learnings")
            text = save.messages[0].content.text  # type: ignore[union-attr]
            assert "`remember`" in text and "`private`" in text and "tags" in text

            m = await call(c, "remember", {"text": "The Kotlin service builds with JDK 17", "tags": ["work"]})
            got = await c.get_prompt("recall_context", {"topic": "building the Kotlin service"})
            text = got.messages[0].content.text  # type: ignore[union-attr]
            assert f"#{m['memory']['id']}" in text and "JDK 17" in text and "[work]" in text
            got = await c.get_prompt("recall_context", {"topic": "medieval tapestry restoration"})
            assert "nothing relevant is stored" in got.messages[0].content.text  # type: ignore[union-attr]
    anyio.run(go)


@pytest.mark.slow
def test_federation_tools_appear_on_join_and_go_on_leave(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    from continuum_mcp.crypto.cipher import Invite, generate_federation_key
    from continuum_mcp.federation.coordinator.http import FederationCoordinator

    coord = FederationCoordinator(port=0, storage_path=tmp_path / "coord", privacy_mode="open", min_contributors=3,
                                  require_contribution=False, federation_id="fed-surface", admin_token="admin-x",
                                  phase_timeout_seconds=20)
    coord.start()
    key = generate_federation_key()
    invite = Invite.build(coord.url, "fed-surface", coord.create_admission_tokens(1)[0], key).format()
    changed: list[str] = []

    async def on_message(message: Any) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method:
            changed.append(method)

    async def names(c: Client) -> set[str]:
        return {t.name for t in (await c.list_tools()).tools}

    async def go() -> None:
        settings = Settings(data_dir=tmp_path / "m")
        async with Client(build_server(settings, embedder), mode="legacy", message_handler=on_message) as c:
            assert await names(c) == MEMORY_TOOLS | {"federation_join"}
            assert (await error(c, "federation_query", {"query": "x"})).startswith("not_joined: ")
            await call(c, "federation_join", {"invite": invite, "privacy_mode": "open"})
            assert await names(c) == MEMORY_TOOLS | MEMBER_TOOLS
            assert changed.count("notifications/tools/list_changed") == 1
            dry = await call(c, "federation_contribute", {})  # dry run unless asked otherwise
            assert dry["status"] in ("dry_run", "nothing")
            await call(c, "federation_leave", {})
            assert await names(c) == MEMORY_TOOLS | {"federation_join"}
            assert changed.count("notifications/tools/list_changed") == 2
        # After leaving, a new server over the same store offers federation_join again, nothing more.
        async with Client(build_server(settings, embedder)) as c:
            assert "federation_status" not in await names(c)
    try:
        anyio.run(go)
    finally:
        coord.stop()
