"""Command-line adapter."""
from continuum_mcp.cli.main import main

__all__ = ["main"]
