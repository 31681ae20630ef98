"""Shared fixtures: one real embedding model per test session, fresh stores on real SQLite/FAISS, and
the coordinator's two backends (SQLite files, a throw-away PostgreSQL server: ``tests/pgserver.py``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from continuum_mcp.config import Settings
from continuum_mcp.memory.store import MemoryStore
from embeddings import SentenceTransformerEmbedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EVAL_DIR = PROJECT_ROOT.parent / "shared" / "eval"


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real bundled all-MiniLM-L6-v2, loaded once (about 5 s)."""
    e = SentenceTransformerEmbedder()
    e.wait()
    return e


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "memory")


@pytest.fixture
def store(settings: Settings, embedder: SentenceTransformerEmbedder) -> Iterator[MemoryStore]:
    s = MemoryStore(settings, embedder)
    yield s
    s.close()


@pytest.fixture
def python() -> str:
    return sys.executable


# ----------------------------------------------------------------------------- coordinator backends

#: the coordinator store's implementations; a module opts in with ``pytestmark = pytest.mark.usefixtures("backend")``
COORDINATOR_BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: a property of SQLite files (no PostgreSQL variant is run)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``sqlite_only`` run on the SQLite backend only (e.g. a zero-length database file)."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        pg_variant = params.get("backend") == "postgresql"
        (drop if pg_variant and item.get_closest_marker("sqlite_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One PostgreSQL cluster for the session (started on first use). Missing binaries FAIL the test."""
    from pgserver import PgServer, PgUnavailable

    try:
        server = PgServer().start()
    except PgUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(params=COORDINATOR_BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The coordinator database of this test: None (SQLite in the storage directory) or the URL of a
    fresh PostgreSQL database, also set as ``CONTINUUM_COORDINATOR_DATABASE`` so that every
    coordinator the test builds (in process, or a CLI subprocess) runs on it."""
    from continuum_mcp.federation.coordinator.config import DATABASE_ENV

    if request.param == "sqlite":
        monkeypatch.delenv(DATABASE_ENV, raising=False)
        return None
    url: str = request.getfixturevalue("pg_server").database()
    monkeypatch.setenv(DATABASE_ENV, url)
    return url
