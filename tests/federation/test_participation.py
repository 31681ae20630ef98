"""Members see only their own participation; statements leave only where they are released.

An outsider (a member not in the round) reads every member route while a round runs and after it
is released, and learns no other member's id, no roster and no submission count; in ``open`` mode
released statements carry no round id. ``balanced`` sends no statements (and its coordinator
accepts none); ``open`` releases a statement only when that statement itself has at least
``min_contributors`` distinct contributors, and once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedapp import SLOTS, SMALL_FEDERATION, Kit

from continuum_mcp.crypto.identity import b64decode
from continuum_mcp.errors import ContinuumError, InvalidInput
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.protocol import ContributionRequest, QueryRequest, ReleasedStatement, VoteRequest, routes
from continuum_mcp.federation.submission import build_contribution, build_submission, sends_statements

#: every test runs on both coordinator backends (SQLite, PostgreSQL: tests/conftest.py)
pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("backend")]

#: routes that change the caller's own state or post secagg messages: not "reading"
WRITES = {"contribute", "delete_contributions", "leave", "secagg_post", "join"}


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    k = Kit(tmp_path, policy=SMALL_FEDERATION)  # a few members release in open mode
    yield k
    k.close()


def read_everything(api: CoordinatorAPI, round_id: int, pattern_id: str) -> list[str]:
    """The JSON of every answer (or error message) of every member-readable route."""
    out: list[str] = []
    bodies: dict[str, Any] = {"query": QueryRequest(slots=list(range(SLOTS))), "vote": VoteRequest(up=True)}
    for name, spec in routes().items():
        if spec.auth not in ("member", "signed") or name in WRITES:
            continue
        path = {k: v for k, v in {"round_id": round_id, "pattern_id": pattern_id}.items() if "{" + k in spec.path}
        try:
            out.append(api.call(name, bodies.get(name), **path).model_dump_json())
        except ContinuumError as exc:
            out.append(f"{exc.code}: {exc.message}")
    return out


def vec(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=384)


def test_a_member_reading_every_route_learns_no_other_members_id(kit: Kit) -> None:
    rng = np.random.default_rng(1)
    roster = [kit.member() for _ in range(3)]
    outsider = kit.member()
    pattern = kit.pattern(vec(rng), ["dark theme"], "I like a dark theme", slot=5)
    for api in roster:
        kit.contribute(api, [pattern])
    ids = [api.identity.instance_id for api in roster]
    seen: list[str] = []

    def mid_round() -> None:
        st = outsider.round_current()
        assert st.phase == "advertise" and st.submissions is None and st.params is None and not st.you_in_roster
        mine = roster[0].round_current()  # a roster member gets the params (it needs the roster) but no count
        assert mine.params is not None and mine.submissions is None and mine.you_submitted
        seen.extend(read_everything(outsider, 0, "p-5"))

    outcomes = kit.run_round({api: [pattern] for api in roster}, during=mid_round)
    assert all(o.released for o in outcomes)
    seen.extend(read_everything(outsider, 0, "p-5"))
    seen.extend(read_everything(outsider, 1, "p-5"))
    assert len(seen) > 20
    leaked = [(i, text) for text in seen for i in ids if i in text]
    assert leaked == []
    released = outsider.round(0)
    assert released.phase == "released" and released.params is None and released.submissions is None
    assert kit.coord.engine.state(None, 0).submissions == 3  # the operator still sees its own rounds


def test_open_statements_carry_no_round_id_and_need_their_own_contributors(kit: Kit) -> None:
    rng = np.random.default_rng(2)
    members = [kit.member() for _ in range(5)]
    e = vec(rng)
    common = kit.pattern(e, ["dark theme"], "I like a dark theme", slot=3)
    rare = kit.pattern(e, ["dark theme"], "My editor at Acme Corp uses a dark theme", slot=3)
    plan = {api: [common if k < 3 else rare] for k, api in enumerate(members)}
    for api, pats in plan.items():
        kit.contribute(api, pats)
    kit.run_round(plan)
    (pat,) = members[0].download().patterns
    assert "round_id" not in ReleasedStatement.model_fields
    texts = [kit.cipher.open_statement(s.token, b64decode(s.ciphertext)) for s in pat.statements]
    assert texts == ["i like a dark theme"]  # the two-contributor statement is not released; the other once


def test_balanced_sends_no_statements_and_its_coordinator_accepts_none(tmp_path: Path) -> None:
    assert not sends_statements("balanced") and not sends_statements("high") and sends_statements("open")
    kit = Kit(tmp_path, privacy_mode="balanced")
    try:
        api = kit.member()
        p = kit.pattern(np.ones(384), ["dark theme"], "I like a dark theme", slot=1)
        req = build_contribution([p], 0, kit.cipher, "balanced")
        assert all(s.statement_ciphertext is None and s.statement_token is None for s in req.patterns)
        leaky = build_submission(p, 0, kit.cipher, send_statement=True)
        with pytest.raises(InvalidInput, match="releases no statements"):
            api.contribute(ContributionRequest(round_id=0, patterns=[leaky]))
        assert api.contribute(req).accepted_patterns == 1
    finally:
        kit.close()


def test_decoys_are_fixed_per_interest_so_repeated_queries_reveal_nothing_new() -> None:
    from continuum_mcp.crypto.identity import Identity
    from continuum_mcp.federation.client import QUERY_PADDED_SLOTS, decoy_secret, pad_with_decoys

    me = Identity.generate()
    secret = decoy_secret(me)
    assert secret == decoy_secret(me) and secret != decoy_secret(Identity.generate())  # local, stable
    released = list(range(0, 200, 3))
    asked = [pad_with_decoys([12, 30], released, 256, secret) for _ in range(3)]
    assert asked[0] == asked[1] == asked[2]  # three identical queries ask for the identical slot set
    assert len(asked[0]) == QUERY_PADDED_SLOTS and {12, 30} <= set(asked[0]) and asked[0] == sorted(asked[0])
    assert set(asked[0]) <= set(released)  # decoys from the released slots first
    # another interest, another (fixed) set; another member's decoys for the same interest differ
    assert pad_with_decoys([12, 33], released, 256, secret) != asked[0]
    assert pad_with_decoys([12, 30], released, 256, decoy_secret(Identity.generate())) != asked[0]
    # few releases: all of them are asked for, padded from the rest
    assert {3, 9, 27} <= set(pad_with_decoys([3], [3, 9, 27], 256, secret))
