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
from continuum_mcp.federation.coordinator._nginx import nginx_config
from continuum_mcp.federation.coordinator.config import build_parser, config_from_args
from continuum_mcp.federation.coordinator.supervisor import add_deploy_arguments, serve, split_deploy_args

_EPILOG = ("other commands: `continuum-mcp coordinator invite --storage DIR [--database URL] [--count N]` mints "
           "single-use admission tokens (one per invited instance); `continuum-mcp coordinator nginx-config "
           "--workers N [options]` prints the nginx configuration for N workers behind --host/--port.")


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


def _nginx_config(argv: Sequence[str]) -> int:
    """Print the nginx configuration for ``--workers`` processes on consecutive ports after ``--port``
    (the operator runs the workers, e.g. with the systemd template unit of docs/coordinator.md)."""
    parser = build_parser("continuum-mcp coordinator nginx-config")
    add_deploy_arguments(parser)
    args = [a for a in argv if a != "--nginx"]
    config = config_from_args(parser.parse_args(args))
    options, _ = split_deploy_args([*args, "--nginx"])
    upstreams = [("127.0.0.1", p) for p in options.ports(config)]
    print(nginx_config(config, upstreams, listen=f"{config.host}:{config.port}"), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``continuum-mcp coordinator [options]`` or ``continuum-mcp coordinator invite --storage DIR --count N``.

    Returns the exit code of the error taxonomy (e.g. 5 for a corrupt or empty database)."""
    from continuum_mcp.federation.coordinator.node import FederationCoordinator

    args_in = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_in[:1] == ["invite"]:
            return _invite(args_in[1:])
        if args_in[:1] == ["nginx-config"]:
            return _nginx_config(args_in[1:])
        parser = build_parser(epilog=_EPILOG)
        add_deploy_arguments(parser)
        config = config_from_args(parser.parse_args(args_in))
        options, worker_args = split_deploy_args(args_in)
        if options.workers > 1 or options.nginx:
            return serve(config, options, worker_args)
        logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO))
        FederationCoordinator(config).serve_forever()
        return 0
    except ContinuumError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return exc.exit_code


__all__ = ["main"]
