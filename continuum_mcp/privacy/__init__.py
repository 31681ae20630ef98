"""Privacy: what leaves the machine, and what it costs.

- :mod:`.scrub`: the offline PII scrubber (typed placeholders such as ``<PERSON>``).
- :mod:`.generalize`: memories -> scrubbed, clustered patterns; :mod:`.preview`: what a
  contribution would send, for the user to inspect.
- :mod:`.codebook`: the fixed slot codebook contributions are expressed in.
- :mod:`.dp` (mechanisms), :mod:`.accounting` (calibration, composition), :mod:`.noise` (CSPRNG
  samplers), :mod:`.ledger` (the persistent per-identity budget), :mod:`.modes` (privacy modes and
  the tables the docs print).

The names below are imported on first use (PEP 562), so ``import continuum_mcp.privacy`` stays
cheap for the MCP server's start-up and ``python -m continuum_mcp.privacy.modes`` runs cleanly.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME: dict[str, str] = {
    "Scrubber": "scrub", "ScrubberConfig": "scrub", "ScrubResult": "scrub", "ScrubSpan": "scrub",
    "PLACEHOLDER_RE": "scrub", "PLACEHOLDERS": "scrub", "STOP_WORDS": "scrub",
    "Generalizer": "generalize", "Pattern": "generalize", "is_private": "generalize",
    "PatternPreview": "preview", "preview_patterns": "preview",
    "Codebook": "codebook", "CODEBOOKS": "codebook",
    "PrivacyLedger": "ledger", "PrivacySpend": "ledger", "LedgerStatus": "ledger", "LedgerEntry": "ledger",
    "PrivacyMode": "modes", "PrivacyPolicy": "modes", "ReleaseRequirement": "modes",
    "default_policy": "modes", "privacy_table_markdown": "modes",
    "clip_l2": "dp", "add_gaussian_noise": "dp", "PartitionSelection": "dp", "select_partitions": "dp",
    "gaussian_sigma": "accounting", "gdp_epsilon": "accounting", "gdp_mu": "accounting",
    "compose_gdp": "accounting", "discrete_gaussian": "noise",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
