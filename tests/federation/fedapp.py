"""A small federation for the integrity, participation, roles and versioning tests.

The real coordinator app in-process (Starlette's TestClient as the injected httpx client, so no
port and no thread), members as ``CoordinatorAPI`` + ``RoundParticipant`` stepped on one thread
(deterministic), and optionally a real ``FederationClient`` over the same app. A 16-slot slice of
the bundled codebook keeps secure aggregation small (16 x 384 dimensions).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from starlette.testclient import TestClient

from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import FederationCipher, Invite, generate_federation_key
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.client import FederationClient, step
from continuum_mcp.federation.coordinator import FederationCoordinator
from continuum_mcp.federation.participant import Done, RoundExpectations, RoundParticipant
from continuum_mcp.federation.protocol import JoinRequest
from continuum_mcp.federation.submission import PlannedPattern, build_contribution, secagg_input
from continuum_mcp.memory.store import MemoryStore
from continuum_mcp.privacy.codebook import Codebook
from continuum_mcp.privacy.modes import default_policy

BASE = "http://coordinator.test"
ADMIN = "admin-token-fedkit"
FED = "fed-kit"
SLOTS = 16


#: a few members can release in open mode only with a large window budget (tau = 2; release v2's
#: default open mode needs about 8 distinct contributors per phrase)
SMALL_FEDERATION = default_policy().with_mode("open", budget_epsilon=400.0)


class Kit:
    """One in-process federation; ``close()`` it."""

    def __init__(self, tmp: Path, **options: Any) -> None:
        self.tmp = tmp
        self.codebook = Codebook(Codebook.load("v0").vectors[:SLOTS], "v0")
        opts: dict[str, Any] = dict(storage_path=tmp / "coord", privacy_mode="open", min_contributors=3,
                                    federation_id=FED, admin_token=ADMIN, slots=SLOTS, dim=self.codebook.dim,
                                    codebook_version="v0", phase_timeout_seconds=30, require_contribution=False)
        opts.update(options)
        self.coord = FederationCoordinator(**opts)
        self.key = generate_federation_key()
        self.cipher = FederationCipher(self.key, FED)
        self.policy = self.coord.policy
        self.mode = self.policy.mode(self.coord.config.privacy_mode)
        self._closing: list[Any] = []

    def http(self) -> TestClient:
        return TestClient(self.coord.app, base_url=BASE)

    def api(self, identity: Identity | None = None, **kw: Any) -> CoordinatorAPI:
        api = CoordinatorAPI(BASE, identity, http=self.http(), **kw)
        self._closing.append(api)
        return api

    def admin(self) -> CoordinatorAPI:
        return self.api(admin_token=ADMIN)

    def invite(self) -> str:
        token = self.coord.create_admission_tokens(1)[0]
        return Invite.build(BASE, FED, token, self.key).format()

    def member(self) -> CoordinatorAPI:
        api = self.api(Identity.generate())
        token = self.coord.create_admission_tokens(1)[0]
        api.join(JoinRequest(admission_token=token, privacy_mode=self.coord.config.privacy_mode))
        return api

    def pattern(self, embedding: np.ndarray, phrases: list[str], statement: str, slot: int | None = None
                ) -> PlannedPattern:
        e = np.asarray(embedding, dtype=np.float64)
        s = int(self.codebook.nearest(e[None, :].astype(np.float32))[0]) if slot is None else slot
        return PlannedPattern(slot=s, confidence=0.9, phrases=phrases, statement=statement, pattern_id=f"p-{s}",
                              source_memory_ids=[], embedding=e.tolist())

    def contribute(self, api: CoordinatorAPI, patterns: list[PlannedPattern]) -> int:
        rid = api.round_current().round_id
        return api.contribute(build_contribution(patterns, rid, self.cipher, self.coord.config.privacy_mode)
                              ).accepted_patterns

    def expectations(self) -> RoundExpectations:
        return RoundExpectations.for_mode(FED, SLOTS, self.codebook.dim, self.mode,
                                          sybil_fraction=self.coord.config.sybil_fraction)

    def run_round(self, members: dict[CoordinatorAPI, list[PlannedPattern]], *, max_steps: int = 400,
                  during: Callable[[], None] | None = None) -> list[Any]:
        """Close the round and step every member's participant until all are done (``during`` is
        called once the roster is fixed, before anyone posts); the outcomes."""
        self.admin().admin_close_round()
        if during is not None:
            during()
        expect = self.expectations()
        parts = [(api, RoundParticipant(api.identity, expect, (lambda pats: lambda p: secagg_input(
            pats, SLOTS, self.codebook.dim, p.clip_norm))(pats))) for api, pats in members.items()]
        for _ in range(max_steps):
            if all(p.done for _, p in parts):
                break
            for api, p in parts:
                if not p.done:
                    step(api, p)
        outcomes = [p.next_request() for _, p in parts]
        assert all(isinstance(o, Done) for o in outcomes), outcomes
        return [o.outcome for o in outcomes]  # type: ignore[union-attr]

    def client(self, name: str, embedder: Any, memories: list[str] = ()) -> FederationClient:  # type: ignore[assignment]
        settings = Settings(data_dir=self.tmp / name)
        store = MemoryStore(settings, embedder)
        for text in memories:
            store.remember(text)
        c = FederationClient(store, settings, http=self.http(), codebook=self.codebook, max_retries=0,
                             policy=self.policy)
        self._closing.extend([c, store])
        return c

    def close(self) -> None:
        for obj in reversed(self._closing):
            try:
                obj.close()
            except Exception:
                pass
        self.coord.stop()
