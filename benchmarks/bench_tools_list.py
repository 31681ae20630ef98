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


async def measure(data_dir: Path) -> dict[str, int]:
    from continuum_mcp.config import Settings
    from continuum_mcp.server import build_server

    async with Client(build_server(Settings(data_dir=data_dir))) as c:
        return sizes((await c.list_tools()).tools)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as tmp:
        s = anyio.run(measure, Path(tmp))
    print(f"tools/list before joining: {s['chars']} chars ({s['tools']} tools; input schemas {s['input_schemas']}, "
          f"output schemas {s['output_schemas']}, descriptions {s['descriptions']}, "
          f"federation tools {s['federation_tools']}); target < 12000")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
