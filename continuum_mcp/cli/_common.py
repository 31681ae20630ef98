"""What every CLI command shares: options, output (human or ``--json``), exit codes, progress.

Exit codes are not spelled here: a failure exits with its error class's ``exit_code`` (one
taxonomy, ``continuum_mcp.errors``; ``EXIT_CODE_MEANINGS`` is the documented table).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from continuum_mcp.errors import ContinuumError, InvalidInput, ModelMismatch, StoreCorrupt
from continuum_mcp.memory.models import Filters, Progress


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default after its help text, unless the default says nothing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" not in text and action.default not in (None, False, argparse.SUPPRESS, [])
                and (action.option_strings or action.nargs in ("?", "*"))):
            text += " (default: %(default)s)"
        return text


#: Every subcommand's --help ends with this (the full table is in ``continuum-mcp --help``).
EXIT_CODES_HINT = (f"exit codes: 0 success, {InvalidInput.exit_code} invalid input, {ModelMismatch.exit_code} "
                   f"unusable model, {StoreCorrupt.exit_code} unreadable store; `continuum-mcp --help` lists them all")


def add_command(sub: Any, name: str, help: str, parents: Sequence[argparse.ArgumentParser] = (),
                epilog: str = EXIT_CODES_HINT) -> Any:
    """A subcommand parser with the shared formatter (help texts show their defaults)."""
    return sub.add_parser(name, help=help, description=help, parents=list(parents), formatter_class=HelpFormatter,
                          epilog=epilog)


def store_options() -> argparse.ArgumentParser:
    """Where the memory is and which model reads it (every command that opens the store)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--data-dir", type=Path, help="memory directory (default: $CONTINUUM_DATA_DIR or the "
                                                 "platform's user data dir)")
    p.add_argument("--model-path", type=Path, help="a sentence-transformers model directory "
                                                   "(default: $CONTINUUM_MODEL_PATH or the bundled all-MiniLM-L6-v2)")
    p.add_argument("--dedup-threshold", type=float, metavar="COSINE",
                   help="cosine (0-1) at or above which a new memory is compared with an existing one: merged if "
                        "it restates it with the same facts, else stored as its update; 1.0 turns this off "
                        "(default: $CONTINUUM_DEDUP_THRESHOLD or 0.95)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks on stderr")
    return p


def json_option() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="machine-readable output (the result model as JSON)")
    return p


def filter_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--tag", action="append", help="match memories with any of these tags (repeatable)")
    p.add_argument("--all-tags", action="append", help="match memories with all of these tags (repeatable)")
    p.add_argument("--since", type=iso_time, help="created at or after (ISO time)")
    p.add_argument("--until", type=iso_time, help="created at or before (ISO time)")
    return p


def iso_time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {value!r}") from None


def filters(args: argparse.Namespace) -> Filters:
    return Filters(tags_any=args.tag or [], tags_all=args.all_tags or [], since=args.since, until=args.until)


def json_object(text: str | None, option: str = "--metadata") -> dict[str, Any] | None:
    """A JSON object argument; malformed JSON is invalid input like any other bad argument."""
    if text is None:
        return None
    try:
        return json.loads(text)  # type: ignore[no-any-return]  # the store checks it is an object
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{option} is not valid JSON ({exc})") from exc


def emit(args: argparse.Namespace, result: BaseModel | Sequence[BaseModel], human: Callable[[], str]) -> int:
    """Print the result (JSON with --json, else the human text); the command's exit code, 0."""
    if getattr(args, "json", False):
        if isinstance(result, BaseModel):
            print(result.model_dump_json(indent=2))
        else:
            print(json.dumps([r.model_dump(mode="json") for r in result], indent=2, ensure_ascii=False))
    else:
        print(human())
    return 0


def fail(exc: ContinuumError) -> int:
    """One line on stderr saying what went wrong; the exit code of the error's class."""
    print(f"error: {exc.code}: {' '.join(exc.message.split())}", file=sys.stderr)
    return exc.exit_code


def fmt_time(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M") if dt else "-"


def progress_bar(desc: str) -> tuple[Progress, Callable[[], None]]:
    """A tqdm bar on stderr driven by (done, total) callbacks, and its close."""
    from tqdm import tqdm

    bar: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc=desc, unit="mem", file=sys.stderr))
        bar[0].n = done
        bar[0].refresh()

    def close() -> None:
        if bar:
            bar[0].close()

    return update, close
