"""Session rounds live in the store, not in a process: two coordinator nodes on one database (each
with its own ticking scheduler) serve a learning session while every member's requests alternate
between them, as a load balancer may send them; a round's attempt is the store's log, which any
node catches up with. Runs on both coordinator backends (SQLite file, PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from continuum_mcp.federation.coordinator import _attempt_sql as asql
from continuum_mcp.federation.coordinator import _governance_sql as gsql
from continuum_mcp.federation.governance.guarantee import session_label
from govkit import DISCUSSION, FED, GovKit

pytestmark = pytest.mark.usefixtures("backend")


@pytest.mark.slow
def test_a_session_round_served_by_two_nodes_request_by_request_completes(tmp_path: Path) -> None:
    kit = GovKit(tmp_path, nodes=2)
    try:
        members = kit.admit(10)
        pid = kit.propose(members[0], rounds=2)
        kit.vote_and_consent(pid, approve=members, opt_in=members)
        kit.wait_phase(pid, {"running"}, timeout=DISCUSSION + 10)
        turns = kit.take_part(members, pid, timeout=90)
        report = members[0].gov.verified(pid).report
        assert report.summary.phase == "completed", (report.rounds, turns)
        assert [r.outcome for r in report.rounds] == ["released", "released"]
        assert all(turns[m.id].rounds_taken == [1, 2] for m in members)
        # every member's requests went to both nodes, and both see the same finished session
        assert all(min(b.sent) > 0 for b in kit.balancers)
        states = [node.service.governance.round_state(members[0].id, pid, 2) for node in kit.nodes]
        assert [s.phase for s in states] == ["released", "released"]
        with kit.coord.store.reading() as conn:
            logs = [asql.records_after(conn, f"{session_label(FED, pid)}/r{r}/a0", -1) for r in (1, 2)]
            charged = {r.round: sorted(r.participants) for r in gsql.rounds(conn, pid)}
        # each round's secure-aggregation log (every key share and masked vector) is deleted in
        # the transaction that released it; what it decided is in the round records
        assert logs == [[], []]
        assert charged == {1: sorted(m.id for m in members), 2: sorted(m.id for m in members)}
        for m in members:  # one charge per round, whichever node took the message
            assert kit.coord.engine.ledger_spent(m.id) == pytest.approx(m.spent(), rel=1e-6)
    finally:
        kit.close()
