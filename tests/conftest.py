"""Shared fixtures: one real embedding model per test session, fresh stores on real SQLite/FAISS."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

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
