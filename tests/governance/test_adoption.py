"""After a codebook version is adopted by vote: the coordinator counts the adoption votes once per
change of the governance state (not on every contribute, slots or query request), the count is
right in every coordinator process on the database, and a member that joins afterwards follows
the adopted version (after counting the votes itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import Invite, generate_federation_key
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.client import FederationClient
from continuum_mcp.federation.governance import AdoptionStatement, sign_statement
from continuum_mcp.federation.governance._wire import StatementPost
from continuum_mcp.memory.store import MemoryStore
from continuum_mcp.privacy.codebook import slot_id
from govkit import FED, completed_codebook_session, weak_kit


@pytest.mark.slow
def test_adoption_is_counted_once_per_statement_in_every_node_and_a_late_joiner_follows_it(
        tmp_path: Path, embedder) -> None:
    kit = weak_kit(tmp_path, nodes=2)
    try:
        members = kit.admit(10)
        pid, result = completed_codebook_session(kit, members)
        version = result["version"]
        assert version.startswith("c-")
        node_a, node_b = (n.service.governance for n in kit.nodes)
        for m in members[:9]:  # nine approvals: one short of the ten an adoption needs
            m.gov.adopt(pid, approve=True)
        api_a = members[0].api  # always the first node
        assert api_a.federation().codebook_version == "v0"
        counted = node_a.adoption.recounts
        for _ in range(10):  # what every contribute, slots and query request asks for
            assert api_a.federation().codebook_version == "v0"
            api_a.slots()
        assert node_a.adoption.recounts == counted  # nothing changed: not counted again
        # the tenth vote reaches the other node; the first one's next request counts again
        last = members[9]
        vote = sign_statement(last.identity, AdoptionStatement(
            federation_id=FED, proposal_id=pid, version=version, digest=result["digest"], choice="approve"))
        api_b = CoordinatorAPI(kit.nodes[1].url, last.identity)
        try:
            api_b.call("gov_adopt", StatementPost(statement=vote), proposal_id=pid)
        finally:
            api_b.close()
        assert api_a.federation().codebook_version == version
        assert node_a.adoption.recounts == counted + 1
        for _ in range(5):
            assert [s.slot for s in api_a.slots().slots][:1] == [slot_id(version, 0)]
        assert node_a.adoption.recounts == counted + 1
        assert node_b.adopted_codebook().version == version
        # a member joining now gets the adopted version, counting the adoption votes itself
        settings = Settings(data_dir=tmp_path / "late")
        with MemoryStore(settings, embedder) as store, FederationClient(
                store, settings, codebook=kit.codebook, policy=kit.coord.policy) as late:
            late.governance_rules = kit.client_rules
            token = kit.coord.create_admission_tokens(1)[0]
            joined = late.join(Invite.build(kit.coord.url, FED, token, generate_federation_key()).format(),
                               privacy_mode="open")
            assert "not following" not in joined.note
            assert late.codebook.version == version and late.codebook.ids[0] == slot_id(version, 0)
            late.sync(timeout_seconds=2)  # and it keeps it at the next sync
            assert late.codebook.version == version
    finally:
        kit.close()


def test_the_adoption_key_moves_with_every_admission_and_departure(tmp_path: Path, backend: str | None) -> None:
    """The key every request reads (one statement, never a count of the members table) is the same
    while nothing changes and new after each admission and each departure, in any process."""
    from continuum_mcp.federation.coordinator import CoordinatorStore
    from continuum_mcp.federation.coordinator import _governance_sql as gsql

    store, other = CoordinatorStore(tmp_path, database=backend), CoordinatorStore(tmp_path, database=backend)
    try:
        with store.transaction() as conn:  # the governance tables, as the coordinator's governance creates them
            gsql.ensure_schema(conn)
        def key(s: CoordinatorStore = store) -> tuple[object, ...]:
            with s.reading() as conn:
                return gsql.adoption_key(conn)

        seen = [key()]
        assert key() == seen[0] == key(other)
        for who in ("member-a", "member-b"):
            store.admit(who, bytes(32), "standard", "open", None, private=False, now=1.0)
            seen.append(key(other))
        with store.transaction() as conn:
            store.remove_member(conn, "member-a")
        seen.append(key(other))
        store.admit("member-a", bytes(32), "standard", "open", None, private=False, now=1.0)  # same as two steps back
        seen.append(key(other))
        assert len(set(seen)) == len(seen) == 5 and key() == seen[-1]
    finally:
        store.close()
        other.close()
