"""scipy submodules on first use (shared by the DP modules)."""

from __future__ import annotations

from typing import Any


def scipy_module(name: str) -> Any:
    """scipy submodules on first use: importing them costs about a second, which the MCP
    server's start-up (handshake before the model loads) should not pay."""
    import importlib

    return importlib.import_module(f"scipy.{name}")
