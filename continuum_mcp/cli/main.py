"""The command-line adapter: ``continuum-mcp <command>``; builds the parser and runs a command.

Commands live by concern (``memory.py``, ``federation.py``); each translates its arguments into
one :class:`continuum_mcp.app.Continuum` call and its result into text or ``--json``. Failures
print one line and exit with the error class's ``exit_code`` (table: ``errors.EXIT_CODE_MEANINGS``,
documented in the README and checked by tests/test_docs.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from continuum_mcp import __version__
from continuum_mcp.cli import dashboard, federation, memory
from continuum_mcp.cli import privacy as privacy_cli
from continuum_mcp.cli._common import HelpFormatter, add_command, fail, filter_options, json_option, store_options
from continuum_mcp.config import Settings
from continuum_mcp.errors import EXIT_CODE_MEANINGS, ContinuumError, ModelMismatch


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from continuum_mcp.server import build_server

    server = build_server(settings)
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=args.host, port=args.port)
    return 0


def _exit_codes_epilog() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items())


def build_parser() -> argparse.ArgumentParser:
    store, out = store_options(), json_option()
    common = [store, out]
    p = argparse.ArgumentParser(prog="continuum-mcp", description="Private long-term memory for AI assistants.",
                                epilog=_exit_codes_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"continuum-mcp {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="what to do; `continuum-mcp COMMAND --help` explains its arguments")
    memory.add_parsers(sub, common, filter_options())

    s = add_command(sub, "serve", "run the MCP server", [store])
    s.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio",
                   help="stdio: spawned by an MCP client such as Claude; streamable-http: an HTTP endpoint at /mcp")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (streamable-http only)")
    s.add_argument("--port", type=int, default=8765, help="port to listen on (streamable-http only)")
    s.set_defaults(func=cmd_serve, raw_settings=True)

    # Its own options are the coordinator's (main() hands its argv over before parsing).
    sub.add_parser("coordinator", help="run a federation coordinator (HTTP service), or `coordinator invite` "
                                       "to mint admission tokens; `continuum-mcp coordinator --help` for its options",
                   formatter_class=HelpFormatter)
    federation.add_parsers(sub, common)
    dashboard.add_parser(sub, common)
    privacy_cli.add_parser(sub, parents=common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["coordinator"]:
        # The coordinator is a separate service with its own options (see `coordinator --help`).
        from continuum_mcp.federation.coordinator import main as coordinator_main

        return coordinator_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from embeddings.base import EmbedderError

    try:
        settings = Settings.from_env(data_dir=args.data_dir, model_path=args.model_path)
        if getattr(args, "raw_settings", False):
            return int(args.func(args, settings))
        from continuum_mcp.app import Continuum

        with Continuum.open(settings, load_delay=None) as app:
            return int(args.func(args, app))
    except ContinuumError as exc:
        return fail(exc)
    except EmbedderError as exc:  # the model could not be loaded: the documented code of an unusable model
        print(f"error: {ModelMismatch.code}: {exc}", file=sys.stderr)
        return ModelMismatch.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
