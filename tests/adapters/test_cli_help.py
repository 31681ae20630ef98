"""Every CLI command explains itself: each argument has a help text; exit codes are listed."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuum_mcp.cli.main import build_parser, main
from continuum_mcp.errors import EXIT_CODE_MEANINGS


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                                                           argparse.ArgumentParser]]:
    """(argv prefix, parser) for the top level and every subcommand, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


ALL = list(commands(build_parser()))


def test_the_walk_sees_every_command() -> None:
    names = {" ".join(p) for p, _ in ALL}
    assert {"remember", "recall", "serve", "coordinator", "patterns", "federation join", "federation leave",
            "federation auto-sync", "federation download"} <= names


@pytest.mark.parametrize(("path", "parser"), ALL, ids=[" ".join(p) or "continuum-mcp" for p, _ in ALL])
def test_every_argument_has_a_help_text(path: tuple[str, ...], parser: argparse.ArgumentParser,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    missing = [a.dest for a in parser._actions if not a.help or not a.help.strip()]
    assert missing == [], f"`{' '.join(path)}`: arguments without help: {missing}"
    if path == ("coordinator",):
        return  # its own options come from the coordinator's parser (main() hands argv over)
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: continuum-mcp")
    for action in parser._actions:  # what it parses is what --help shows
        assert shown(action) in out, (path, action.dest)


def shown(action: argparse.Action) -> str:
    """How --help names an argument: its last option string, metavar, choices or dest."""
    if action.option_strings:
        return action.option_strings[-1]
    if action.metavar:
        return str(action.metavar)
    return "{" + ",".join(action.choices) + "}" if action.choices else action.dest


def test_top_level_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert f"{code:>3}  {meaning}" in out


@pytest.mark.slow
def test_recall_include_federated_on_a_store_that_never_joined(tmp_path: Path) -> None:
    data = tmp_path / "m"
    run = [sys.executable, "-m", "continuum_mcp.cli.main"]
    assert subprocess.run([*run, "remember", "The spare key is with the neighbour", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=300).returncode == 0
    r = subprocess.run([*run, "recall", "spare key", "--include-federated", "--data-dir", str(data)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "spare key" in r.stdout and "no federated patterns match" in r.stdout
    r = subprocess.run([*run, "recall", "spare key", "--include-federated", "--json", "--data-dir", str(data)],
                       capture_output=True, text=True, timeout=300)
    assert json.loads(r.stdout)["federated"] == []
    r = subprocess.run([*run, "federation", "status", "--data-dir", str(data)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "not a member of any federation"
    assert not (data / "federation").exists()


def test_coordinator_help_explains_every_option_and_the_invite_command(capsys: pytest.CaptureFixture[str]) -> None:
    from continuum_mcp.federation.coordinator.config import build_parser as coordinator_parser

    missing = [a.dest for a in coordinator_parser()._actions if not a.help or not a.help.strip()]
    assert missing == [], f"`coordinator`: options without help: {missing}"
    with pytest.raises(SystemExit) as exit_:
        main(["coordinator", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "coordinator invite" in out and "--storage" in out and "--admin-token" in out
    with pytest.raises(SystemExit):
        main(["coordinator", "invite", "--help"])
    out = capsys.readouterr().out
    assert "--count" in out and "--storage" in out


def test_every_subcommand_help_points_at_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for path, parser in ALL:
        if path and path != ("coordinator",) and not any(isinstance(a, argparse._SubParsersAction)
                                                          for a in parser._actions):
            assert parser.epilog and "exit codes" in parser.epilog, " ".join(path)


def test_serve_takes_no_json_option() -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", "--json"])
    assert exit_.value.code == 2


def test_shown_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: stdio)" in out and "(default: 127.0.0.1)" in out and "(default: 8765)" in out
    with pytest.raises(SystemExit):
        main(["remember", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--on-duplicate {merge,store}" in out and "(default: merge)" in out and "--at AT" in out
