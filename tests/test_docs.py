"""The docs say what the code does: tables in README.md and docs/ are compared with their source."""

from __future__ import annotations

import re

from conftest import PROJECT_ROOT

from continuum_mcp.errors import EXIT_CODE_MEANINGS
from continuum_mcp.privacy.modes import privacy_table_markdown

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
PRIVACY = (PROJECT_ROOT / "docs" / "privacy.md").read_text(encoding="utf-8")
REGENERATE = "regenerate it with `python -m continuum_mcp.privacy.modes`"


def markdown_table(text: str, header: str) -> list[list[str]]:
    """The rows (cells stripped) of the table whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_readme_exit_code_table_is_the_cli_s() -> None:
    rows = markdown_table(README, "| exit code | meaning |")
    assert {int(code): meaning for code, meaning in rows} == EXIT_CODE_MEANINGS
    assert [int(code) for code, _ in rows] == sorted(EXIT_CODE_MEANINGS)


def test_privacy_tables_are_the_code_s_output() -> None:
    table = privacy_table_markdown()
    for name, text in (("README.md", README), ("docs/privacy.md", PRIVACY)):
        assert table.strip() in text, f"{name}: the privacy tables differ from the code's; {REGENERATE}"


def test_what_leaves_per_mode_matches_the_privacy_modes() -> None:
    """Statements leave (encrypted) in balanced and open mode; only open releases them."""
    assert "(open mode only)" not in README
    assert re.search(r"\(in `balanced`\s+and `open` mode\) the encrypted scrubbed statement", README)


def test_docs_name_modules_that_exist() -> None:
    """Every `continuum_mcp/....py` path README.md and docs/architecture.md name is a file.

    The generated privacy block is the code's own text (checked above), so it is left out here."""
    architecture = (PROJECT_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    readme = README.replace(privacy_table_markdown().strip(), "")
    named = {m for text in (readme, architecture) for m in re.findall(r"`(continuum_mcp/[\w/]+\.py)`", text)}
    missing = sorted(m for m in named if not (PROJECT_ROOT / m).is_file())
    assert missing == [], f"docs name modules that do not exist: {missing}"


def test_readme_governance_guarantees_are_the_accountant_s() -> None:
    """README's session-kind table is the learning package's own (docs/governance.md's is checked
    by the learning tests)."""
    from continuum_mcp.federation.learning import guarantees_markdown

    assert guarantees_markdown() in README, "README.md: regenerate with learning.guarantees_markdown()"
