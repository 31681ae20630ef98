"""Governance end to end: a real coordinator *process* (``continuum-mcp coordinator``) and twelve
real instances (``Continuum`` over their own memory stores, joined by invite), running a
usage-statistics session from proposal to published histogram through the core API the CLI and
MCP tools call -- and a member who did not opt in records nothing."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from continuum_mcp.app import Continuum
from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import Invite, generate_federation_key
from continuum_mcp.errors import CoordinatorUnavailable
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.learning import SIGNALS, usage_distributions
from continuum_mcp.federation.learning.recorder import USAGE_DB

FED = "fed-gov-e2e"
DISCUSSION = 60  # seconds: twelve instances vote, opt in and use their memories meanwhile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[tuple[str, str]]:
    port, token = _free_port(), secrets.token_urlsafe(16)
    proc = subprocess.Popen(
        [sys.executable, "-m", "continuum_mcp.cli.main", "coordinator", "--port", str(port), "--storage",
         str(tmp_path / "coordinator"), "--privacy-mode", "open", "--federation-id", FED, "--admin-token", token,
         "--phase-timeout", "8", "--governance", json.dumps({"min_discussion_seconds": 5})],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "coordinator did not start"
        try:
            with CoordinatorAPI(url, None, timeout_seconds=1, max_retries=0) as probe:
                probe.health()
            break
        except CoordinatorUnavailable:
            time.sleep(0.1)
    yield url, token
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_usage_statistics_session_end_to_end(tmp_path: Path, coordinator: tuple[str, str], embedder) -> None:
    url, admin_token = coordinator
    key = generate_federation_key()
    with CoordinatorAPI(url, None, admin_token=admin_token, timeout_seconds=30) as admin:
        tokens = admin.admin_invites(12).admission_tokens
    apps = [Continuum(Settings(data_dir=tmp_path / f"m{i}"), embedder) for i in range(12)]
    try:
        for app, token in zip(apps, tokens):
            app.join(Invite.build(url, FED, token, key).format(), privacy_mode="open")
        outsider = apps[11]  # joined, votes, never opts in
        kinds = {k.kind: k for k in apps[0].session_kinds()}
        assert kinds["usage_statistics"].guarantee["epsilon"] < 10
        prop = apps[0].propose("usage_statistics", title="how do we use our memories?",
                               expected_benefit="know which tools matter", discussion_seconds=DISCUSSION)
        pid = prop.proposal_id
        for app in apps:
            app.vote_proposal(pid, "approve")
        shown = [app.opt_in(pid) for app in apps[:11]]
        assert all("usage record" in v.data_description and v.guarantee for v in shown)
        # opted-in instances record their use of memory from now on; the outsider records nothing
        for i, app in enumerate(apps):
            for j in range(1 + i % 3):
                app.remember(f"member {i} note {j}: the deploy runs on fridays")
            app.recall("deploy day", k=2)
            app.record_tool_call("recall")
        assert not (Path(outsider.settings.data_dir) / USAGE_DB).exists()
        assert outsider.usage_record().events == []
        truth = {name: np.zeros(len(bins)) for name, bins in SIGNALS.items()}
        for app in apps[:11]:
            events = app.usage_record().events
            assert events
            for name, dist in usage_distributions(events).items():
                truth[name] += dist
        assert apps[0].session_report(pid).report.summary.phase == "discussion"
        # the opted-in instances sync (take part) on their own; each waits for the decision itself
        turns: dict[int, object] = {}
        threads = [threading.Thread(target=lambda i=i: turns.__setitem__(i, apps[i].take_part(pid, timeout_seconds=150)))
                   for i in range(11)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(200)
        report = outsider.session_report(pid)  # results are free for every member, opted in or not
        assert report.report.summary.phase == "completed" and report.agrees
        assert [r.outcome for r in report.report.rounds] == ["released"], turns
        result = report.report.result["result"]
        for hist in result["histograms"]:
            noisy = np.array(hist["noisy"])
            assert np.all(np.abs(noisy - truth[hist["signal"]]) <= hist["bound_99"] * 1.5), hist["signal"]
        assert abs(result["noisy_participants"] - 11) <= 5 * result["participants_std"]
        # the session is over: nothing is recorded any more
        before = len(apps[0].usage_record().events)
        apps[0].remember("after the session")
        assert len(apps[0].usage_record().events) == before
        assert apps[0].delete_usage_record().deleted == before
    finally:
        for app in apps:
            app.close()
