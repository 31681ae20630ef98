"""Continuum, the core API the adapters share: what it builds lazily and what it answers alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from continuum_mcp import Continuum, NotJoined, Settings
from continuum_mcp.memory.store import Filters
from embeddings import SentenceTransformerEmbedder


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_a_store_that_never_joined_gets_answers_without_federation_state(
        settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    with Continuum(settings, embedder) as app:
        app.remember("The team offsite is in Lisbon in May", tags=["work"])
        r = app.recall("where is the offsite", include_federated=True)
        assert r.hits[0].memory.text.startswith("The team offsite") and r.federated == []
        assert app.recall("offsite", filters=Filters(tags_any=["work"])).federated is None
        st = app.federation_status()
        assert st.joined is False and st.instance_id == ""
        assert app.set_auto_sync(False).enabled is False
        assert app.resume_auto_sync() is False
        for call in (app.credits, app.sync, app.leave, app.download, app.delete_contributions,
                     lambda: app.query("x"), lambda: app.verify("p-1"), lambda: app.contribute(dry_run=True),
                     lambda: app.set_auto_sync(True)):
            with pytest.raises(NotJoined):
                call()
        assert not app.joined
    # No identity key, membership or federation database was created by any of the above.
    assert files_under(settings.data_dir / "federation") == []


def test_the_not_joined_check_reads_the_client_s_own_layout() -> None:
    from continuum_mcp import app
    from continuum_mcp.federation.client import _facade

    assert app.FEDERATION_DIR == _facade.FEDERATION_DIR


def test_open_fails_at_once_on_a_bad_store_and_close_is_idempotent(tmp_path: Path,
                                                                   embedder: SentenceTransformerEmbedder) -> None:
    app = Continuum.open(Settings(data_dir=tmp_path / "m"), embedder)
    assert app.stats().count == 0
    app.close()
    app.close()


def test_importing_the_package_and_the_server_stays_light() -> None:
    """The MCP handshake pays for every import: the federation and privacy stacks load on use."""
    heavy = ["httpx", "continuum_mcp.federation.client._facade", "continuum_mcp.privacy.scrub",
             "continuum_mcp.secagg", "continuum_mcp.crypto.cipher"]
    for module, absent in (("continuum_mcp", [*heavy, "continuum_mcp.app", "continuum_mcp.memory.store"]),
                           ("continuum_mcp.server", heavy)):
        code = f"import sys, {module}; print([m for m in {absent!r} if m in sys.modules])"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]", (module, out)
