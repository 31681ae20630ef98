"""The federation coordinator: honest-but-curious infrastructure that runs rounds of secure
aggregation and releases differentially private patterns.

Layout: ``config`` (every option, one model) -> ``store`` (all SQL, typed rows) -> ``release`` (pure
decisions) and ``credits`` (credit rules) -> ``engine`` (the round state machine, clock injected)
-> ``service`` (the core API, one method per route) -> ``http`` (Starlette routes built from the
protocol's route table) -> ``node`` (the process: uvicorn and the round ticker) -> ``cli``.
"""

from continuum_mcp.federation.coordinator.cli import main
from continuum_mcp.federation.coordinator.config import CoordinatorConfig, build_parser
from continuum_mcp.federation.coordinator.credits import Credits
from continuum_mcp.federation.coordinator.engine import RoundEngine
from continuum_mcp.federation.coordinator.node import FederationCoordinator
from continuum_mcp.federation.coordinator.openapi import openapi_document
from continuum_mcp.federation.coordinator.release import PhraseDecision, discrete_noise, select_phrases, window_counts
from continuum_mcp.federation.coordinator.service import CoordinatorService
from continuum_mcp.federation.coordinator.store import CoordinatorStore

__all__ = [
    "CoordinatorConfig", "CoordinatorService", "CoordinatorStore", "Credits", "FederationCoordinator",
    "PhraseDecision", "RoundEngine", "build_parser", "discrete_noise", "main", "openapi_document", "select_phrases",
    "window_counts",
]
