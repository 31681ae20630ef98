"""``continuum-mcp coordinator``: run a coordinator, or mint admission tokens (``invite``).

Why here: the coordinator is a separate service with its own options; ``cli/main.py`` delegates
``coordinator ...`` to :func:`main`. The serve options are generated from ``CoordinatorConfig``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from continuum_mcp.errors import ContinuumError
from continuum_mcp.federation.coordinator.config import build_parser, config_from_args

_EPILOG = ("other command: `continuum-mcp coordinator invite --storage DIR [--database URL] [--count N]` mints single-use "
           "admission tokens (one per invited instance).")


def _invite(argv: Sequence[str]) -> int:
    from continuum_mcp.federation.coordinator.config import DATABASE_ENV
    from continuum_mcp.federation.coordinator.store import CoordinatorStore

    p = argparse.ArgumentParser(prog="continuum-mcp coordinator invite",
                                description="Mint single-use admission tokens (one per invited instance).")
    p.add_argument("--storage", required=True, type=Path, help="the coordinator's storage directory")
    p.add_argument("--database", default=os.environ.get(DATABASE_ENV) or None,
                   help=f"the coordinator's PostgreSQL URL, if it runs on one (env {DATABASE_ENV})")
    p.add_argument("--count", type=int, default=1, help="number of tokens")
    a = p.parse_args(list(argv))
    store = CoordinatorStore(a.storage, database=a.database)
    try:
        for token in store.create_admission_tokens(a.count):
            print(token)
    finally:
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``continuum-mcp coordinator [options]`` or ``continuum-mcp coordinator invite --storage DIR --count N``.

    Returns the exit code of the error taxonomy (e.g. 5 for a corrupt or empty database)."""
    from continuum_mcp.federation.coordinator.node import FederationCoordinator

    args_in = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_in[:1] == ["invite"]:
            return _invite(args_in[1:])
        config = config_from_args(build_parser(epilog=_EPILOG).parse_args(args_in))
        logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO))
        FederationCoordinator(config).serve_forever()
        return 0
    except ContinuumError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return exc.exit_code


__all__ = ["main"]
