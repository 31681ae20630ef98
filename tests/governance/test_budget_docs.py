"""The budget tables of docs/governance.md and docs/privacy.md are the code's own output."""

from __future__ import annotations

from pathlib import Path

from continuum_mcp.federation.learning import budgets_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_both_pages_show_the_ledger_s_computed_budgets() -> None:
    table = budgets_markdown()
    for page in ("governance.md", "privacy.md"):
        text = (ROOT / "docs" / page).read_text(encoding="utf-8")
        assert table in text, f"docs/{page}: regenerate with federation.learning.budgets_markdown()"
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in table.splitlines()[2:]}
    for mode, cells in rows.items():  # sessions come out of the year's releases, never on top of them
        no_session, one_session, every_window = (int(c) for c in cells[4:7])
        assert no_session == 12 and every_window <= one_session <= no_session, mode
