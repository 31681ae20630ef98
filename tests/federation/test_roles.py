"""Roles and the round parameters a client accepts.

- The founder holds the federation key and makes invites locally from the operator's admission
  tokens: the key never reaches the coordinator. Invite minting is limited and journalled.
- Client noise is calibrated for a stated sybil fraction (the coordinator can mint identities):
  each client's share assumes only the honest survivors add noise; a client refuses a round
  calibrated for fewer sybils than it assumes.
- A client checks every round parameter: n >= 3, t = ceil(2n/3) exactly, the mode's clip, a safe
  and not coarser fixed-point scale, enough noise.
- One privacy-ledger label per secure-aggregation attempt, on the client and the coordinator.
"""

from __future__ import annotations

import math
import stat
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from fedapp import BASE, FED, SLOTS, Kit

from continuum_mcp.crypto.cipher import Invite
from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.errors import CryptoError, PrivacyBudgetExceeded, TooLarge
from continuum_mcp.federation.client import LedgerCharge
from continuum_mcp.federation.coordinator import CoordinatorConfig, CoordinatorStore, RoundEngine
from continuum_mcp.federation.coordinator.store import LEDGER_DB_NAME
from continuum_mcp.federation.founding import Founder
from continuum_mcp.federation.participant import (
    RoundExpectations,
    check_params,
    honest_survivors,
    round_params,
    sybil_noise_factor,
)
from continuum_mcp.federation.protocol import ContributionRequest, JoinRequest, PatternSubmission, RoundState
from continuum_mcp.privacy.ledger import LEDGER_SCHEMA, LEDGER_SCHEMA_VERSION, PrivacyLedger
from continuum_mcp.privacy.modes import default_policy
from continuum_mcp.secagg import SecAggParams, threshold_for

#: every test runs on both coordinator backends (SQLite, PostgreSQL: tests/conftest.py)
pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("backend")]
DIM = 384
MODE = default_policy().mode("high")


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    k = Kit(tmp_path, max_invites_per_day=5)
    yield k
    k.close()


# ------------------------------------------------------------------------------------- founder


def test_the_founder_makes_invites_locally_and_the_key_never_reaches_the_coordinator(kit: Kit, tmp_path: Path) -> None:
    founder = Founder.create(FED, BASE)
    path = founder.save(tmp_path / "founder.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and "Founder(" in repr(founder)
    token = kit.admin().admin_invites(1).admission_tokens[0]  # the operator's part: a token, no key
    invite = Founder.load(path).invite(token)
    parsed = Invite.parse(invite)
    assert parsed.admission_token == token and parsed.federation_key == founder._key
    api = kit.api(Identity.generate())
    api.join(JoinRequest(admission_token=parsed.public_part().admission_token, privacy_mode="open"))
    stored = b"".join(p.read_bytes() for p in kit.coord.store.storage_files())
    assert founder._key not in stored and parsed.format().split("#")[1].encode() not in stored
    journal = kit.coord.store.invite_journal()
    assert [(n, via) for _, n, via in journal] == [(1, "admin-http")]


def test_invite_minting_is_limited_per_day_and_journalled(kit: Kit) -> None:
    kit.coord.create_admission_tokens(3)
    kit.admin().admin_invites(2)
    with pytest.raises(TooLarge, match="limited to 5 per 24 hours"):
        kit.admin().admin_invites(1)
    with pytest.raises(TooLarge):
        kit.coord.create_admission_tokens(1)
    assert [(n, via) for _, n, via in kit.coord.store.invite_journal()] == [(3, "local"), (2, "admin-http")]


# ------------------------------------------------------------------------------------- sybils and params


def state(params: SecAggParams, attempt: int = 0) -> RoundState:
    return RoundState(round_id=params.round_id, attempt=attempt, phase="advertise", phase_deadline=None,
                      you_submitted=True, you_in_roster=True, you_pending="advertise",
                      params=params.model_dump(mode="json"))


def roster(n: int, me: str) -> list[str]:
    return sorted([me] + [f"fed-0000-0000-{k:04d}" for k in range(n - 1)])


def test_noise_is_calibrated_for_the_sybil_fraction() -> None:
    assert honest_survivors(3, 2, 1 / 3) == 1 and honest_survivors(100, 67, 1 / 3) == 34
    me = Identity.generate().instance_id
    for n in (3, 10, 100):
        p = round_params(FED, 0, 0, roster(n, me), SLOTS, DIM, MODE)
        t = threshold_for(n)
        h = honest_survivors(n, t, 1 / 3)
        # the honest survivors alone add variance h * (sigma_client)^2 >= (mode sigma x sensitivity)^2
        honest_sigma = math.sqrt(h) * p.client_sigma_scaled / p.scale
        assert honest_sigma == pytest.approx(MODE.sigma * p.quantised_sensitivity, rel=1e-9)
        assert sybil_noise_factor(n, 1 / 3) == pytest.approx(math.sqrt(t / h))
    # a coordinator that assumes no sybils is refused by a client that assumes a third
    naive = round_params(FED, 0, 0, roster(10, me), SLOTS, DIM, MODE, sybil_fraction=0.0)
    expect = RoundExpectations.for_mode(FED, SLOTS, DIM, MODE)
    with pytest.raises(CryptoError, match="sybil fraction"):
        check_params(state(naive), me, expect)
    assert check_params(state(round_params(FED, 0, 0, roster(10, me), SLOTS, DIM, MODE)), me, expect)


def test_the_client_refuses_round_parameters_the_mode_does_not_allow() -> None:
    me = Identity.generate().instance_id
    expect = RoundExpectations.for_mode(FED, SLOTS, DIM, MODE)
    good = round_params(FED, 0, 0, roster(6, me), SLOTS, DIM, MODE)
    assert check_params(state(good), me, expect) == good

    def bad(**changes: object) -> SecAggParams:
        return SecAggParams.model_validate({**good.model_dump(), **changes})

    cases = {
        "roster of 1, t = 1": bad(roster=[me], threshold=1),
        "t = n instead of ceil(2n/3)": bad(threshold=6),
        "t below ceil(2n/3)": bad(threshold=3),
        "smaller clip": bad(clip_norm=good.clip_norm / 2),
        "larger clip": bad(clip_norm=good.clip_norm * 2),
        "coarse fixed point": bad(frac_bits=max(0, good.frac_bits - 6)),
        "wrapping fixed point": bad(frac_bits=30),
        "noise without the sybil factor": bad(noise_sigma=MODE.sigma * good.quantised_sensitivity),
    }
    for what, params in cases.items():
        with pytest.raises(CryptoError):
            check_params(state(params), me, expect)
            pytest.fail(f"accepted: {what}")


# ------------------------------------------------------------------------------------- ledger labels


def test_the_client_charges_each_attempt_under_its_own_label(tmp_path: Path) -> None:
    me = Identity.generate().instance_id
    open_ledger = lambda: PrivacyLedger(tmp_path / "ledger.db", identity=me, budget_epsilon=MODE.budget_epsilon,  # noqa: E731
                                        delta=MODE.delta, window=timedelta(days=30))
    charge = LedgerCharge(open_ledger, MODE.round_spend(), FED)
    for _ in range(2):  # the same attempt posted again (a retried request): charged once
        charge("masked_input", round_params(FED, 4, 0, roster(3, me), SLOTS, DIM, MODE))
    # release v2 spends the window's whole budget in one shot, so a second attempt of the window
    # (a second masked input, which a coordinator could release too) is refused and not posted
    with pytest.raises(PrivacyBudgetExceeded):
        charge("masked_input", round_params(FED, 4, 1, roster(3, me), SLOTS, DIM, MODE))
    with open_ledger() as ledger:
        assert [e.round_id for e in ledger.history()] == [f"{FED}/r4/a0"]
    with pytest.raises(CryptoError):  # a session of another federation is not charged (nor posted)
        charge("masked_input", round_params("fed-other", 4, 0, roster(3, me), SLOTS, DIM, MODE))


def test_the_coordinator_charges_every_attempt_that_received_masked_inputs(tmp_path: Path) -> None:
    from continuum_mcp.secagg import SecAggClient

    config = CoordinatorConfig(storage_path=tmp_path, federation_id=FED, privacy_mode="open", min_contributors=3,
                               slots=4, dim=8, round_interval_seconds=100, phase_timeout_seconds=10)

    t = [time.time()]

    def engine() -> RoundEngine:
        store = CoordinatorStore.from_config(config)
        store.ensure_federation(FED)
        e = RoundEngine(store, config, Verifier(MemoryReplayGuard()), default_policy(), now=lambda: t[0])
        e.recover()
        return e

    eng = engine()
    who = [Identity.generate() for _ in range(3)]
    for m in who:
        eng.store.admit(m.instance_id, m.public_key, "standard", "open", None, private=False, now=time.time())
        eng.submit(m.instance_id, ContributionRequest(round_id=0, patterns=[
            PatternSubmission(slot=1, confidence=0.9, phrases=[])]))

    def through_masked_input(e: RoundEngine, unmask: bool) -> None:
        params = e.current_params()
        assert params is not None
        clients = {m.instance_id: SecAggClient(m, params) for m in who}
        for m in who:
            e.receive(0, "advertise", m.instance_id, clients[m.instance_id].advertise_keys())
        for m in who:
            e.receive(0, "share_keys", m.instance_id, clients[m.instance_id].share_keys(e.key_roster(0, m.instance_id)))
        x = np.zeros(params.dim)
        x[8:16] = params.clip_norm / math.sqrt(8)
        for m in who:
            e.receive(0, "masked_input", m.instance_id, clients[m.instance_id].masked_input(e.inbox(0, m.instance_id), x))
        if unmask:
            for m in who:
                e.receive(0, "unmask", m.instance_id, clients[m.instance_id].unmask(e.survivors(0, m.instance_id)))

    eng.close_round()
    through_masked_input(eng, unmask=False)
    eng.store.close()  # the coordinator dies after the masked inputs
    eng = engine()
    st = eng.state(None, 0)  # the attempt is in the store: the restarted coordinator continues it
    assert (st.phase, st.attempt) == ("unmask", 0)
    t[0] += 11  # nobody unmasks: attempt 0 aborts at its deadline
    eng.tick()
    assert eng.state(None, 0).phase == "aborted"
    # attempt 0's masked inputs were charged under its own label; release v2 spends the window's
    # whole budget at once, so nobody can afford another attempt in this window: the next round
    # waits (submissions kept) instead of releasing twice under one charge
    t[0] += 101
    eng.tick()
    st = eng.state(None)
    assert (st.round_id, st.phase) == (1, "collecting") and eng.current_params() is None
    ledgers = eng.store.component(LEDGER_DB_NAME, LEDGER_SCHEMA, version=LEDGER_SCHEMA_VERSION,  # the coordinator's own
                                  what="privacy ledger")
    for m in who:
        assert eng.store.pending_snapshot(m.instance_id) != []
        with PrivacyLedger(db=ledgers, identity=m.instance_id, budget_epsilon=eng.mode.budget_epsilon,
                           delta=eng.mode.delta) as ledger:
            assert [e.round_id for e in ledger.history()] == [f"{FED}/r0/a0"]
    eng.store.close()
