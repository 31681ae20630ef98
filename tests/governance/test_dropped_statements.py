"""A coordinator that silently drops a member's ballot, opt-in or opt-out is caught by that member:
its client keeps what it signed and the coordinator accepted, checks that every one is published
after posting and at every count, and refuses to take part (a typed error, the CLI's exit code)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuum_mcp.config import Settings
from continuum_mcp.crypto.cipher import Invite, generate_federation_key
from continuum_mcp.errors import StatementDropped
from continuum_mcp.federation.client import FederationClient
from continuum_mcp.memory.store import MemoryStore
from govkit import DISCUSSION, FED, GovKit


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[GovKit]:
    k = GovKit(tmp_path)
    yield k
    k.close()


def _drop(kit: GovKit, signer: str, type_: str) -> None:
    """The coordinator deletes what it had accepted and published."""
    with kit.coord.store.transaction() as conn:
        conn.execute("DELETE FROM gov_statements WHERE signer = ? AND type = ?", (signer, type_))


def test_a_dropped_ballot_is_caught_at_the_next_count_and_post_and_the_member_stays_out(kit: GovKit) -> None:
    members = kit.admit(12)
    pid = kit.propose(members[0], kind="usage_statistics")
    kit.vote_and_consent(pid, approve=members, opt_in=members)
    victim = members[3]
    _drop(kit, victim.id, "ballot")
    with pytest.raises(StatementDropped, match="ballot signed at"):
        victim.gov.verified(pid)
    assert members[4].gov.verified(pid).tally.approve == 11  # the others' statements are all there
    with pytest.raises(StatementDropped, match="1 statement"):  # after its next post, too
        victim.gov.vote(pid, "approve", concern="again")
    kit.wait_phase(pid, {"running", "completed"}, timeout=DISCUSSION + 10)
    turn = victim.gov.participate(pid, timeout_seconds=3)
    assert "does not publish" in turn.refused and turn.rounds_taken == [] and victim.spent() == 0.0


def test_a_dropped_opt_in_or_proposal_is_caught_right_after_posting_and_at_the_next_count(kit: GovKit) -> None:
    members = kit.admit(3)
    pid = kit.propose(members[0], kind="usage_statistics")
    members[1].gov.opt_in(pid)
    _drop(kit, members[1].id, "opt_in")
    with pytest.raises(StatementDropped, match="opt_in"):
        members[1].gov.opt_out(pid)
    with kit.coord.store.transaction() as conn:  # the whole proposal disappears: its proposer notices
        conn.execute("DELETE FROM gov_proposals WHERE proposal_id = ?", (pid,))
    with pytest.raises(StatementDropped, match="proposal signed at"):
        members[0].gov.verified(pid)


def test_the_cli_exits_with_the_taxonomy_s_code_when_its_ballot_was_dropped(kit: GovKit, tmp_path: Path,
                                                                             embedder) -> None:
    data = tmp_path / "instance"
    settings = Settings(data_dir=data)
    with MemoryStore(settings, embedder) as store, FederationClient(
            store, settings, codebook=kit.codebook, policy=kit.coord.policy) as client:
        token = kit.coord.create_admission_tokens(1)[0]
        client.join(Invite.build(kit.coord.url, FED, token, generate_federation_key()).format(), privacy_mode="open")
        me = client.instance_id
    (proposer,) = kit.admit(1)
    pid = proposer.gov.propose("usage_statistics", title="hours of use", expected_benefit="know the federation",
                               discussion_seconds=600).proposal_id  # the CLI's start-up takes seconds

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "continuum_mcp.cli.main", "federation", *args, "--data-dir",
                               str(data)], capture_output=True, text=True, timeout=120)

    r = cli("vote-proposal", pid, "approve")
    assert r.returncode == 0, r.stderr
    r = cli("report", pid)
    assert r.returncode == 0 and "releases and sessions together epsilon 0.000" in r.stdout, r.stderr
    _drop(kit, me, "ballot")
    r = cli("report", pid)
    assert r.returncode == StatementDropped.exit_code == 10 and "does not publish" in r.stderr, r.stderr
