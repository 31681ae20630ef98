"""Size of the ``tools/list`` answer the model pays for on every conversation.

Prints the characters of the JSON ``tools/list`` result (tools, descriptions, input and output
schemas) before and after joining a federation, and the share of each part, so the cost of the
surface is a number that a change can be held to (target: under 12 kB before joining).

Run:  .venv/bin/python benchmarks/bench_tools_list.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client


def sizes(tools: list[Any]) -> dict[str, int]:
    """Characters of the whole answer and of its parts (as the client receives them)."""
    dumped = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    total = len(json.dumps({"tools": dumped}, ensure_ascii=False))
    out = sum(len(json.dumps(d.get("outputSchema", {}), ensure_ascii=False)) for d in dumped)
    inp = sum(len(json.dumps(d.get("inputSchema", {}), ensure_ascii=False)) for d in dumped)
    desc = sum(len(d.get("description", "")) for d in dumped)
    fed = sum(len(json.dumps(d, ensure_ascii=False)) for d in dumped if d["name"].startswith("federation_"))
    return {"tools": len(tools), "chars": total, "input_schemas": inp, "output_schemas": out, "descriptions": desc,
            "federation_tools": fed}


async def measure(data_dir: Path, member: bool) -> dict[str, int]:
    """The listing of a fresh store; ``member``: as shown once a federation is joined (the tools
    are only listed here, never called, so no coordinator is needed)."""
    from continuum_mcp._mcp.federation_tools import show_member_tools
    from continuum_mcp.config import Settings
    from continuum_mcp.server import build_server

    server = build_server(Settings(data_dir=data_dir))
    if member:
        show_member_tools(server, lambda call: None, member=True)
    async with Client(server) as c:
        return sizes((await c.list_tools()).tools)


def main() -> int:
    for member in (False, True):
        with tempfile.TemporaryDirectory(prefix="bench-tools-") as tmp:
            s = anyio.run(measure, Path(tmp), member)
        print(f"tools/list {'after' if member else 'before'} joining: {s['chars']} chars ({s['tools']} tools; input "
              f"schemas {s['input_schemas']}, output schemas {s['output_schemas']}, descriptions "
              f"{s['descriptions']}, federation tools {s['federation_tools']})"
              + ("" if member else "; target < 12000"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
