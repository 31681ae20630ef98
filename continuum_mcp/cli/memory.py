"""Memory commands: remember, recall, forget, update, list, stats, export, import, reembed."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

from continuum_mcp.app import Continuum
from continuum_mcp.cli._common import add_command, emit, filters, fmt_time, iso_time, json_object, progress_bar
from continuum_mcp.errors import InvalidInput


def cmd_remember(args: argparse.Namespace, app: Continuum) -> int:
    text = args.text if args.text != "-" else sys.stdin.read()
    on_duplicate = "store" if args.force else args.on_duplicate
    r = app.remember(text, tags=args.tag, metadata=json_object(args.metadata), source="cli", at=args.at,
                     on_duplicate=on_duplicate)

    def human() -> str:
        note = {"near_duplicate": f" (restates #{r.duplicate_of}, similarity {r.similarity or 0:.3f}; "
                                  "--on-duplicate store keeps it anyway)",
                "duplicate": " (already stored; --on-duplicate store keeps a copy)",
                "updated": f" (a newer version of #{r.updates}, similarity {r.similarity or 0:.3f})"}
        return f"{r.status} #{r.memory.id}{note.get(r.status, '')}: {r.memory.text}"
    return emit(args, r, human)


def cmd_recall(args: argparse.Namespace, app: Continuum) -> int:
    r = app.recall(args.query, k=args.k, mode=args.mode, filters=filters(args), min_score=args.min_score,
                   include_federated=args.include_federated)

    def human() -> str:
        lines = [f"#{h.memory.id}  sim {h.similarity:.3f}  [{', '.join(h.memory.tags)}]  {h.memory.text}"
                 for h in r.hits] or ["no matching memories"]
        if r.federated is not None:
            lines.append("federated patterns (not your memories):" if r.federated else "no federated patterns match")
            lines += [f"  {p.pattern_id}  sim {p.similarity:.3f}  confidence {p.confidence:.2f}  {p.summary}"
                      for p in r.federated]
        return "\n".join(lines)
    return emit(args, r, human)


def cmd_forget(args: argparse.Namespace, app: Continuum) -> int:
    r = app.forget(args.ids)
    return emit(args, r, lambda: f"deleted {', '.join(f'#{i}' for i in r.deleted)}")


def cmd_update(args: argparse.Namespace, app: Continuum) -> int:
    m = app.update(args.id, text=args.text, tags=args.tag, metadata=json_object(args.metadata))
    return emit(args, m, lambda: f"updated #{m.id}: {m.text}")


def cmd_list(args: argparse.Namespace, app: Continuum) -> int:
    page = app.list(filters(args), offset=args.offset, limit=args.limit)

    def human() -> str:
        lines = [f"#{m.id}  {fmt_time(m.created_at)}  [{', '.join(m.tags)}]  {m.text}" for m in page.memories]
        lines.append(f"({len(page.memories)} of {page.total}, offset {page.offset})")
        return "\n".join(lines)
    return emit(args, page, human)


def cmd_stats(args: argparse.Namespace, app: Continuum) -> int:
    s = app.stats()
    return emit(args, s, lambda: "\n".join([
        f"memories:   {s.count}", f"data dir:   {s.data_dir}", f"model:      {s.model_id} ({s.dim}-d)",
        f"index:      {s.index_kind}", f"database:   {s.db_bytes / 1e6:.1f} MB",
        f"time span:  {fmt_time(s.oldest)} .. {fmt_time(s.newest)}",
        "top tags:   " + (", ".join(f"{t} ({n})" for t, n in s.top_tags.items()) or "-")]))


def cmd_export(args: argparse.Namespace, app: Continuum) -> int:
    if args.output == "-":
        n = app.export_jsonl(sys.stdout)
    else:
        from continuum_mcp._sqlite import atomic_write

        buf = io.StringIO()
        n = app.export_jsonl(buf)
        atomic_write(Path(args.output), buf.getvalue().encode("utf-8"))
    print(f"exported {n} memories", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace, app: Continuum) -> int:
    update, close = progress_bar("importing")
    try:
        with (sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")) as f:
            r = app.import_jsonl(f, progress=update)
    except OSError as exc:
        raise InvalidInput(f"cannot read {args.input}: {exc}") from exc
    finally:
        close()
    return emit(args, r, lambda: f"read {r.read}, created {r.created}, duplicates {r.duplicates}"
                                 + (" (re-embedded with this store's model)" if r.reembedded else ""))


def cmd_reembed(args: argparse.Namespace, app: Continuum) -> int:
    update, close = progress_bar("re-embedding")
    try:
        n = app.reembed(progress=update)
    finally:
        close()
    print(f"re-embedded {n} memories with {app.store.store_model_id}")
    return 0


def add_parsers(sub: Any, common: list[argparse.ArgumentParser], filt: argparse.ArgumentParser) -> None:
    s = add_command(sub, "remember", "store a memory", common)
    s.add_argument("text", help="the text to remember ('-' reads stdin)")
    s.add_argument("--tag", action="append", help="tag (repeatable); 'private' keeps it out of any federation")
    s.add_argument("--metadata", help="a JSON object stored with the memory")
    s.add_argument("--at", type=iso_time, help="when it happened, an ISO date/time (default: now)")
    s.add_argument("--on-duplicate", choices=["merge", "store"], default="merge",
                   help="merge: a repeat, or a restatement with the same facts, returns the existing memory; "
                        "store: keep it as a memory of its own anyway")
    s.add_argument("--force", action="store_true", help="the same as --on-duplicate store")
    s.set_defaults(func=cmd_remember)

    s = add_command(sub, "recall", "search memories by meaning and keywords", [*common, filt])
    s.add_argument("query", help="what to look for, in natural language or keywords")
    s.add_argument("-k", type=int, default=5, help="how many results (1-100)")
    s.add_argument("--mode", choices=["hybrid", "semantic", "keyword"], default="hybrid",
                   help="hybrid: meaning and keywords; semantic: meaning only; keyword: exact words")
    s.add_argument("--min-score", type=float, help="drop results whose cosine similarity (BM25 score in keyword "
                                                   "mode) is below this")
    s.add_argument("--include-federated", action="store_true",
                   help="also list matching patterns from the local cache of the federation's released patterns "
                        "(kept apart: not your memories)")
    s.set_defaults(func=cmd_recall)

    s = add_command(sub, "forget", "delete memories by id (all or nothing)", common)
    s.add_argument("ids", type=int, nargs="+", help="ids of the memories to delete for good")
    s.set_defaults(func=cmd_forget)

    s = add_command(sub, "update", "change a memory; what is left out stays as it is", common)
    s.add_argument("id", type=int, help="id of the memory to change")
    s.add_argument("--text", help="new text (replaces the old; re-indexed)")
    s.add_argument("--tag", action="append", help="replace the tags (repeatable)")
    s.add_argument("--metadata", help="replace the metadata (a JSON object)")
    s.set_defaults(func=cmd_update)

    s = add_command(sub, "list", "list memories, newest first", [*common, filt])
    s.add_argument("--offset", type=int, default=0, help="how many to skip (paging)")
    s.add_argument("--limit", type=int, default=20, help="how many to show (1-1000)")
    s.set_defaults(func=cmd_list)

    s = add_command(sub, "stats", "store statistics", common)
    s.set_defaults(func=cmd_stats)

    s = add_command(sub, "export", "export all memories as JSONL", common)
    s.add_argument("output", nargs="?", default="-", help="file to write ('-' is stdout)")
    s.set_defaults(func=cmd_export)

    s = add_command(sub, "import", "import a JSONL export (duplicates are skipped)", common)
    s.add_argument("input", help="file to read ('-' reads stdin)")
    s.set_defaults(func=cmd_import)

    s = add_command(sub, "reembed", "re-embed every memory with the configured model", common)
    s.set_defaults(func=cmd_reembed)
