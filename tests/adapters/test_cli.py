"""The CLI as a user runs it: real processes, exit codes, human and JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str, data: Path, stdin: str | None = None, env_dir: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    argv = [sys.executable, "-m", "continuum_mcp.cli.main", *args]
    if env_dir:
        env["CONTINUUM_DATA_DIR"] = str(data)
    else:
        argv += ["--data-dir", str(data)]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_cli_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "m"
    r = cli("remember", "The printer on floor 2 needs A4 paper", "--tag", "office", "--json", data=data)
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert created["status"] == "created" and created["memory"]["tags"] == ["office"]
    assert created["memory"]["source"] == "cli"

    r = cli("remember", "-", "--metadata", '{"room": "2.14"}', data=data, stdin="Desk 14 has the standing frame\n",
            env_dir=True)  # CONTINUUM_DATA_DIR is honoured, and '-' reads stdin
    assert r.returncode == 0 and r.stdout.startswith("created #2"), r.stderr

    r = cli("recall", "where do I get paper for printing", "--json", data=data)
    hits = json.loads(r.stdout)["hits"]
    assert hits[0]["memory"]["id"] == created["memory"]["id"]

    r = cli("list", data=data)
    assert r.returncode == 0 and "Desk 14" in r.stdout and "(2 of 2, offset 0)" in r.stdout
    r = cli("stats", "--json", data=data)
    assert json.loads(r.stdout)["count"] == 2

    export = tmp_path / "export.jsonl"
    assert cli("export", str(export), data=data).returncode == 0
    assert len(export.read_text().splitlines()) == 3
    r = cli("import", str(export), "--json", data=tmp_path / "copy")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"read": 2, "created": 2, "duplicates": 0, "reembedded": False}

    r = cli("forget", "1", data=data)
    assert r.returncode == 0 and "deleted #1" in r.stdout
    r = cli("list", "--json", data=data)
    assert [m["id"] for m in json.loads(r.stdout)["memories"]] == [2]


@pytest.mark.slow
def test_cli_errors_have_exit_codes_and_change_nothing(tmp_path: Path) -> None:
    data = tmp_path / "m"
    assert cli("remember", "Keep the receipts for the new monitor", data=data).returncode == 0
    cases = [
        (("remember", ""), 2, "empty"),
        (("remember", "x", "--metadata", "{oops"), 2, "not valid JSON"),
        (("remember", "x", "--tag", "two words"), 2, "invalid tag"),
        (("forget", "77"), 3, "no memory with id 77"),
        (("update", "77", "--text", "y"), 3, "no memory with id 77"),
        (("recall", "x", "--since", "2030-01-01", "--until", "2020-01-01"), 2, "time range is empty"),
        (("import", str(tmp_path / "missing.jsonl")), 2, "cannot read"),
        (("list", "--limit", "0"), 2, "limit must be"),
    ]
    for args, code, fragment in cases:
        r = cli(*args, data=data)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert fragment in r.stderr, (args, r.stderr)
    r = cli("list", "--json", data=data)
    assert [m["text"] for m in json.loads(r.stdout)["memories"]] == ["Keep the receipts for the new monitor"]
    r = cli("recall", "x", "--mode", "fuzzy", data=data)
    assert r.returncode == 2 and "invalid choice" in r.stderr
