"""The built wheel, installed outside the source tree (not editable), serves MCP over stdio.

Why: an editable install or a test run from the tree hides a missing package, data file or entry
point; a user gets the wheel. The wheel is installed with ``--target`` into a fresh directory
(its dependencies come from this interpreter's site-packages, after it on the path), and the
console script it ships is run from a directory outside the tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import anyio
import pytest
from conftest import PROJECT_ROOT
from mcp import Client, StdioServerParameters


def build_isolation() -> list[str]:
    """Build with this interpreter's setuptools when it is new enough (fast, offline); else let pip
    fetch the build requirements (pyproject.toml's [build-system]) as a user's pip would."""
    try:
        import setuptools

        if int(setuptools.__version__.split(".")[0]) >= 77:
            return ["--no-build-isolation"]
    except ImportError:
        pass
    return []


def outside_env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)  # only the wheel's files ahead of site-packages
    return env


@pytest.mark.slow
def test_the_wheel_installed_outside_the_tree_serves_mcp(tmp_path: Path) -> None:
    dist, target, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Built from a copy: an in-tree build/ left behind would leak stale modules into later wheels.
    source = tmp_path / "source"
    shutil.copytree(PROJECT_ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "out"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    r = subprocess.run([*pip, "wheel", "--no-deps", *build_isolation(), str(source), "-w", str(dist)],
                       capture_output=True, text=True, timeout=600, cwd=elsewhere)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = dist.glob("continuum_memory_mcp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"continuum_mcp/py.typed", "continuum_mcp/data/codebook_v0.npy", "embeddings/integrity.py"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith("tests/") for n in names)
    r = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], capture_output=True,
                       text=True, timeout=600, cwd=elsewhere)
    assert r.returncode == 0, r.stderr[-2000:]

    env = outside_env(target)
    r = subprocess.run([sys.executable, "-c", "import continuum_mcp, embeddings; print(continuum_mcp.__file__); "
                                              "print(embeddings.__file__)"],
                       capture_output=True, text=True, env=env, cwd=elsewhere, timeout=120)
    assert r.returncode == 0, r.stderr
    assert all(line.startswith(str(target)) for line in r.stdout.splitlines()), r.stdout
    script = target / "bin" / "continuum-mcp"
    assert script.is_file()

    params = StdioServerParameters(command=str(script), args=["serve", "--data-dir", str(tmp_path / "memory")],
                                   env=env, cwd=str(elsewhere))

    async def go() -> None:
        async with Client(params, read_timeout_seconds=300) as c:
            tools = {t.name for t in (await c.list_tools()).tools}
            assert {"remember", "recall", "memory_stats"} <= tools
            r = await c.call_tool("remember", {"text": "The wheel test parks in bay 7"})
            assert not r.is_error and r.structured_content["status"] == "created"  # the bundled model loaded
            r = await c.call_tool("recall", {"query": "where does the wheel test park"})
            assert r.structured_content["hits"][0]["memory"]["text"] == "The wheel test parks in bay 7"

    anyio.run(go)
