"""Claude Code hooks as Claude Code runs them: a process, the hook JSON on stdin, JSON on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from continuum_mcp.cli.hook import project_tag
from continuum_mcp.config import Settings
from continuum_mcp.memory.store import MemoryStore
from embeddings import SentenceTransformerEmbedder


def hook(event: str, payload: object, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "continuum_mcp.cli.main", "hook", event, "--data-dir", str(data),
                           *extra], input=payload if isinstance(payload, str) else json.dumps(payload),
                          capture_output=True, text=True, timeout=300)


def transcript(path: Path, cwd: Path) -> Path:
    """A session transcript in Claude Code's JSONL shape: user prompts, assistant turns, tool results."""
    lines = [
        {"type": "summary", "summary": "Fix the build", "leafUuid": "u0"},
        {"type": "user", "sessionId": "s-1", "cwd": str(cwd), "uuid": "u1",
         "message": {"role": "user", "content": "remember: the staging deploy needs the VPN on\nplease fix the build"}},
        {"type": "assistant", "uuid": "a1", "message": {"role": "assistant", "content": [
            {"type": "text", "text": "remember: the assistant said this, the user did not"}]}},
        {"type": "user", "uuid": "u2", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "remember: a tool printed this"}]}},
        {"type": "user", "uuid": "u5", "message": {"role": "user", "content": "I do not remember: was it npm?"}},
        {"type": "user", "uuid": "u3", "isMeta": True, "message": {"role": "user", "content": "remember: meta"}},
        {"type": "user", "uuid": "u4", "message": {"role": "user", "content": [
            {"type": "text", "text": "Thanks.\nRemember: this repository uses pnpm, never npm"}]}},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json at all\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_session_end_stores_the_users_remember_lines_and_session_start_gives_them_back(
        tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    project = tmp_path / "Acme Web"
    project.mkdir()
    data = tmp_path / "memory"
    with MemoryStore(Settings(data_dir=data), embedder) as store:
        store.remember("Gardening: water the tomatoes every evening in July", tags=["home"])
        store.remember("Acme Web deploys go through the staging cluster first", tags=["work"])

    end = {"session_id": "s-1", "transcript_path": str(transcript(tmp_path / "s-1.jsonl", project)),
           "cwd": str(project), "hook_event_name": "SessionEnd", "reason": "prompt_input_exit"}
    r = hook("session-end", end, data, "--session-record")
    assert r.returncode == 0, r.stderr
    assert "3 memory(ies) stored from session s-1" in r.stdout

    with MemoryStore(Settings(data_dir=data), embedder) as store:
        mine = {m.text: m for m in store.list(limit=50).memories}
    assert "the staging deploy needs the VPN on" in mine
    assert "this repository uses pnpm, never npm" in mine
    assert not [t for t in mine if "assistant said" in t or "tool printed" in t or t == "meta"]
    record = next(t for t in mine if t.startswith("Claude Code session in Acme Web"))
    assert "after 3 prompt(s)" in record and "prompt_input_exit" in record
    assert mine["this repository uses pnpm, never npm"].tags == [project_tag(str(project)), "claude-code"]
    assert mine["this repository uses pnpm, never npm"].metadata["session_id"] == "s-1"

    start = {"session_id": "s-2", "transcript_path": str(tmp_path / "s-2.jsonl"), "cwd": str(project),
             "hook_event_name": "SessionStart", "source": "startup"}
    r = hook("session-start", start, data)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)["hookSpecificOutput"]
    assert out["hookEventName"] == "SessionStart"
    context = out["additionalContext"]
    assert "pnpm" in context and "VPN" in context and "staging cluster" in context
    assert "tomatoes" not in context


@pytest.mark.slow
def test_session_start_for_an_unknown_project_prints_nothing(tmp_path: Path) -> None:
    r = hook("session-start", {"session_id": "s", "cwd": str(tmp_path / "nothing-here"),
                               "hook_event_name": "SessionStart"}, tmp_path / "empty")
    assert r.returncode == 0 and r.stdout == "", r.stderr


@pytest.mark.parametrize("payload", ["", "{not json", json.dumps({"session_id": "s"})])
def test_bad_hook_input_is_one_line_and_does_not_block_claude_code(tmp_path: Path, payload: str) -> None:
    r = hook("session-start", payload, tmp_path / "m")
    assert r.returncode == 1  # non-blocking in Claude Code (2 would block the session)
    assert len(r.stderr.splitlines()) == 1 and "hook input" in r.stderr and r.stdout == ""


def test_session_end_without_a_transcript(tmp_path: Path) -> None:
    r = hook("session-end", {"session_id": "s", "cwd": str(tmp_path)}, tmp_path / "m")
    assert r.returncode == 1 and "no transcript_path" in r.stderr and len(r.stderr.splitlines()) == 1


def test_project_tags_are_valid_tags() -> None:
    assert project_tag("/home/me/Acme Web") == "project:acme-web"
    assert project_tag("/") == "project:root"
    assert project_tag("/x/" + "é" * 80).startswith("project:é")
