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


@pytest.mark.slow
def test_remember_options_for_duplicates_and_time(tmp_path: Path) -> None:
    data = tmp_path / "m"
    r = cli("remember", "Moved the team offsite to Lisbon", "--at", "2026-03-04T10:00", "--json", data=data)
    first = json.loads(r.stdout)["memory"]
    assert first["created_at"].startswith("2026-03-04T10:00")
    r = cli("remember", "Moved the team offsite to Lisbon", data=data)
    assert r.returncode == 0 and r.stdout.startswith(f"duplicate #{first['id']}"), r.stdout
    r = cli("remember", "Moved the team offsite to Lisbon", "--on-duplicate", "store", "--json", data=data)
    assert json.loads(r.stdout)["memory"]["id"] != first["id"]
    r = cli("remember", "Moved the team offsite to Lisbon", "--force", "--json", data=data)
    assert json.loads(r.stdout)["status"] != "duplicate"
    assert json.loads(cli("stats", "--json", data=data).stdout)["count"] == 3
    r = cli("remember", "x", "--at", "last tuesday", data=data)
    assert r.returncode == 2 and "not an ISO date/time" in r.stderr


@pytest.mark.slow
def test_patterns_previews_without_a_flag(tmp_path: Path) -> None:
    data = tmp_path / "m"
    assert cli("remember", "Therapy on Thursdays with Dr. Alvarez", "--tag", "private", data=data).returncode == 0
    for args in (("patterns",), ("patterns", "--preview")):
        r = cli(*args, data=data)
        assert r.returncode == 0, r.stderr
        assert "held back as private: 1" in r.stdout and "Alvarez" not in r.stdout


@pytest.mark.slow
def test_founder_creates_a_federation_and_mints_full_invites(tmp_path: Path) -> None:
    import base64

    from continuum_mcp.crypto.cipher import Invite
    from continuum_mcp.federation.coordinator.http import FederationCoordinator

    admin = "admin-secret-for-the-test"
    coord = FederationCoordinator(port=0, storage_path=tmp_path / "coord", federation_id="team-fed",
                                  admin_token=admin, min_contributors=3)
    coord.start()
    try:
        founder = tmp_path / "founder"
        r = cli("federation", "create", "--coordinator", coord.url, "--federation-id", "other", data=founder)
        assert r.returncode == 2 and "serves federation 'team-fed'" in r.stderr
        r = cli("federation", "create", "--coordinator", coord.url, data=founder)
        assert r.returncode == 0, r.stderr
        key_file = founder / "founder" / "team-fed.json"
        assert "never goes to the coordinator" in r.stdout and str(key_file) in r.stdout
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = base64.b64decode(json.loads(key_file.read_text())["federation_key_b64"])
        r = cli("federation", "create", "--coordinator", coord.url, data=founder)
        assert r.returncode == 8 and "already founded" in r.stderr  # the key is never replaced

        r = cli("federation", "invite", "--count", "2", data=founder)
        assert r.returncode == 2 and "CONTINUUM_ADMIN_TOKEN" in r.stderr
        env = dict(os.environ, CONTINUUM_ADMIN_TOKEN=admin)
        r = subprocess.run([sys.executable, "-m", "continuum_mcp.cli.main", "federation", "invite", "--count", "2",
                            "--data-dir", str(founder)], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        invites = [Invite.parse(line) for line in r.stdout.splitlines()]
        assert len(invites) == 2 and len({i.admission_token for i in invites}) == 2
        assert all(i.federation_key == key and i.federation_id == "team-fed" and i.coordinator_url == coord.url
                   for i in invites)
        token = coord.create_admission_tokens(1)[0]
        r = cli("federation", "invite", "--token", token, data=founder)
        assert Invite.parse(r.stdout.strip()).admission_token == token

        r = cli("federation", "join", invites[0].format(), data=tmp_path / "member")
        assert r.returncode == 0 and "joined team-fed" in r.stdout, r.stderr
        r = cli("federation", "join", invites[0].format(), data=tmp_path / "member-2")
        assert r.returncode == 10, r.stderr  # single use
    finally:
        coord.stop()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "coord").rglob("*") if p.is_file())
    for form in (key, base64.b64encode(key), base64.urlsafe_b64encode(key).rstrip(b"=")):
        assert form not in stored
