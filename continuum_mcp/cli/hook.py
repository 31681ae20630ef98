"""Claude Code hooks: ``continuum-mcp hook session-start`` and ``hook session-end``.

Claude Code runs a hook command with the event as JSON on stdin (``session_id``,
``transcript_path``, ``cwd``, ``hook_event_name``...). ``session-start`` answers with the few
memories most relevant to the project directory as SessionStart ``additionalContext`` (JSON on
stdout). ``session-end`` reads the session's transcript and stores what the user asked to keep
in so many words: each line of the user's own messages that starts with ``remember:`` (no model
summarises anything); with ``--session-record`` also one short record that the session took
place (project, reason, number of prompts, the first prompt cut to 200 characters).

Every memory written here is tagged ``project:<dir name>`` and ``claude-code``. A hook must not
get in the way of a session: a failure prints one line on stderr and exits 1, which Claude Code
treats as a non-blocking error (2 would block).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from continuum_mcp.cli._common import add_command
from continuum_mcp.errors import InvalidInput

HOOK_TAG = "claude-code"
REMEMBER_LINE = re.compile(r"^\s*remember:\s*(?P<text>\S.*)$", re.IGNORECASE | re.MULTILINE)
FIRST_PROMPT_CHARS = 200
HOOK_FAILURE_EXIT = 1  # non-blocking in Claude Code's hook protocol


class HookInput(BaseModel):
    """The fields of Claude Code's hook input that these hooks use (others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    session_id: str = ""
    cwd: str
    transcript_path: str | None = None
    hook_event_name: str = ""
    source: str | None = None
    reason: str | None = None


def project_tag(cwd: str) -> str:
    """``project:<dir name>``, in the characters a tag may have."""
    name = re.sub(r"[^\w\-.+#]+", "-", Path(cwd).name.lower()).strip("-._+#") or "root"
    return f"project:{name[:55]}"


def read_input(stream: Any) -> HookInput:
    try:
        return HookInput.model_validate(json.loads(stream.read() or "null"))
    except json.JSONDecodeError as exc:
        why = f"not JSON: {exc.msg}"
    except ValidationError as exc:
        err = exc.errors()[0]
        why = f"{'.'.join(map(str, err['loc'])) or 'input'}: {err['msg']}"
    raise InvalidInput(f"the hook input on stdin is not Claude Code's hook JSON with a 'cwd' ({why}); run this "
                       "from a Claude Code hook (see the README)")


def session_start_context(app: Any, event: HookInput, k: int) -> str:
    """The memories to put in front of a new session: relevant to the project, newest tagged ones."""
    from continuum_mcp.memory.store import Filters

    tag = project_tag(event.cwd)
    name = Path(event.cwd).name
    floor = app.settings.relevance_floor
    found = app.recall(f"{name} project {event.cwd}", k=k)
    picked = {h.memory.id: h.memory for h in found.hits if (h.similarity or 0.0) >= floor}
    for m in app.list(Filters(tags_any=[tag]), limit=k).memories:
        picked.setdefault(m.id, m)
    if not picked:
        return ""
    lines = [f"Memories from continuum-mcp relevant to {name} ({event.cwd}); recall more with the `recall` tool:"]
    for m in list(picked.values())[:k]:
        tags = f" [{', '.join(m.tags)}]" if m.tags else ""
        lines.append(f"- #{m.id} ({m.created_at:%Y-%m-%d}){tags} {m.text}")
    return "\n".join(lines)


def cmd_session_start(args: argparse.Namespace, app: Any) -> int:
    event = read_input(sys.stdin)
    context = session_start_context(app, event, args.k)
    if context:
        print(json.dumps({"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": context}}))
    return 0


def user_texts(transcript: Path) -> list[str]:
    """The text of the user's own prompts in a Claude Code transcript (JSONL), in order.

    Tool results (also sent as user turns) and unreadable lines are skipped: the format is
    Claude Code's internal one, so this reads only what it needs."""
    out: list[str] = []
    try:
        lines = transcript.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise InvalidInput(f"cannot read the transcript {transcript}: {exc.strerror or exc}") from exc
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or entry.get("type") != "user" or entry.get("isMeta"):
            continue
        content = (entry.get("message") or {}).get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            texts = [c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text"]
            if texts:
                out.append("\n".join(texts))
    return out


def cmd_session_end(args: argparse.Namespace, app: Any) -> int:
    event = read_input(sys.stdin)
    if not event.transcript_path:
        raise InvalidInput("the hook input has no transcript_path; nothing to capture")
    prompts = user_texts(Path(event.transcript_path).expanduser())
    tags = [project_tag(event.cwd), HOOK_TAG]
    meta = {"session_id": event.session_id, "cwd": event.cwd}
    stored = 0
    for prompt in prompts:
        for match in REMEMBER_LINE.finditer(prompt):
            r = app.remember(match["text"].strip(), tags=tags, metadata=meta, source="hook")
            stored += r.status in ("created", "updated")
    if args.session_record and prompts:
        first = " ".join(prompts[0].split())
        first = first if len(first) <= FIRST_PROMPT_CHARS else first[:FIRST_PROMPT_CHARS - 3] + "..."
        record = (f"Claude Code session in {Path(event.cwd).name} ({event.cwd}) ended"
                  f"{f' ({event.reason})' if event.reason else ''} after {len(prompts)} prompt(s); "
                  f"it began with: {first}")
        app.remember(record, tags=[*tags, "session"], metadata=meta, source="hook")
        stored += 1
    print(f"continuum-mcp: {stored} memory(ies) stored from session {event.session_id or '?'}")
    return 0


def add_parsers(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    hp = sub.add_parser("hook", help="Claude Code hooks: context at session start, capture at session end",
                        description="Claude Code hooks (hook JSON on stdin). See the README for settings.json.")
    hs = hp.add_subparsers(dest="hook_command", required=True, metavar="EVENT",
                           help="which hook; `continuum-mcp hook EVENT --help` explains it")
    s = add_command(hs, "session-start", "print the memories most relevant to the project as SessionStart "
                                         "additionalContext (JSON on stdout)", parents,
                    epilog="exit codes: 0 (also when nothing is relevant: then nothing is printed), 1 on any "
                           "failure (non-blocking for Claude Code)")
    s.add_argument("-k", type=int, default=5, help="at most this many memories")
    s.set_defaults(func=cmd_session_start, hook=True)
    s = add_command(hs, "session-end", "store the session's `remember: ...` lines (the user's own prompts) as "
                                       "memories", parents,
                    epilog="exit codes: 0, or 1 on any failure (non-blocking for Claude Code)")
    s.add_argument("--session-record", action="store_true",
                   help="also store one short record of the session (project, reason, prompts, first prompt)")
    s.set_defaults(func=cmd_session_end, hook=True)


__all__ = ["HookInput", "add_parsers", "project_tag", "session_start_context", "user_texts"]
