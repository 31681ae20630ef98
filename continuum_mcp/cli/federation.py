"""Federation commands (``continuum-mcp federation ...``) and the local pattern preview."""

from __future__ import annotations

import argparse
from typing import Any

from continuum_mcp.app import Continuum
from continuum_mcp.cli import founder, governance
from continuum_mcp.cli._common import add_command, emit


def cmd_join(args: argparse.Namespace, app: Continuum) -> int:
    r = app.join(args.invite, contribution_level=args.level, privacy_mode=args.mode)
    return emit(args, r, lambda: f"joined {r.federation_id} at {r.coordinator_url} as {r.instance_id} "
                                 f"(level {r.contribution_level}, federation mode {r.federation_mode})"
                                 + (f"\nnote: {r.note}" if r.note else ""))


def cmd_status(args: argparse.Namespace, app: Continuum) -> int:
    s = app.federation_status()

    def human() -> str:
        if not s.joined:
            return "not a member of any federation" + (f" (instance id {s.instance_id})" if s.instance_id else "")
        reach = {True: "reachable", False: "UNREACHABLE", None: "?"}[s.coordinator_reachable]
        credits = (f"{s.credits.available:g} available, {s.credits.pending:g} pending, "
                   f"{s.credits.free_queries_left_today} free queries left today") if s.credits else "-"
        auto = f"on every {s.auto_sync.interval_minutes:g} min" if s.auto_sync.enabled else "off"
        return "\n".join([
            f"instance:      {s.instance_id}", f"federation:    {s.federation_id} at {s.coordinator_url} ({reach})",
            f"level/mode:    {s.contribution_level}, own mode {s.privacy_mode}, federation mode {s.federation_mode}",
            f"privacy:       epsilon {s.privacy_spent_epsilon} spent of {s.privacy_budget_epsilon}, "
            f"{s.privacy_budget_left} left (releases; with learning sessions: epsilon {s.privacy_total_epsilon})",
            f"credits:       {credits}",
            f"auto-sync:     {auto}{' (running)' if s.auto_sync_running else ''}",
            f"rounds:        current {s.current_round}, last taken part {s.last_round}",
            f"outbox:        {s.outbox_waiting} waiting; cache: {s.cached_patterns} patterns"])
    return emit(args, s, human)


def cmd_contribute(args: argparse.Namespace, app: Continuum) -> int:
    r = app.contribute(min_confidence=args.min_confidence, domain=args.domain, dry_run=args.dry_run)

    def human() -> str:
        lines = [f"{r.status}: {r.patterns} pattern(s). {r.message}"]
        if r.status == "dry_run":
            lines.append(r.what_leaves)
            for n, p in enumerate(r.preview, 1):
                lines.append(f"[{n}] slot {p.slot}  confidence {p.confidence:.2f}  phrases: {', '.join(p.phrases)}")
                if p.statement is not None:
                    lines.append(f"    statement: {p.statement}")
        return "\n".join(lines)
    return emit(args, r, human)


def cmd_sync(args: argparse.Namespace, app: Continuum) -> int:
    r = app.sync(timeout_seconds=args.timeout)
    return emit(args, r, lambda: f"{r.message}; outbox sent {r.outbox_sent}, waiting {r.outbox_waiting}; "
                                 f"cache {r.cache_patterns} patterns")


def cmd_query(args: argparse.Namespace, app: Continuum) -> int:
    r = app.query(args.query, min_confidence=args.min_confidence, max_results=args.max_results)

    def human() -> str:
        if not r.patterns:
            return "no federated patterns match"
        return "\n".join(f"{p.pattern_id}  confidence {p.confidence:.2f}  contributors ~{p.contributor_count:.0f}  "
                         f"verified {p.verification_count}  {p.summary}" for p in r.patterns)
    return emit(args, r.patterns, human)


def cmd_credits(args: argparse.Namespace, app: Continuum) -> int:
    c = app.credits()
    return emit(args, c, lambda: f"available {c.available:g}, pending {c.pending:g}, earned this month "
                                 f"{c.earned_this_month:g}, spent this month {c.spent_this_month:g}, "
                                 f"free queries left today {c.free_queries_left_today}")


def cmd_verify(args: argparse.Namespace, app: Continuum) -> int:
    r = app.verify(args.pattern_id)
    return emit(args, r, lambda: f"verified {r.pattern_id} (memory #{r.memory_id}, similarity {r.similarity:.2f})")


def cmd_vote(args: argparse.Namespace, app: Continuum) -> int:
    r = app.vote(args.pattern_id, up=args.direction == "up")
    return emit(args, r, lambda: f"voted {args.direction} on {r.pattern_id}: {r.detail}")


def cmd_download(args: argparse.Namespace, app: Continuum) -> int:
    r = app.download()
    return emit(args, r, lambda: f"downloaded {r.patterns} pattern(s) into the local cache, charged {r.charged:g}")


def cmd_delete(args: argparse.Namespace, app: Continuum) -> int:
    r = app.delete_contributions()
    return emit(args, r, lambda: f"{r.deleted_submissions} submission(s) deleted, {r.withdrawn_patterns} "
                                 f"pattern(s) withdrawn, {r.local_outbox_cleared} waiting in the outbox dropped")


def cmd_leave(args: argparse.Namespace, app: Continuum) -> int:
    r = app.leave(force=args.force)
    return emit(args, r, lambda: f"left {r.federation_id}: {r.deleted_submissions} submission(s) deleted, "
                                 f"{r.withdrawn_patterns} pattern(s) withdrawn; federation key forgotten")


def cmd_auto_sync(args: argparse.Namespace, app: Continuum) -> int:
    r = app.set_auto_sync(args.state == "on", interval_minutes=args.interval,
                          contribute_on_sync=not args.no_contribute, query_on_sync=not args.no_query)
    return emit(args, r, lambda: (f"auto-sync on every {r.interval_minutes:g} minutes while the MCP server runs"
                                  if r.enabled else "auto-sync off"))


def cmd_patterns(args: argparse.Namespace, app: Continuum) -> int:
    r = app.preview(min_confidence=args.min_confidence, exclude=args.exclude or ())
    return emit(args, r, r.to_text)


def add_parsers(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    fp = sub.add_parser("federation", help="join and use a federation of memories",
                        description="Join and use a federation of memories (opt-in; nothing is shared before).")
    fs = fp.add_subparsers(dest="fed_command", required=True, metavar="COMMAND",
                           help="what to do; `continuum-mcp federation COMMAND --help` explains its arguments")
    founder.add_parsers(fs, common[0])
    s = add_command(fs, "join", "join with an invite from the federation's founder", common)
    s.add_argument("invite", help="the invite string 'continuum-invite:v1:...#...' (its key part never leaves "
                                  "this machine)")
    s.add_argument("--level", choices=["minimal", "standard", "extensive"], default="standard",
                   help="how many patterns per round at most: minimal 20, standard 100, extensive 250")
    s.add_argument("--mode", choices=["high", "balanced", "open"], default="high",
                   help="your own privacy mode; a federation that releases less privately is refused")
    s.set_defaults(func=cmd_join)
    s = add_command(fs, "status", "membership, privacy budget, credits, rounds", common)
    s.set_defaults(func=cmd_status)
    s = add_command(fs, "contribute", "share anonymised patterns (never raw memories)", common)
    s.add_argument("--min-confidence", type=float, default=0.7, help="only patterns at least this confident (0-1)")
    s.add_argument("--domain", help="only memories with this tag")
    s.add_argument("--dry-run", action="store_true", help="show exactly what would be sent; send nothing")
    s.set_defaults(func=cmd_contribute)
    s = add_command(fs, "sync", "send the outbox, take part in the round, refresh the cache", common)
    s.add_argument("--timeout", type=float, help="seconds to take part in a running round (default: from the "
                                                 "federation's phase timeout)")
    s.set_defaults(func=cmd_sync)
    s = add_command(fs, "query", "ask the federation (costs credits after the free queries)", common)
    s.add_argument("query", help="what to ask the federation's collective knowledge")
    s.add_argument("--min-confidence", type=float, default=0.8, help="drop patterns below this confidence (0-1)")
    s.add_argument("--max-results", type=int, default=10, help="at most this many patterns (1-100)")
    s.set_defaults(func=cmd_query)
    s = add_command(fs, "credits", "credit balance", common)
    s.set_defaults(func=cmd_credits)
    s = add_command(fs, "verify", "confirm a released pattern your memory supports (earns credits)", common)
    s.add_argument("pattern_id", help="id of a released pattern, e.g. p-12")
    s.set_defaults(func=cmd_verify)
    s = add_command(fs, "vote", "rate a released pattern (a new vote replaces the old)", common)
    s.add_argument("pattern_id", help="id of a released pattern, e.g. p-12")
    s.add_argument("direction", choices=["up", "down"], help="up: useful, good quality; down: poor")
    s.set_defaults(func=cmd_vote)
    s = add_command(fs, "download", "fetch every released pattern into the local cache (costs credits)", common)
    s.set_defaults(func=cmd_download)
    s = add_command(fs, "delete-contributions", "withdraw everything this instance contributed (stay a member)",
                    common)
    s.set_defaults(func=cmd_delete)
    s = add_command(fs, "leave", "delete contributions and forget the federation", common)
    s.add_argument("--force", action="store_true", help="forget locally even if the coordinator is unreachable")
    s.set_defaults(func=cmd_leave)
    s = add_command(fs, "auto-sync", "background sync while the MCP server runs", common)
    s.add_argument("state", choices=["on", "off"], help="turn background sync on or off (persisted)")
    s.add_argument("--interval", type=float, default=15, help="minutes between syncs")
    s.add_argument("--no-contribute", action="store_true", help="do not contribute new patterns on each sync")
    s.add_argument("--no-query", action="store_true", help="do not fetch newly released patterns into the cache")
    s.set_defaults(func=cmd_auto_sync)
    governance.add_parsers(fs, common)

    s = add_command(sub, "patterns", "show the patterns a contribution would share (local; nothing is sent)", common)
    s.add_argument("--preview", action="store_true", help="accepted for older scripts: a preview is all this "
                                                          "command does")
    s.add_argument("--min-confidence", type=float, default=0.0, help="only patterns at least this confident (0-1)")
    s.add_argument("--exclude", type=int, action="append", help="memory id to hold back (repeatable)")
    s.set_defaults(func=cmd_patterns)
