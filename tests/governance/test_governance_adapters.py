"""The governance CLI commands on an instance that has not joined: exit codes from the taxonomy,
strict arguments, and no vote implied."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from continuum_mcp.errors import InvalidInput, NotJoined
from continuum_mcp.federation.learning import SessionParams, session_guarantee


def cli(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "continuum_mcp.cli.main", *args, "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=120)


def test_kinds_prints_the_computed_guarantee_and_member_commands_need_a_membership(tmp_path: Path) -> None:
    r = cli("federation", "kinds", "--json", data=tmp_path)
    assert r.returncode == 0, r.stderr
    kinds = {k["kind"]: k for k in json.loads(r.stdout)}
    assert set(kinds) == {"codebook_refinement", "usage_statistics"}
    for name, k in kinds.items():
        assert k["guarantee"]["epsilon"] == session_guarantee(SessionParams.build(kind=name)).epsilon
        assert k["data_touched"]
    for argv in (["proposals"], ["report", "prop-0123456789abcdef0123"], ["take-part", "prop-0123456789abcdef0123"],
                 ["vote-proposal", "prop-0123456789abcdef0123", "approve"]):
        r = cli("federation", *argv, data=tmp_path)
        assert r.returncode == NotJoined.exit_code, (argv, r.stderr)
    r = cli("federation", "propose", "codebook_refinement", "--title", "t", "--benefit", "b", "--params", "[1]",
            data=tmp_path)
    assert r.returncode == InvalidInput.exit_code and "--params" in r.stderr
    r = cli("federation", "vote-proposal", "prop-x", "maybe", data=tmp_path)
    assert r.returncode == 2  # argparse refuses a choice outside approve/reject/abstain
    for seconds in ("0", "-5", "nan", "1e9"):  # refused before anything else: never a silent no-op or a hang
        r = cli("federation", "take-part", "prop-0123456789abcdef0123", "--seconds", seconds, data=tmp_path)
        assert r.returncode == InvalidInput.exit_code and "take-part time" in r.stderr, (seconds, r.stderr)
    r = cli("federation", "adopt", "prop-0123456789abcdef0123", data=tmp_path)
    assert r.returncode == 2 and "choice" in r.stderr  # an adoption vote is never implied: approve or reject
