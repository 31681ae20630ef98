"""The command-line adapter: ``continuum-mcp <command>``.

Exit codes: 0 success, 2 invalid input (also argparse usage errors), 3 not found, 4 embedding
model mismatch, 5 unreadable store, 6 privacy budget exhausted, 7 coordinator unavailable (a
contribution stays queued in the outbox), 8 not joined / refused by local federation state
(e.g. a verification the memory does not support), 9 insufficient credits, 10 refused by the
coordinator (not admitted, bad invite, forbidden, authentication), 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from continuum_mcp import __version__
from continuum_mcp.config import Settings
from continuum_mcp.errors import (
    BadInvite, ContinuumError, CoordinatorUnavailable, CryptoError, FederationError, Forbidden, InsufficientCredits,
    InvalidInput, ModelMismatch, NotAdmitted, NotFound, PrivacyBudgetExceeded, StoreCorrupt,
)
from continuum_mcp.memory.store import Filters, MemoryStore, Progress, open_store

EXIT_CODES: dict[type[ContinuumError], int] = {
    InvalidInput: 2, NotFound: 3, ModelMismatch: 4, StoreCorrupt: 5, PrivacyBudgetExceeded: 6,
    CoordinatorUnavailable: 7, FederationError: 8, InsufficientCredits: 9, NotAdmitted: 10, BadInvite: 10,
    Forbidden: 10, CryptoError: 10,
}


def _exit_code(exc: ContinuumError) -> int:
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]  # type: ignore[index]
    return 1


def _progress(desc: str) -> tuple[Progress, Callable[[], None]]:
    """A tqdm bar on stderr driven by (done, total) callbacks."""
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


def _print(args: argparse.Namespace, result: BaseModel | list[BaseModel], human: Callable[[], str]) -> None:
    if args.json:
        if isinstance(result, list):
            print(json.dumps([r.model_dump(mode="json") for r in result], indent=2, ensure_ascii=False))
        else:
            print(result.model_dump_json(indent=2))
    else:
        print(human())


def _fmt_time(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M") if dt else "-"


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(tags_any=args.tag or [], tags_all=args.all_tags or [],
                   since=args.since, until=args.until)


# ----- commands ------------------------------------------------------------------------------
def cmd_remember(args: argparse.Namespace, store: MemoryStore) -> int:
    text = args.text if args.text != "-" else sys.stdin.read()
    meta = json.loads(args.metadata) if args.metadata else None
    r = store.remember(text, tags=args.tag, metadata=meta, source="cli")
    _print(args, r, lambda: f"{r.status} #{r.memory.id}" + (
        f" (similarity {r.similarity:.3f})" if r.status == "near_duplicate" else "") + f": {r.memory.text}")
    return 0


def cmd_recall(args: argparse.Namespace, store: MemoryStore) -> int:
    r = store.recall(args.query, k=args.k, mode=args.mode, filters=_filters(args), min_score=args.min_score)

    def human() -> str:
        if not r.hits:
            return "no matching memories"
        return "\n".join(f"#{h.memory.id}  sim {h.similarity:.3f}  [{', '.join(h.memory.tags)}]  {h.memory.text}"
                         for h in r.hits)
    _print(args, r, human)
    return 0


def cmd_forget(args: argparse.Namespace, store: MemoryStore) -> int:
    r = store.forget(args.ids)
    _print(args, r, lambda: f"deleted {', '.join(f'#{i}' for i in r.deleted)}")
    return 0


def cmd_update(args: argparse.Namespace, store: MemoryStore) -> int:
    meta = json.loads(args.metadata) if args.metadata else None
    m = store.update(args.id, text=args.text, tags=args.tag, metadata=meta)
    _print(args, m, lambda: f"updated #{m.id}: {m.text}")
    return 0


def cmd_list(args: argparse.Namespace, store: MemoryStore) -> int:
    page = store.list(_filters(args), offset=args.offset, limit=args.limit)

    def human() -> str:
        lines = [f"#{m.id}  {_fmt_time(m.created_at)}  [{', '.join(m.tags)}]  {m.text}" for m in page.memories]
        lines.append(f"({len(page.memories)} of {page.total}, offset {page.offset})")
        return "\n".join(lines)
    _print(args, page, human)
    return 0


def cmd_stats(args: argparse.Namespace, store: MemoryStore) -> int:
    s = store.stats()
    _print(args, s, lambda: "\n".join([
        f"memories:   {s.count}", f"data dir:   {s.data_dir}", f"model:      {s.model_id} ({s.dim}-d)",
        f"index:      {s.index_kind}", f"database:   {s.db_bytes / 1e6:.1f} MB",
        f"time span:  {_fmt_time(s.oldest)} .. {_fmt_time(s.newest)}",
        "top tags:   " + (", ".join(f"{t} ({n})" for t, n in s.top_tags.items()) or "-")]))
    return 0


def cmd_export(args: argparse.Namespace, store: MemoryStore) -> int:
    if args.output == "-":
        n = store.export_jsonl(sys.stdout)
    else:
        from continuum_mcp._sqlite import atomic_write
        import io
        buf = io.StringIO()
        n = store.export_jsonl(buf)
        atomic_write(Path(args.output), buf.getvalue().encode("utf-8"))
    print(f"exported {n} memories", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace, store: MemoryStore) -> int:
    update, close = _progress("importing")
    try:
        with (sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")) as f:
            r = store.import_jsonl(f, progress=update)
    except OSError as exc:
        raise InvalidInput(f"cannot read {args.input}: {exc}") from exc
    finally:
        close()
    _print(args, r, lambda: f"read {r.read}, created {r.created}, duplicates {r.duplicates}"
                            + (" (re-embedded with this store's model)" if r.reembedded else ""))
    return 0


def cmd_reembed(args: argparse.Namespace, store: MemoryStore) -> int:
    update, close = _progress("re-embedding")
    try:
        n = store.reembed(progress=update)
    finally:
        close()
    print(f"re-embedded {n} memories with {store.store_model_id}")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from continuum_mcp.server import build_server

    server = build_server(settings)
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=args.host, port=args.port)
    return 0


# ----- federation ----------------------------------------------------------------------------
def _fed(store: MemoryStore) -> Any:
    from continuum_mcp.federation.client._client import FederationClient

    return FederationClient(store, store.settings)


def cmd_fed_join(args: argparse.Namespace, store: MemoryStore) -> int:
    with _fed(store) as f:
        r = f.join(args.invite, contribution_level=args.level, privacy_mode=args.mode)
    _print(args, r, lambda: f"joined {r.federation_id} at {r.coordinator_url} as {r.instance_id} "
                            f"(level {r.contribution_level}, federation mode {r.federation_mode})"
                            + (f"\nnote: {r.note}" if r.note else ""))
    return 0


def cmd_fed_status(args: argparse.Namespace, store: MemoryStore) -> int:
    with _fed(store) as f:
        s = f.status()

    def human() -> str:
        if not s.joined:
            return f"not a member of any federation (instance id {s.instance_id})"
        reach = {True: "reachable", False: "UNREACHABLE", None: "?"}[s.coordinator_reachable]
        credits = (f"{s.credits.available:g} available, {s.credits.pending:g} pending, "
                   f"{s.credits.free_queries_left_today} free queries left today") if s.credits else "-"
        return "\n".join([
            f"instance:      {s.instance_id}", f"federation:    {s.federation_id} at {s.coordinator_url} ({reach})",
            f"level/mode:    {s.contribution_level}, own mode {s.privacy_mode}, federation mode {s.federation_mode}",
            f"privacy:       epsilon {s.privacy_spent_epsilon} spent of {s.privacy_budget_epsilon}, "
            f"{s.privacy_budget_left} left", f"credits:       {credits}",
            f"auto-sync:     {'on every ' + format(s.auto_sync.interval_minutes, 'g') + ' min' if s.auto_sync.enabled else 'off'}"
            f"{' (running)' if s.auto_sync_running else ''}",
            f"rounds:        current {s.current_round}, last taken part {s.last_round}",
            f"outbox:        {s.outbox_waiting} waiting; cache: {s.cached_patterns} patterns"])
    _print(args, s, human)
    return 0


def cmd_fed_contribute(args: argparse.Namespace, store: MemoryStore) -> int:
    with _fed(store) as f:
        r = f.contribute(min_confidence=args.min_confidence, domain=args.domain, dry_run=args.dry_run)

    def human() -> str:
        lines = [f"{r.status}: {r.patterns} pattern(s). {r.message}"]
        if r.status == "dry_run":
            lines.append(r.what_leaves)
            for n, p in enumerate(r.preview, 1):
                lines.append(f"[{n}] slot {p.slot}  confidence {p.confidence:.2f}  phrases: {', '.join(p.phrases)}")
                if p.statement is not None:
                    lines.append(f"    statement: {p.statement}")
        return "\n".join(lines)
    _print(args, r, human)
    return 0


def cmd_fed_sync(args: argparse.Namespace, store: MemoryStore) -> int:
    with _fed(store) as f:
        r = f.sync(timeout_seconds=args.timeout)
    _print(args, r, lambda: f"{r.message}; outbox sent {r.outbox_sent}, waiting {r.outbox_waiting}; "
                            f"cache {r.cache_patterns} patterns")
    return 0


def cmd_fed_query(args: argparse.Namespace, store: MemoryStore) -> int:
    with _fed(store) as f:
        r = f.query(args.query, min_confidence=args.min_confidence, max_results=args.max_results)

    def human() -> str:
        if not r:
            return "no federated patterns match"
        return "\n".join(f"{p.pattern_id}  confidence {p.confidence:.2f}  contributors ~{p.contributor_count:.0f}  "
                         f"verified {p.verification_count}  {p.summary}" for p in r)
    _print(args, list(r), human)
    return 0


def cmd_fed_credits(args: argparse.Namespace, store: MemoryStore) -> int:
    with _fed(store) as f:
        c = f.get_credits()
    _print(args, c, lambda: f"available {c.available:g}, pending {c.pending:g}, earned this month "
                            f"{c.earned_this_month:g}, spent this month {c.spent_this_month:g}, "
                            f"free queries left today {c.free_queries_left_today}")
    return 0


def cmd_fed_verify(args: argparse.Namespace, store: MemoryStore) -> int:
    with _fed(store) as f:
        r = f.verify(args.pattern_id)
    _print(args, r, lambda: f"verified {r.pattern_id} (memory #{r.memory_id}, similarity {r.similarity:.2f})")
    return 0


def cmd_fed_vote(args: argparse.Namespace, store: MemoryStore) -> int:
    with _fed(store) as f:
        r = f.vote(args.pattern_id, up=args.direction == "up")
    _print(args, r, lambda: f"voted {args.direction} on {r.pattern_id}: {r.detail}")
    return 0


def cmd_fed_leave(args: argparse.Namespace, store: MemoryStore) -> int:
    with _fed(store) as f:
        r = f.leave(force=args.force)
    _print(args, r, lambda: f"left {r.federation_id}: {r.deleted_submissions} submission(s) deleted, "
                            f"{r.withdrawn_patterns} pattern(s) withdrawn; federation key forgotten")
    return 0


def cmd_fed_auto_sync(args: argparse.Namespace, store: MemoryStore) -> int:
    with _fed(store) as f:
        if args.state == "on":
            r = f.enable_auto_sync(args.interval, contribute_on_sync=not args.no_contribute,
                                   query_on_sync=not args.no_query)
        else:
            r = f.disable_auto_sync()
    _print(args, r, lambda: ("auto-sync on every " + format(r.interval_minutes, "g") + " minutes while the MCP "
                             "server runs") if r.enabled else "auto-sync off")
    return 0


def cmd_patterns(args: argparse.Namespace, store: MemoryStore) -> int:
    from continuum_mcp.privacy.generalize import Generalizer
    from continuum_mcp.privacy.preview import preview_patterns
    from continuum_mcp.privacy.modes import default_policy
    from continuum_mcp.privacy.scrub import Scrubber

    if not args.preview:
        raise InvalidInput("use --preview to see the patterns a contribution would share")
    gen = Generalizer(store.embedder, Scrubber(), max_phrases=default_policy().max_phrases_per_pattern)
    r = preview_patterns(list(store.all_memories()), gen, min_confidence=args.min_confidence,
                         exclude=args.exclude or [])
    _print(args, r, r.to_text)
    return 0


def _add_federation_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    fp = sub.add_parser("federation", help="join and use a federation of memories")
    fs = fp.add_subparsers(dest="fed_command", required=True)
    s = fs.add_parser("join", parents=[common], help="join with an invite")
    s.add_argument("invite")
    s.add_argument("--level", choices=["minimal", "standard", "extensive"], default="standard")
    s.add_argument("--mode", choices=["high", "balanced", "open"], default="high", help="your own privacy mode")
    s.set_defaults(func=cmd_fed_join)
    s = fs.add_parser("status", parents=[common], help="membership, privacy budget, credits, rounds")
    s.set_defaults(func=cmd_fed_status)
    s = fs.add_parser("contribute", parents=[common], help="share anonymised patterns")
    s.add_argument("--min-confidence", type=float, default=0.7)
    s.add_argument("--domain", help="only memories with this tag")
    s.add_argument("--dry-run", action="store_true", help="show exactly what would be sent; send nothing")
    s.set_defaults(func=cmd_fed_contribute)
    s = fs.add_parser("sync", parents=[common], help="send the outbox, take part in the round, refresh the cache")
    s.add_argument("--timeout", type=float, help="seconds to take part in a running round")
    s.set_defaults(func=cmd_fed_sync)
    s = fs.add_parser("query", parents=[common], help="ask the federation")
    s.add_argument("query")
    s.add_argument("--min-confidence", type=float, default=0.8)
    s.add_argument("--max-results", type=int, default=10)
    s.set_defaults(func=cmd_fed_query)
    s = fs.add_parser("credits", parents=[common], help="credit balance")
    s.set_defaults(func=cmd_fed_credits)
    s = fs.add_parser("verify", parents=[common], help="confirm a released pattern your memory supports")
    s.add_argument("pattern_id")
    s.set_defaults(func=cmd_fed_verify)
    s = fs.add_parser("vote", parents=[common], help="rate a released pattern")
    s.add_argument("pattern_id")
    s.add_argument("direction", choices=["up", "down"])
    s.set_defaults(func=cmd_fed_vote)
    s = fs.add_parser("leave", parents=[common], help="delete contributions and forget the federation")
    s.add_argument("--force", action="store_true", help="forget locally even if the coordinator is unreachable")
    s.set_defaults(func=cmd_fed_leave)
    s = fs.add_parser("auto-sync", parents=[common], help="background sync while the MCP server runs")
    s.add_argument("state", choices=["on", "off"])
    s.add_argument("--interval", type=float, default=15, help="minutes (default 15)")
    s.add_argument("--no-contribute", action="store_true")
    s.add_argument("--no-query", action="store_true")
    s.set_defaults(func=cmd_fed_auto_sync)


# ----- parser --------------------------------------------------------------------------------
def _iso(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, help="memory directory (default: $CONTINUUM_DATA_DIR or the "
                                                      "platform's user data dir)")
    common.add_argument("--model-path", type=Path, help="a sentence-transformers model directory "
                                                        "(default: the bundled all-MiniLM-L6-v2)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")

    filt = argparse.ArgumentParser(add_help=False)
    filt.add_argument("--tag", action="append", help="match memories with any of these tags (repeatable)")
    filt.add_argument("--all-tags", action="append", help="match memories with all of these tags (repeatable)")
    filt.add_argument("--since", type=_iso, help="created at or after (ISO time)")
    filt.add_argument("--until", type=_iso, help="created at or before (ISO time)")

    p = argparse.ArgumentParser(prog="continuum-mcp", description="Private long-term memory for AI assistants.")
    p.add_argument("--version", action="version", version=f"continuum-mcp {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("remember", parents=[common], help="store a memory")
    s.add_argument("text", help="the text to remember ('-' reads stdin)")
    s.add_argument("--tag", action="append", help="tag (repeatable)")
    s.add_argument("--metadata", help="JSON object")
    s.set_defaults(func=cmd_remember)

    s = sub.add_parser("recall", parents=[common, filt], help="search memories")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=5, help="how many results (default 5)")
    s.add_argument("--mode", choices=["hybrid", "semantic", "keyword"], default="hybrid")
    s.add_argument("--min-score", type=float)
    s.set_defaults(func=cmd_recall)

    s = sub.add_parser("forget", parents=[common], help="delete memories by id")
    s.add_argument("ids", type=int, nargs="+")
    s.set_defaults(func=cmd_forget)

    s = sub.add_parser("update", parents=[common], help="change a memory")
    s.add_argument("id", type=int)
    s.add_argument("--text")
    s.add_argument("--tag", action="append", help="replace tags (repeatable)")
    s.add_argument("--metadata", help="replace metadata (JSON object)")
    s.set_defaults(func=cmd_update)

    s = sub.add_parser("list", parents=[common, filt], help="list memories, newest first")
    s.add_argument("--offset", type=int, default=0)
    s.add_argument("--limit", type=int, default=20)
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("stats", parents=[common], help="store statistics")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("export", parents=[common], help="export all memories as JSONL")
    s.add_argument("output", nargs="?", default="-", help="file (default: stdout)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("import", parents=[common], help="import a JSONL export")
    s.add_argument("input", help="file ('-' reads stdin)")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("reembed", parents=[common], help="re-embed every memory with the configured model")
    s.set_defaults(func=cmd_reembed)

    s = sub.add_parser("serve", parents=[common], help="run the MCP server")
    s.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.set_defaults(func=cmd_serve, raw_settings=True)

    sub.add_parser("coordinator", help="run a federation coordinator (HTTP service), or `coordinator invite` "
                                       "to mint admission tokens; `continuum-mcp coordinator --help` for its options")
    _add_federation_parser(sub, common)
    s = sub.add_parser("patterns", parents=[common], help="show the patterns a contribution would share")
    s.add_argument("--preview", action="store_true", help="plain-text preview (nothing is sent)")
    s.add_argument("--min-confidence", type=float, default=0.0)
    s.add_argument("--exclude", type=int, action="append", help="memory id to hold back (repeatable)")
    s.set_defaults(func=cmd_patterns)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["coordinator"]:
        # The coordinator is a separate service with its own options (see `coordinator --help`).
        from continuum_mcp.federation.coordinator import main as coordinator_main

        return coordinator_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env(data_dir=args.data_dir, model_path=args.model_path)
        if getattr(args, "raw_settings", False):
            return int(args.func(args, settings))
        with open_store(settings, load_delay=None) as store:
            return int(args.func(args, store))
    except json.JSONDecodeError as exc:
        print(f"error: invalid_input: --metadata is not valid JSON ({exc})", file=sys.stderr)
        return 2
    except ContinuumError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
