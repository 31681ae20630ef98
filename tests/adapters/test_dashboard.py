"""The web dashboard end to end: a real store and model, the real HTTP server on 127.0.0.1, real
headless Chromium (Debian's ``chromium`` driven by Playwright), the real privacy ledger and sent-log.

What it must guarantee: every memory operation works from the page; the budget plot draws the
ledger's own figures; what a contribution sent is shown as it left; nobody without the token (or
from another site, or under another Host name) gets or changes anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from continuum_mcp import Continuum, Settings
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.dashboard import TOKEN_HEADER, Dashboard
from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.client._sentlog import record_sent
from continuum_mcp.federation.submission import PlannedPattern
from continuum_mcp.memory.models import MemoryInput
from continuum_mcp.privacy.ledger import PrivacyLedger
from continuum_mcp.privacy.modes import default_policy
from embeddings import SentenceTransformerEmbedder

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "dashboard"
SPEND_DAYS_AGO = (100, 69, 38, 5)  # one spend per 30-day window (release v2); three have left the window
FILLER = [f"Note {i}: the build server {name} needs a restart on Mondays" for i, name in
          enumerate(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda",
                     "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega"])]


def seed_federation_history(data_dir: Path) -> None:
    """Spends through the real ledger API (each at its own past time) and two sent contributions."""
    fdir = data_dir / "federation"
    fdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity = Identity.load_or_create(fdir / "identity.key")
    mode = default_policy().mode("high")
    now = datetime.now(timezone.utc)
    for n, days in enumerate(SPEND_DAYS_AGO):
        at = now - timedelta(days=days)
        with PrivacyLedger(fdir / "ledger.db", identity=identity.instance_id, budget_epsilon=mode.budget_epsilon,
                           delta=mode.delta, window=timedelta(days=mode.window_days), clock=lambda at=at: at) as led:
            led.spend(mode.round_spend(), round_id=f"fed-dash/r{n}")
    pattern = PlannedPattern(slot=12, confidence=0.83, phrases=["dark theme", "code editor"], pattern_id="p-12",
                             statement="Members prefer a dark theme in the code editor", source_memory_ids=[1],
                             embedding=[0.0] * 384)
    record_sent(fdir, 6, [pattern], "high")
    record_sent(fdir, 7, [pattern.model_copy(update={"slot": 40, "phrases": ["standup time"],
                                                     "statement": "The standup is at nine"})], "open")


class Running:
    def __init__(self, app: Continuum, dash: Dashboard) -> None:
        self.app, self.dash = app, dash
        self.http = httpx.Client(base_url=dash.origin, timeout=30)

    def get(self, path: str, token: str | None = None, **kw: object) -> httpx.Response:
        headers = {TOKEN_HEADER: token if token is not None else self.dash.token}
        return self.http.get(path, headers=headers, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder) -> Iterator[Running]:
    """One dashboard for the module (the tests that change memories put them back)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("dashboard") / "memory")
    seed_federation_history(settings.data_dir)
    app = Continuum(settings, embedder)
    app.store.remember_many([MemoryInput(text=t, tags=["ops"]) for t in FILLER], near=False)
    dash = Dashboard(app, "127.0.0.1", 0)
    dash.start()
    r = Running(app, dash)
    yield r
    r.http.close()
    dash.stop()
    app.close()


# ------------------------------------------------------------------------------ access control


def test_no_token_wrong_token_url_token_on_writes_foreign_origin_and_host_are_refused(running: Running) -> None:
    h, token = running.http, running.dash.token
    r = h.get("/api/stats")
    assert (r.status_code, r.json()["code"]) == (401, "unauthenticated")
    r = h.get("/api/stats", params={"token": "x" * len(token)})
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    assert h.get("/", params={"token": token[:-1]}).status_code == 403
    assert h.get("/api/stats", params={"token": token}).status_code == 200  # the page's own address
    before = running.app.stats().count
    # A state change with the token only in the URL (what a cross-site form could send): refused.
    r = h.post("/api/memories", params={"token": token}, json={"text": "forged"})
    assert (r.status_code, r.json()["code"]) == (401, "unauthenticated")
    r = h.request("DELETE", "/api/memories/1", params={"token": token})
    assert r.status_code == 401
    r = h.post("/api/memories", json={"text": "forged"}, headers={TOKEN_HEADER: token, "Origin": "http://evil.test"})
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    # DNS rebinding: a page under another name that resolves to 127.0.0.1.
    r = h.get("/api/stats", headers={TOKEN_HEADER: token, "Host": f"evil.test:{running.dash.port}"})
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    assert running.app.stats().count == before and running.app.list().memories[0].text != "forged"


def test_only_loopback_hosts_are_served(running: Running, tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.168.1.10", "::", "example.com"):
        with pytest.raises(InvalidInput, match="loopback only"):
            Dashboard(running.app, host, 0)
    with pytest.raises(InvalidInput, match="pick another --port"):
        Dashboard(running.app, "127.0.0.1", running.dash.port)  # taken: one line, not a traceback
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, "-m", "continuum_mcp.cli.main", "dashboard", "--host", "0.0.0.0",
                        "--data-dir", str(tmp_path / "never")], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "loopback only" in p.stderr and not (tmp_path / "never").exists()


def test_the_api_answers_with_typed_json_errors_and_a_strict_page(running: Running) -> None:
    r = running.get("/api/nothing-here")
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    r = running.http.patch("/api/memories/99999", json={"text": "x"}, headers={TOKEN_HEADER: running.dash.token})
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    r = running.http.post("/api/memories", json={"text": "ok", "colour": "red"}, headers={TOKEN_HEADER: running.dash.token})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_input") and "colour" in r.json()["message"]
    r = running.get("/api/recall", params={"q": "build server", "mode": "telepathy"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_input")
    r = running.get("/api/memories", params={"limit": "5000"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_input")  # the store's own limit
    r = running.get("/api/credits")
    assert (r.status_code, r.json()["code"]) == (409, "not_joined")
    page = running.get("/", params={"token": running.dash.token})
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and page.headers["referrer-policy"] == "no-referrer"
    assert "<script nonce=" in page.text and "http" not in csp  # nothing is loaded from elsewhere


def test_the_privacy_history_is_the_ledger_s_own_figures(running: Running) -> None:
    h = running.get("/api/privacy").json()
    mode = default_policy().mode("high")
    assert h["joined"] is False and h["mode"] == "high" and h["budget_epsilon"] == mode.budget_epsilon
    assert len(h["spends"]) == len(SPEND_DAYS_AGO)
    assert [s["in_window"] for s in h["spends"]] == [d < mode.window_days for d in SPEND_DAYS_AGO]
    fdir = running.app.federation_dir
    with PrivacyLedger(fdir / "ledger.db", identity=Identity.load_or_create(fdir / "identity.key").instance_id,
                       budget_epsilon=mode.budget_epsilon, delta=mode.delta) as led:
        assert h["window_epsilon"] == pytest.approx(led.status().spent_epsilon, rel=1e-9)
    last = h["points"][-1]
    assert last["window_epsilon"] == pytest.approx(h["window_epsilon"], rel=1e-9)
    assert 0 < h["window_epsilon"] < h["lifetime_epsilon"] == last["lifetime_epsilon"]
    # The window drops when a spend leaves it; the lifetime never does.
    life = [p["lifetime_epsilon"] for p in h["points"]]
    assert life == sorted(life) and any(b["window_epsilon"] < a["window_epsilon"]
                                        for a, b in zip(h["points"], h["points"][1:]))
    sent = running.get("/api/contributions").json()
    assert [c["round_id"] for c in sent] == [7, 6] and sent[1]["patterns"][0]["statement"] is None
    assert sent[0]["patterns"][0]["statement"] == "The standup is at nine"
    assert "embedding" not in sent[0]["patterns"][0] and sent[0]["patterns"][0]["source_memory_ids"] == [1]


# ------------------------------------------------------------------------------ the browser


def _browser_or_skip() -> object:
    in_ci = os.environ.get("CI", "").lower() == "true"
    if not CHROMIUM.exists():
        if in_ci:
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run must `apt-get install -y chromium`")
        pytest.skip(f"{CHROMIUM} is not installed (Debian: apt-get install chromium); CI runs this test")
    try:
        from playwright import sync_api
    except ImportError:
        if in_ci:
            pytest.fail("playwright is missing in CI: it is in the `test` extra")
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    return sync_api


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_create_search_edit_delete_and_the_budget_plot_in_headless_chromium(running: Running, tmp_path: Path) -> None:
    sync_api = _browser_or_skip()
    expect = sync_api.expect  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:  # type: ignore[attr-defined]
        ctx = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=str(CHROMIUM),
                                                    headless=True, args=CHROMIUM_ARGS,
                                                    viewport={"width": 1280, "height": 1000})
        try:
            # A wrong token gets the JSON refusal, not the page.
            bad = ctx.new_page()
            resp = bad.goto(f"{running.dash.origin}/?token=not-the-token")
            assert resp is not None and resp.status == 403 and json.loads(bad.inner_text("body"))["code"] == "forbidden"
            bad.close()

            page = ctx.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda d: d.accept())
            page.goto(running.dash.url)
            expect(page.locator("#stats")).to_contain_text(f"{len(FILLER)} memories")
            expect(page.locator("#list-info")).to_contain_text(f"1–20 of {len(FILLER)}")
            page.click("#page-next")
            expect(page.locator("#list-info")).to_contain_text(f"21–{len(FILLER)} of {len(FILLER)}")
            expect(page.locator("#page-next")).to_be_disabled()
            page.click("#page-prev")

            # create
            page.fill("#new-text", "The quarterly planning offsite is in Lisbon in May")
            page.fill("#new-tags", "work, travel")
            page.click("#new-add")
            first = page.locator("#memory-list li.memory").first
            expect(first).to_contain_text("Lisbon")
            expect(first).to_contain_text("travel")
            expect(page.locator("#stats")).to_contain_text(f"{len(FILLER) + 1} memories")
            created = running.app.list().memories[0]
            assert created.text.endswith("Lisbon in May") and created.tags == ["work", "travel"]
            assert created.source == "dashboard"

            # search (semantic: no shared keyword with the memory)
            page.fill("#search-q", "where do we meet for the yearly strategy trip")
            page.select_option("#search-mode", "semantic")
            page.click("#search-go")
            expect(page.locator("#list-info")).to_contain_text("(semantic)")
            expect(page.locator("#memory-list li.memory").first).to_contain_text("Lisbon")
            expect(page.locator("#memory-list li.memory").first).to_contain_text("similarity")

            # edit
            card = page.locator(f"#memory-list li.memory[data-id='{created.id}']")
            card.locator("button.edit").click()
            card.locator("textarea.edit-text").fill("The quarterly planning offsite moved to Porto in June")
            card.locator("button.save").click()
            expect(page.locator("#memory-list")).to_contain_text("Porto in June")
            assert running.app.recall("offsite", k=1).hits[0].memory.text.endswith("Porto in June")
            page.screenshot(path=str(ARTIFACTS / "dashboard-search.png"), full_page=True)

            # delete
            card = page.locator("#memory-list li.memory", has_text="Porto in June")
            card.locator("button.delete").click()
            expect(page.locator("#memory-list")).not_to_contain_text("Porto in June")
            assert all("Porto" not in m.text for m in running.app.list(limit=100).memories)
            assert running.app.stats().count == len(FILLER)

            # the privacy budget plot, drawn from the ledger's history
            history = running.get("/api/privacy").json()
            plot = page.locator("#budget-svg")
            expect(plot).to_be_visible()
            assert int(plot.get_attribute("data-points") or 0) == len(history["points"]) > len(SPEND_DAYS_AGO)
            assert page.locator("#budget-svg circle.spend").count() == len(SPEND_DAYS_AGO)
            d = page.locator("#budget-window").get_attribute("d") or ""
            assert d.count("V") == len(history["points"])
            expect(page.locator("#budget-summary")).to_contain_text(f"ε {history['window_epsilon']:.2f} of 10")
            expect(page.locator("#budget-summary")).to_contain_text(f"lifetime ε {history['lifetime_epsilon']:.2f}")
            box = plot.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100

            # what each contribution sent, and the federation state
            sent = page.locator("#contribution-list")
            expect(sent).to_contain_text("dark theme")
            expect(sent).to_contain_text("statement not sent (high mode)")
            expect(sent).to_contain_text("The standup is at nine")
            expect(sent).to_contain_text("made from your memories #1")
            expect(page.locator("#federation-status")).to_contain_text("joined")
            expect(page.locator("#pattern-list")).to_contain_text("No released patterns")

            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            page.locator("#privacy-section").screenshot(path=str(ARTIFACTS / "budget-plot.png"))

            # memory text is data, never markup
            hostile = running.app.remember('<img src=x onerror="document.title=1"> <b>bold</b>').memory
            page.click("#search-clear")
            card = page.locator(f"#memory-list li.memory[data-id='{hostile.id}']")
            expect(card).to_contain_text('<img src=x onerror="document.title=1">')
            assert card.locator("img, b").count() == 0 and page.title() == "continuum-mcp dashboard"
            running.app.forget([hostile.id])

            # a fresh store that never joined: every section says why it is empty, without an error
            with Continuum(Settings(data_dir=tmp_path / "empty"), running.app.store.embedder) as empty:
                other = Dashboard(empty, "127.0.0.1", 0)
                other.start()
                try:
                    page.goto(other.url)
                    expect(page.locator("#list-info")).to_have_text("No memories yet.")
                    expect(page.locator("#budget-summary")).to_contain_text("No privacy budget spent yet")
                    expect(page.locator("#budget-svg")).to_be_visible()
                    expect(page.locator("#contribution-list")).to_contain_text("Nothing has been sent yet")
                    expect(page.locator("#credits")).to_contain_text("not a member")
                    page.screenshot(path=str(ARTIFACTS / "dashboard-empty.png"), full_page=True)
                finally:
                    other.stop()
            assert not (tmp_path / "empty" / "federation").exists()
        finally:
            ctx.close()
    assert problems == []  # no script error and no CSP violation
    print(f"\nbrowser test {time.monotonic() - started:.1f} s; screenshots in {ARTIFACTS}")


# ------------------------------------------------------------------------------ the sent-log hook


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_real_contribution_is_logged_exactly_as_its_preview_said(tmp_path: Path,
                                                                   embedder: SentenceTransformerEmbedder) -> None:
    """Join a real coordinator, contribute: the sent-log holds what the dry run promised, and the
    statement is absent because the federation's mode (high) does not send statements."""
    from continuum_mcp.crypto.cipher import Invite, generate_federation_key
    from continuum_mcp.federation.coordinator.http import FederationCoordinator

    coord = FederationCoordinator(port=0, storage_path=tmp_path / "coord", privacy_mode="high", min_contributors=3,
                                  require_contribution=False, federation_id="fed-dash", admin_token="admin-dash",
                                  phase_timeout_seconds=20)
    coord.start()
    try:
        with Continuum(Settings(data_dir=tmp_path / "m"), embedder) as app:
            for text in ("I prefer a dark theme in my code editor", "My code editor always runs a dark theme",
                         "I switched my code editor back to a dark theme", "The wifi password at home is hunter2-Xk9!pQ"):
                app.remember(text, tags=["prefs"])
            app.remember("My sister Alice lives at 12 Baker Street", tags=["private"])
            invite = Invite.build(coord.url, "fed-dash", coord.create_admission_tokens(1)[0], generate_federation_key())
            app.join(invite.format(), contribution_level="minimal", privacy_mode="high")
            assert app.contribution_history() == []
            h = app.privacy_history()  # joined: the federation's mode; nothing spent before a round
            assert h.joined and h.mode == "high" and h.spends == [] and h.window_epsilon == 0.0
            preview = app.contribute(min_confidence=0.6, dry_run=True).preview
            sent = app.contribute(min_confidence=0.6)
            assert sent.status == "sent" and preview
            log = app.contribution_history()
            assert len(log) == 1 and log[0].round_id == sent.round_id and log[0].federation_mode == "high"
            by_slot = lambda ps: sorted(ps, key=lambda p: p.slot)  # noqa: E731
            assert by_slot(log[0].patterns) == by_slot(preview)  # the dry run's preview is what left
            assert all(p.statement is None for p in log[0].patterns)
            raw = (app.federation_dir / "sent.db").read_bytes()
            assert b"Alice" not in raw and b"hunter2" not in raw
            assert (app.federation_dir / "sent.db").stat().st_mode & 0o777 == 0o600
    finally:
        coord.stop()
