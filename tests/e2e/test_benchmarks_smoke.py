"""Smoke tests: each benchmark script runs in its smallest mode and prints its README table.

Why: benchmark scripts are the only source of performance claims, and nothing else imports them,
so without this they would rot silently when the store's API changes. The figures themselves are
not checked here (timed unit tests are unreliable); only that the scripts run end to end against
the real store, model and MCP server and produce the table the README quotes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCOMO = ROOT.parent / "shared" / "eval" / "locomo10.json"


def run_script(name: str, *args: str, timeout: float) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bench_memory_quick_prints_table() -> None:
    out = run_script("bench_memory.py", "--quick", timeout=170)
    assert out.startswith("Machine: ")
    assert "| measure | value |" in out
    assert "start-up to `tools/list` answer" in out
    for mode in ("semantic", "keyword", "hybrid"):
        assert f"| recall `{mode}` at 500 (flat) p50 / p95 |" in out
    assert "memories/s |" in out and "peak RSS" in out
    assert "| at 500: encode + search alone p50; semantic / that; hybrid / semantic |" in out  # the ratios


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(not LOCOMO.is_file(), reason="LoCoMo data (../shared/eval/locomo10.json) not present")
def test_bench_locomo_quick_prints_table() -> None:
    out = run_script("bench_locomo.py", "--quick", timeout=170)
    assert "| mode | category | n | Recall@5 | Recall@10 | hit@10 | nDCG@10 | MRR |" in out
    for mode in ("semantic", "keyword", "hybrid"):
        assert f"| {mode} | **overall (1-4)** |" in out
        for cat in ("1 multi-hop", "2 temporal", "3 open-domain", "4 single-hop"):
            assert f"| {mode} | {cat} |" in out
    assert "0.209 / 0.290" in out  # the published reference sits beside the semantic rows
