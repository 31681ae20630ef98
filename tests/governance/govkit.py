"""A federation with governance for the tests: a real coordinator on 127.0.0.1 (its round and
governance ticker running), members as identities with their own privacy ledgers and a
:class:`Governance` each, the way the production client builds one.

A 16-slot slice of the bundled codebook keeps codebook sessions small (16 x 385 + 1 coordinates).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from continuum_mcp.crypto.identity import Identity
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.client._governance import Governance, SessionTurn
from continuum_mcp.federation.coordinator import FederationCoordinator
from continuum_mcp.federation.governance import GovernanceRules
from continuum_mcp.federation.learning import CodebookInputs, SessionContext
from continuum_mcp.federation.protocol import JoinRequest
from continuum_mcp.privacy.codebook import Codebook
from continuum_mcp.privacy.ledger import PrivacyLedger
from continuum_mcp.privacy.modes import default_policy

FED = "fed-gov"
SLOTS = 16
DISCUSSION = 6  # seconds: the tests' discussion period (12 members sign and post meanwhile)


def small_codebook() -> Codebook:
    return Codebook(Codebook.load("v0").vectors[:SLOTS], "v0")


@dataclass
class GovMember:
    identity: Identity
    api: CoordinatorAPI
    gov: Governance
    ledger_path: Path
    embeddings: list[list[float]]

    @property
    def id(self) -> str:
        return self.identity.instance_id

    def spent(self) -> float:
        with PrivacyLedger(self.ledger_path, identity=self.id, budget_epsilon=1000.0) as ledger:
            return ledger.spent()


class RoundRobin:
    """Each request of one member to the next coordinator node, as a load balancer may send them."""

    def __init__(self, apis: Sequence[CoordinatorAPI]) -> None:
        self.apis, self.sent = list(apis), [0] * len(apis)
        self._k = 0

    def call(self, name: str, body: Any = None, **path: Any) -> Any:
        self._k = (self._k + 1) % len(self.apis)
        self.sent[self._k] += 1
        return self.apis[self._k].call(name, body, **path)


class GovKit:
    """``nodes`` > 1: that many coordinator processes on one store, every member's governance
    requests alternating between them (``GovMember.api`` stays on the first)."""

    def __init__(self, tmp: Path, *, phase_timeout: float = 4.0, client_rules: GovernanceRules | None = None,
                 centres: int = 4, budget_epsilon: float | None = None, nodes: int = 1, **rules: Any) -> None:
        self.tmp, self.client_rules, self.centres = tmp, client_rules, centres
        self.codebook = small_codebook()
        self.nodes = [FederationCoordinator(
            storage_path=tmp / "coord", privacy_mode="open", federation_id=FED, min_contributors=3, slots=SLOTS,
            dim=self.codebook.dim, codebook=np.asarray(self.codebook.vectors), codebook_version="v0",
            phase_timeout_seconds=phase_timeout, tick_seconds=0.1, require_contribution=False,
            governance=GovernanceRules(min_discussion_seconds=1, **rules),
            policy=default_policy().with_mode("open", budget_epsilon=budget_epsilon) if budget_epsilon else None)
            for _ in range(nodes)]
        self.coord = self.nodes[0]
        for node in self.nodes:
            node.start()
        self.members: list[GovMember] = []
        self.balancers: list[RoundRobin] = []

    def admit(self, n: int, rng: np.random.Generator | None = None) -> list[GovMember]:
        rng = rng or np.random.default_rng(7)
        out = []
        for token in self.coord.create_admission_tokens(n):
            ident = Identity.generate()
            api = CoordinatorAPI(self.coord.url, ident, timeout_seconds=60, max_retries=2, backoff_seconds=0.05)
            api.join(JoinRequest(admission_token=token, privacy_mode="open"))
            path = self.tmp / "members" / ident.instance_id / "ledger.db"
            mode = self.coord.policy.mode("open")
            # patterns near four of the codewords, as an instance's generalised memories would be
            centre = self.codebook.vectors[rng.choice(self.centres, size=6)]
            emb = centre + 0.3 * rng.standard_normal(centre.shape)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            member = GovMember(ident, api, None, path, emb.tolist())  # type: ignore[arg-type]
            route: Any = api
            if len(self.nodes) > 1:
                route = RoundRobin([api, *(CoordinatorAPI(n.url, ident, timeout_seconds=60, max_retries=2,
                                                          backoff_seconds=0.05) for n in self.nodes[1:])])
                self.balancers.append(route)
            member.gov = Governance(
                lambda route=route: route, ident, FED,
                lambda path=path, ident=ident, mode=mode: PrivacyLedger(
                    path, identity=ident.instance_id, budget_epsilon=mode.budget_epsilon, delta=mode.delta,
                    window=timedelta(days=mode.window_days), lifetime=mode.lifetime_budget()),
                lambda kind, ctx, m=member: self.inputs(m, kind),
                lambda kind: SessionContext(codebook=self.codebook) if kind == "codebook_refinement"
                else SessionContext(), poll_seconds=0.1, **({"rules": self.client_rules} if self.client_rules else {}))
            out.append(member)
        self.members += out
        return out

    def inputs(self, m: GovMember, kind: str) -> Any:
        if kind == "codebook_refinement":
            return CodebookInputs(embeddings=m.embeddings)
        from continuum_mcp.federation.learning import UsageInputs

        return UsageInputs(events=getattr(m, "events", []))

    def propose(self, by: GovMember, kind: str = "codebook_refinement", **params: Any) -> str:
        return by.gov.propose(kind, title=f"learn {kind}", expected_benefit="better federation",
                              discussion_seconds=DISCUSSION, **params).proposal_id

    def vote_and_consent(self, pid: str, approve: Sequence[GovMember], reject: Sequence[GovMember] = (),
                         opt_in: Sequence[GovMember] = ()) -> None:
        jobs: list[Callable[[], Any]] = [(lambda m=m: m.gov.vote(pid, "approve")) for m in approve]
        jobs += [(lambda m=m: m.gov.vote(pid, "reject", concern="not needed")) for m in reject]
        jobs += [(lambda m=m: m.gov.opt_in(pid)) for m in opt_in]
        with ThreadPoolExecutor(4) as pool:
            for f in [pool.submit(j) for j in jobs]:
                f.result()

    def wait_phase(self, pid: str, phases: set[str], timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            phase = self.members[0].api.call("gov_report", proposal_id=pid).summary.phase
            if phase in phases:
                return phase
            time.sleep(0.1)
        raise AssertionError(f"{pid} never reached {phases}")

    def take_part(self, members: Sequence[GovMember], pid: str, *, timeout: float = 120.0,
                  hooks: dict[str, Callable[[GovMember], None]] | None = None) -> dict[str, SessionTurn]:
        """Every member's ``participate`` in its own thread (as each instance syncs on its own)."""
        turns: dict[str, SessionTurn] = {}

        def run(m: GovMember) -> None:
            try:
                turns[m.id] = m.gov.participate(pid, timeout_seconds=timeout)
            except RuntimeError as exc:  # its API was closed: the instance went away mid-session
                turns[m.id] = SessionTurn(proposal_id=pid, refused=f"went away: {exc}")

        threads = [threading.Thread(target=run, args=(m,), daemon=True) for m in members]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + 30)
        return turns

    def close(self) -> None:
        for m in self.members:
            m.api.close()
        for b in self.balancers:
            for api in b.apis[1:]:
                api.close()
        for node in self.nodes:
            node.stop()
