"""Drive continuum-mcp the way Claude does: spawn `continuum-mcp serve` and talk MCP over stdio.

    python examples/stdio_client.py [--data-dir DIR]

Uses a throw-away data directory unless --data-dir is given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import anyio
from mcp import Client, StdioServerParameters


async def main(data_dir: str) -> None:
    server = StdioServerParameters(command=sys.executable,
                                   args=["-m", "continuum_mcp.cli.main", "serve", "--data-dir", data_dir])
    async with Client(server) as client:
        tools = await client.list_tools()
        print("tools:", ", ".join(t.name for t in tools.tools))
        for text, tags in [
            ("I prefer concise answers with code examples first", ["preference"]),
            ("The staging database is Postgres 16 on db-staging-2", ["work", "infra"]),
            ("My partner's birthday is on 14 February", ["family", "private"]),
        ]:
            r = await client.call_tool("remember", {"text": text, "tags": tags})
            print("remember:", r.structured_content["status"], "#", r.structured_content["memory"]["id"])
        # A new version of an earlier fact is stored and linked, never merged away.
        r = await client.call_tool("remember", {"text": "The staging database is Postgres 17 on db-staging-2",
                                                "tags": ["work", "infra"]})
        print("remember:", r.structured_content["status"], "-", r.structured_content["hint"])
        for query in ["how should answers be formatted", "which postgres version in staging",
                      "the rules of cricket"]:
            r = await client.call_tool("recall", {"query": query, "k": 2})
            if r.structured_content["no_good_match"]:
                print(f"recall {query!r}: nothing relevant is stored")
                continue
            best = r.structured_content["hits"][0]
            print(f"recall {query!r}: {best['memory']['text']!r} (similarity {best['similarity']:.2f}, "
                  f"supersedes {best['memory']['supersedes']})")
        prompts = await client.list_prompts()
        print("prompts:", ", ".join(p.name for p in prompts.prompts))
        r = await client.call_tool("forget", {"ids": ["1"]})
        print("forget with a string id ->", r.content[0].text)
        r = await client.call_tool("forget", {"ids": [424242]})
        print("forget unknown id ->", "error:" if r.is_error else "ok", r.content[0].text)
        stats = await client.call_tool("memory_stats", {})
        print("memories stored:", stats.structured_content["count"])


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    anyio.run(main, args.data_dir or tempfile.mkdtemp(prefix="continuum-example-"))
