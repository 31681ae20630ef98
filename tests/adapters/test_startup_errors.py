"""Every start-up failure is one line on stderr saying what and how to fix, with its exit code."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from continuum_mcp.errors import InvalidInput, ModelMismatch, StoreCorrupt


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "continuum_mcp.cli.main", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120, env={**os.environ, **(env or {})})


def one_line(r: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    lines = r.stderr.splitlines()
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1, r.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def corrupt_store(tmp: Path) -> Path:
    data = tmp / "corrupt"
    data.mkdir()
    (data / "memory.db").write_bytes(b"this is not an SQLite file, it was overwritten by something" * 20)
    return data


def newer_store(tmp: Path) -> Path:
    """A store whose schema version is past this release's (as a newer release would leave it)."""
    data = tmp / "newer"
    assert run("list", "--data-dir", str(data)).returncode == 0
    with sqlite3.connect(data / "memory.db") as c:
        c.execute("PRAGMA user_version = 99")
    return data


def test_a_missing_model_dir(tmp_path: Path) -> None:
    line = one_line(run("stats", "--model-path", "/nonexistent", "--data-dir", str(tmp_path / "m")),
                    ModelMismatch.exit_code, "model directory not found: /nonexistent", "--model-path")
    assert line.startswith("error: model_mismatch:")


@pytest.mark.parametrize("command", [["stats"], ["serve"]])
def test_an_unusable_data_dir(tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # (as root a read-only directory can still be written; a path through a file cannot be created by anyone)
    one_line(run(*command, "--data-dir", str(blocker / "memory")), InvalidInput.exit_code,
             "cannot create the data directory", "pass --data-dir")


@pytest.mark.parametrize("command", [["stats"], ["serve"], ["recall", "anything"]])
def test_a_corrupt_store(tmp_path: Path, command: list[str]) -> None:
    data = corrupt_store(tmp_path)
    before = (data / "memory.db").read_bytes()
    one_line(run(*command, "--data-dir", str(data)), StoreCorrupt.exit_code, "not a readable continuum-mcp database",
             "restore it from a backup")
    assert (data / "memory.db").read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize("command", [["stats"], ["serve"]])
def test_a_store_from_a_newer_release(tmp_path: Path, command: list[str]) -> None:
    data = newer_store(tmp_path)
    one_line(run(*command, "--data-dir", str(data)), StoreCorrupt.exit_code, "schema version 99",
             "upgrade continuum-mcp")


@pytest.mark.slow
def test_bad_settings(tmp_path: Path) -> None:
    one_line(run("stats", "--dedup-threshold", "2", "--data-dir", str(tmp_path / "m")), InvalidInput.exit_code,
             "dedup_threshold")
    one_line(run("stats", "--data-dir", str(tmp_path / "m"), env={"CONTINUUM_DEDUP_THRESHOLD": "lots"}),
             InvalidInput.exit_code, "dedup_threshold")


@pytest.mark.slow
def test_no_auth_off_loopback_is_refused(tmp_path: Path) -> None:
    one_line(run("serve", "--transport", "streamable-http", "--host", "0.0.0.0", "--no-auth", "--data-dir",
                 str(tmp_path / "m")), InvalidInput.exit_code, "--no-auth", "loopback")
    assert not (tmp_path / "m" / "memory.db").exists()
