"""Command-line adapter; ``continuum-mcp`` runs :func:`main`.

``main`` is imported on call so that ``python -m continuum_mcp.cli.main`` does not find the
module already imported by its package.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from continuum_mcp.cli.main import main as run

    return run(argv)


__all__ = ["main"]
