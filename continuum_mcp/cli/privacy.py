"""``continuum-mcp privacy table``: what a phrase needs to be released, per mode and level.

Why a command: the README and docs tables are generated from it, and a user can check the figures
their federation runs with. Every number is computed by ``PrivacyPolicy.table()`` from the modes'
parameters (nothing typed in); ``--json`` prints the rows as a JSON list.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any



def table_rows() -> list[dict[str, Any]]:
    """The rows of ``privacy table --json``."""
    from continuum_mcp.privacy.modes import default_policy  # numpy: not on every CLI start (serve)

    return [r.model_dump(mode="json") for r in default_policy().table()]


def run(args: argparse.Namespace) -> int:
    """Print the table (markdown, or JSON rows with ``--json``); exit code 0."""
    if getattr(args, "json", False):
        print(json.dumps(table_rows(), indent=2))
    else:
        from continuum_mcp.privacy.modes import privacy_table_markdown

        print(privacy_table_markdown(), end="")
    return 0


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Register ``privacy table`` on the CLI's subparsers. The handler needs no memory store:
    ``func(args, settings)`` with ``raw_settings=True`` for ``cli.main``; ``handler(args)`` direct.
    ``parents`` must include the shared ``--json`` option."""
    from continuum_mcp.cli._common import add_command

    p = add_command(subparsers, "privacy", "privacy figures of the federation's release mechanism")
    sub = p.add_subparsers(dest="privacy_command", required=True, metavar="COMMAND",
                           help="what to show; `continuum-mcp privacy COMMAND --help` explains its arguments")
    t = add_command(sub, "table", "distinct contributors a phrase needs to be released, per mode and level",
                    parents)
    t.set_defaults(func=lambda args, _settings: run(args), raw_settings=True, handler=run)
    return p


__all__ = ["add_parser", "run", "table_rows"]
