"""Calling tools through a real `mcp` Client, shared by the test files that drive the server."""

from __future__ import annotations

from typing import Any

from mcp import Client


async def call(c: Client, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured output."""
    r = await c.call_tool(tool, args or {})
    assert not r.is_error, (tool, r.content)
    assert isinstance(r.structured_content, dict)
    return r.structured_content


async def error(c: Client, tool: str, args: dict[str, Any]) -> str:
    """Call a tool that must fail; return the error text it gave the model."""
    r = await c.call_tool(tool, args)
    assert r.is_error, f"{tool}({args}) should have failed"
    return r.content[0].text  # type: ignore[union-attr]
