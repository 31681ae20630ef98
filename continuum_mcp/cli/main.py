"""The command-line adapter: ``continuum-mcp <command>``; builds the parser and runs a command.

Commands live by concern (``memory.py``, ``federation.py``, ``founder.py``, ``hook.py``); each
translates its arguments into one :class:`continuum_mcp.app.Continuum` call and its result into
text or ``--json``. Failures, start-up failures included, print one line saying what and how to
fix it and exit with the error class's ``exit_code`` (table: ``errors.EXIT_CODE_MEANINGS``,
documented in the README and checked by tests/test_docs.py).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence

from continuum_mcp import __version__
from continuum_mcp.cli import dashboard, federation, hook, memory
from continuum_mcp.cli import privacy as privacy_cli
from continuum_mcp.cli._common import HelpFormatter, add_command, fail, filter_options, json_option, store_options
from continuum_mcp.config import ENV_DATA_DIR, ENV_MODEL_PATH, Settings
from continuum_mcp.errors import EXIT_CODE_MEANINGS, ContinuumError, InvalidInput, ModelMismatch

MODEL_HINT = (f"point --model-path (or ${ENV_MODEL_PATH}) at a sentence-transformers model directory, "
              "or leave both unset for the bundled all-MiniLM-L6-v2")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from continuum_mcp.app import Continuum
    from continuum_mcp.server import build_server, run_http, run_stdio, token_path

    if args.no_auth and (args.transport != "streamable-http" or not _loopback(args.host)):
        raise InvalidInput("--no-auth is only for --transport streamable-http on a loopback --host "
                           f"(127.0.0.1, ::1, localhost), not {args.host}")
    # Open the store once before the server starts, so that an unusable data dir, a corrupt store
    # or one from a newer release is one line here, not an exception group from the event loop.
    Continuum.open(settings, load_delay=None).close()
    server = build_server(settings)
    if args.transport == "stdio":
        run_stdio(server)
    else:
        if not args.no_auth:
            print(f"streamable HTTP on {args.host}:{args.port}: every request needs 'Authorization: Bearer <token>'; "
                  f"the token is in {token_path(settings.data_dir)} (mode 0600)", file=sys.stderr)
        run_http(server, host=args.host, port=args.port, require_auth=not args.no_auth)
    return 0


def _exit_codes_epilog() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items())


def build_parser() -> argparse.ArgumentParser:
    store, out = store_options(), json_option()
    common = [store, out]
    p = argparse.ArgumentParser(prog="continuum-mcp", description="Private long-term memory for AI assistants.",
                                epilog=_exit_codes_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"continuum-mcp {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="what to do; `continuum-mcp COMMAND --help` explains its arguments")
    memory.add_parsers(sub, common, filter_options())

    s = add_command(sub, "serve", "run the MCP server", [store])
    s.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio",
                   help="stdio: spawned by an MCP client such as Claude; streamable-http: an HTTP endpoint at /mcp")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (streamable-http only)")
    s.add_argument("--port", type=int, default=8765, help="port to listen on (streamable-http only)")
    s.add_argument("--no-auth", action="store_true",
                   help="streamable-http without a bearer token; refused unless --host is a loopback address")
    s.set_defaults(func=cmd_serve, raw_settings=True)

    # Its own options are the coordinator's (main() hands its argv over before parsing).
    sub.add_parser("coordinator", help="run a federation coordinator (HTTP service), or `coordinator invite` "
                                       "to mint admission tokens; `continuum-mcp coordinator --help` for its options",
                   formatter_class=HelpFormatter)
    federation.add_parsers(sub, common)
    hook.add_parsers(sub, [store])
    dashboard.add_parser(sub, common)
    privacy_cli.add_parser(sub, parents=common)
    return p


def _check_data_dir(settings: Settings) -> None:
    """Create the data directory, or say in one line why it cannot be and what to do."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise InvalidInput(f"cannot create the data directory {settings.data_dir} ({exc.strerror or exc}); pass "
                           f"--data-dir (or ${ENV_DATA_DIR}) a directory you can write") from exc


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside an exception group (an event loop wraps start-up failures in groups)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def run(args: argparse.Namespace) -> int:
    """Settings, then the command; every failure one line on stderr with its exit code."""
    from embeddings.base import EmbedderError

    try:
        try:
            overrides = {} if args.dedup_threshold is None else {"dedup_threshold": args.dedup_threshold}
            settings = Settings.from_env(data_dir=args.data_dir, model_path=args.model_path, **overrides)
            _check_data_dir(settings)
            if getattr(args, "raw_settings", False):
                return int(args.func(args, settings))
            from continuum_mcp.app import Continuum

            with Continuum.open(settings, load_delay=None) as app:
                return int(args.func(args, app))
        except BaseExceptionGroup as group:
            raise _leaf(group) from group
    except ContinuumError as exc:
        return fail(exc)
    except EmbedderError as exc:  # the model could not be loaded: the documented code of an unusable model
        hint = "" if "reinstall" in str(exc) else f"; {MODEL_HINT}"
        print(f"error: {ModelMismatch.code}: {exc}{hint}", file=sys.stderr)
        return ModelMismatch.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback with -v
        if args.verbose:
            raise
        print(f"error: unexpected: {type(exc).__name__}: {exc} (a bug: rerun with -v for the traceback and "
              "report it)", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["coordinator"]:
        # The coordinator is a separate service with its own options (see `coordinator --help`).
        from continuum_mcp.federation.coordinator import main as coordinator_main

        return coordinator_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    code = run(args)
    # A Claude Code hook exits 1 on failure: non-blocking for Claude Code, whose exit 2 blocks.
    return hook.HOOK_FAILURE_EXIT if code and getattr(args, "hook", False) else code


if __name__ == "__main__":
    sys.exit(main())
