"""Secure aggregation simulated in-process with the real state machines and real cryptography."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from continuum_mcp.errors import AggregationAborted, CryptoError, ReplayError
from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.secagg import (
    KeyRoster,
    MaskedInput,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    ShareInbox,
    SignedMessage,
    Unmasking,
    quantise,
    simulate,
    threshold_for,
)

_IDENTITIES: list[Identity] = [Identity.generate() for _ in range(500)]


def _setup(n: int, dim: int, sigma: float = 0.0, session: str = "s-1", clip: float = 1.0,
           seed: int = 0) -> tuple[list[Identity], SecAggParams, dict[str, np.ndarray]]:
    ids = _IDENTITIES[:n]
    params = SecAggParams.create(session, 7, [i.instance_id for i in ids], dim, clip, sigma)
    rng = np.random.default_rng(seed)
    inputs = {}
    for i in ids:
        x = rng.normal(size=dim)
        inputs[i.instance_id] = x / np.linalg.norm(x) * clip * rng.uniform(0.2, 1.5)  # some clip
    return ids, params, inputs


def _dropouts(ids: list[Identity], fraction: float) -> dict[str, Any]:
    """Drop ``fraction`` of the clients, alternating between before-sharing and after-sharing
    (the latter forces recovery of their pairwise masks)."""
    k = int(round(fraction * len(ids)))
    points = ("after_share_keys", "after_advertise")
    return {ids[-1 - j].instance_id: points[j % 2] for j in range(k)}


def _expected_sum(report: Any) -> np.ndarray:
    return sum(report.clients[c].quantised_input for c in report.result.contributors)


@pytest.mark.parametrize("n", [10, pytest.param(100, marks=pytest.mark.slow)])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3])
def test_exact_sum_with_dropouts(n: int, fraction: float) -> None:
    ids, params, inputs = _setup(n, dim=16)
    drops = _dropouts(ids, fraction)
    report = simulate(params, ids, inputs, Verifier(MemoryReplayGuard()), drops)
    res = report.result
    survivors = sorted(set(params.roster) - set(drops))
    assert res.contributors == survivors
    assert sorted(res.recovered_dropouts) == sorted(
        c for c, p in drops.items() if p == "after_share_keys"
    )
    assert np.array_equal(res.int_sum, _expected_sum(report))  # sigma = 0: exact
    clipped = sum(
        inputs[c] * min(1.0, params.clip_norm / np.linalg.norm(inputs[c])) for c in survivors
    )
    assert np.allclose(res.float_sum, clipped, atol=len(survivors) / params.scale)


@pytest.mark.slow
def test_n500_with_30_percent_dropouts() -> None:
    ids, params, inputs = _setup(500, dim=8)
    assert params.threshold == 334
    drops = _dropouts(ids, 0.3)
    report = simulate(params, ids, inputs, Verifier(MemoryReplayGuard()), drops)
    assert len(report.result.contributors) == 350
    assert len(report.result.recovered_dropouts) == 75
    assert np.array_equal(report.result.int_sum, _expected_sum(report))


def test_survivor_silent_in_unmasking_still_counts() -> None:
    ids, params, inputs = _setup(10, dim=16)
    drops = {ids[0].instance_id: "after_masked_input", ids[1].instance_id: "after_share_keys"}
    report = simulate(params, ids, inputs, Verifier(MemoryReplayGuard()), drops)
    assert ids[0].instance_id in report.result.contributors
    assert np.array_equal(report.result.int_sum, _expected_sum(report))


def test_distributed_noise_reaches_target_sigma_with_dropouts() -> None:
    target = 0.5
    ids, params, inputs = _setup(30, dim=4000, sigma=target)
    assert params.threshold == 20
    for fraction in (0.0, 1 / 3):
        drops = _dropouts(ids, fraction)
        report = simulate(params, ids, inputs, Verifier(MemoryReplayGuard()), drops)
        res = report.result
        noise = (res.int_sum - _expected_sum(report)) / params.scale
        k = len(res.contributors)
        expected = math.sqrt(k) * params.client_sigma_scaled / params.scale
        assert res.noise_sigma == pytest.approx(expected)
        assert res.noise_sigma >= target - 1e-12  # at least the target with tolerated dropouts
        assert noise.std() == pytest.approx(expected, rel=0.05)
        assert abs(noise.mean()) < 4 * expected / math.sqrt(params.dim)
        assert np.all(noise * params.scale == np.round(noise * params.scale))  # integer noise
    # With exactly t survivors (a third dropped) the noise is the target itself.
    assert len(res.contributors) == params.threshold
    assert res.noise_sigma == pytest.approx(target)


# --------------------------------------------------------------------------- a manual driver


class Run:
    """Drives the state machines step by step so that tests can intercept messages."""

    def __init__(self, n: int, dim: int, sigma: float = 0.0, session: str = "s-1") -> None:
        self.ids, self.params, self.inputs = _setup(n, dim, sigma, session)
        self.guard = MemoryReplayGuard()
        self.server = SecAggServer(
            self.params, Verifier(self.guard), {i.instance_id: i.public_key for i in self.ids}
        )
        self.clients = {i.instance_id: SecAggClient(i, self.params) for i in self.ids}
        self.adverts = {c: cl.advertise_keys() for c, cl in self.clients.items()}

    def round0(self) -> KeyRoster:
        for msg in self.adverts.values():
            self.server.receive_advertisement(msg)
        return self.server.close_advertisements()

    def round1(self, roster: KeyRoster) -> dict[str, ShareInbox]:
        self.shares = {c: cl.share_keys(roster) for c, cl in self.clients.items()}
        for msg in self.shares.values():
            self.server.receive_shares(msg)
        return self.server.close_shares()

    def round2(self, inboxes: dict[str, ShareInbox], skip: set[str] = set()) -> Any:
        self.masked = {
            c: cl.masked_input(inboxes[c], self.inputs[c])
            for c, cl in self.clients.items()
            if c not in skip
        }
        for msg in self.masked.values():
            self.server.receive_masked_input(msg)
        return self.server.close_masked_inputs()


def _masked_vector(msg: SignedMessage, dim: int) -> np.ndarray:
    payload = MaskedInput.model_validate(msg.payload)
    return np.frombuffer(base64.b64decode(payload.vector), dtype="<u4")


def _resign(identity: Identity, params: SecAggParams, kind: str, payload: dict[str, Any]) -> SignedMessage:
    from continuum_mcp.crypto.identity import canonical_json

    env = identity.sign("SECAGG", params.path(kind), canonical_json(payload))
    return SignedMessage(envelope=env, payload=payload)


def test_masked_vector_looks_uniform_and_uncorrelated() -> None:
    dim = 20_000
    run = Run(5, dim)
    target = run.ids[0].instance_id
    run.inputs[target] = np.full(dim, 1.0 / math.sqrt(dim))  # constant input: maximally regular
    run.round2(run.round1(run.round0()))
    y = _masked_vector(run.masked[target], dim)
    buckets = np.bincount(y >> 26, minlength=64)
    assert stats.chisquare(buckets).pvalue > 1e-4
    # Negative control: the same test on the unmasked quantised input fails resoundingly.
    q = run.clients[target].quantised_input % 2**32
    assert stats.chisquare(np.bincount(q.astype(np.uint64) >> 26, minlength=64)).pvalue < 1e-100
    # No correlation with a random input.
    other = run.ids[1].instance_id
    y2 = _masked_vector(run.masked[other], dim).astype(np.float64)
    r = np.corrcoef(run.inputs[other], y2)[0, 1]
    assert abs(r) < 5 / math.sqrt(dim)
    assert abs(np.corrcoef(run.inputs[other], run.clients[other].quantised_input)[0, 1]) > 0.99


def test_fewer_than_t_survivors_abort_at_every_step() -> None:
    ids, params, inputs = _setup(10, dim=8)
    t = threshold_for(10)
    assert t == 7
    for point in ("before_advertise", "after_advertise", "after_share_keys", "after_masked_input"):
        drops = {ids[j].instance_id: point for j in range(10 - t + 1)}  # t - 1 remain
        with pytest.raises(AggregationAborted, match="at least 7"):
            simulate(params, ids, inputs, Verifier(MemoryReplayGuard()), drops)
    # Clients refuse a survivor list below the threshold even if the server sent one.
    run = Run(10, 8)
    run.round2(run.round1(run.round0()))
    from continuum_mcp.secagg import SurvivorList

    short = SurvivorList(session_id="s-1", round_id=7, survivors=run.params.roster[:6])
    with pytest.raises(AggregationAborted):
        run.clients[run.params.roster[0]].unmask(short)


def test_tampered_share_ciphertext_is_rejected() -> None:
    run = Run(6, 8)
    inboxes = run.round1(run.round0())
    victim = run.ids[0].instance_id
    inbox = inboxes[victim]
    sender = next(iter(inbox.ciphertexts))
    blob = bytearray(base64.b64decode(inbox.ciphertexts[sender]))
    blob[40] ^= 1
    tampered = inbox.model_copy(
        update={"ciphertexts": {**inbox.ciphertexts, sender: base64.b64encode(blob).decode()}}
    )
    with pytest.raises(CryptoError, match="decryption failed"):
        run.clients[victim].masked_input(tampered, run.inputs[victim])
    # A ciphertext moved to another recipient fails too (recipient bound into key and AD).
    other = run.ids[1].instance_id
    swapped = inboxes[other].model_copy(
        update={"ciphertexts": {**inboxes[other].ciphertexts, sender: inbox.ciphertexts[sender]}}
    )
    if sender != other:
        with pytest.raises(CryptoError):
            run.clients[other].masked_input(swapped, run.inputs[other])


def test_tampered_unmasking_share_is_rejected() -> None:
    for n_responders in (10, 7):  # with extra shares (consistency) and at exactly t (commitment)
        run = Run(10, 8)
        survivors = run.round2(run.round1(run.round0()))
        responders = run.params.roster[:n_responders]
        cheat = responders[0]
        for c in responders:
            msg = run.clients[c].unmask(survivors)
            if c == cheat:  # a participant sends a wrong share of someone's self-mask seed
                payload = Unmasking.model_validate(msg.payload).model_dump(mode="json")
                owner = run.params.roster[-1]
                raw = bytearray(base64.b64decode(payload["self_seed_shares"][owner]))
                raw[-1] ^= 1
                payload["self_seed_shares"][owner] = base64.b64encode(raw).decode()
                identity = next(i for i in run.ids if i.instance_id == c)
                msg = _resign(identity, run.params, "unmask", payload)
            run.server.receive_unmasking(msg)
        with pytest.raises(CryptoError):
            run.server.finalize()


def test_replayed_and_foreign_messages_are_rejected() -> None:
    run = Run(6, 8)
    first = run.ids[0].instance_id
    run.server.receive_advertisement(run.adverts[first])
    with pytest.raises(ReplayError, match="replayed"):  # the nonce was seen
        run.server.receive_advertisement(run.adverts[first])
    for c, msg in run.adverts.items():
        if c != first:
            run.server.receive_advertisement(msg)
    roster = run.server.close_advertisements()
    shares = {c: cl.share_keys(roster) for c, cl in run.clients.items()}
    for msg in shares.values():
        run.server.receive_shares(msg)
    with pytest.raises(ReplayError, match="replayed"):  # the same signed message twice
        run.server.receive_shares(shares[first])
    # A fresh, validly signed second message from the same sender in the same phase is refused.
    second = _resign(run.ids[0], run.params, "share_keys", shares[first].payload)
    with pytest.raises(ReplayError, match="already accepted"):
        run.server.receive_shares(second)
    run.server.close_shares()
    # A genuine masked input of the same client in another session is refused here.
    other = Run(6, 8, session="s-2")
    other_inboxes = other.round1(other.round0())
    foreign = other.clients[first].masked_input(other_inboxes[first], other.inputs[first])
    with pytest.raises(CryptoError, match="another method or path"):
        run.server.receive_masked_input(foreign)


def test_wrong_signatures_are_rejected() -> None:
    run = Run(6, 8)
    first = run.ids[0].instance_id
    msg = run.adverts[first]
    forged_sig = run.adverts[run.ids[1].instance_id].envelope.signature
    bad = SignedMessage(
        envelope=msg.envelope.model_copy(update={"signature": forged_sig}), payload=msg.payload
    )
    with pytest.raises(CryptoError, match="bad signature"):
        run.server.receive_advertisement(bad)
    # Payload changed after signing (e.g. the server swapping a client's key).
    swapped = dict(msg.payload, s_public_key=run.adverts[run.ids[1].instance_id].payload["s_public_key"])
    with pytest.raises(CryptoError):
        run.server.receive_advertisement(SignedMessage(envelope=msg.envelope, payload=swapped))
    # An identity outside the roster, and one claiming a member's id.
    outsider = Identity.generate()
    fake = _resign(outsider, run.params, "advertise", dict(msg.payload, sender=outsider.instance_id))
    with pytest.raises(CryptoError, match="outside the roster"):
        run.server.receive_advertisement(fake)
    impostor = _resign(outsider, run.params, "advertise", msg.payload)
    impostor = SignedMessage(
        envelope=impostor.envelope.model_copy(update={"instance_id": first}), payload=msg.payload
    )
    with pytest.raises(CryptoError):
        run.server.receive_advertisement(impostor)
    roster = run.round0()
    # Clients verify the relayed advertisements themselves: a substituted key is caught.
    adverts = list(roster.adverts)
    adverts[1] = SignedMessage(
        envelope=adverts[1].envelope,
        payload=dict(adverts[1].payload, s_public_key=adverts[2].payload["s_public_key"]),
    )
    with pytest.raises(CryptoError):
        run.clients[first].share_keys(roster.model_copy(update={"adverts": adverts}))


def test_norm_check_refuses_an_impossible_sum() -> None:
    run = Run(6, 8)
    inboxes = run.round1(run.round0())
    cheat = run.ids[0]
    for c, cl in run.clients.items():
        msg = cl.masked_input(inboxes[c], run.inputs[c])
        if c == cheat.instance_id:  # a client bypasses clipping: adds 2^28 to every coordinate
            payload = dict(msg.payload)
            y = np.frombuffer(base64.b64decode(payload["vector"]), dtype="<u4") + np.uint32(2**28)
            payload["vector"] = base64.b64encode(y.astype("<u4").tobytes()).decode()
            msg = _resign(cheat, run.params, "masked_input", payload)
        run.server.receive_masked_input(msg)
    survivors = run.server.close_masked_inputs()
    for cl in run.clients.values():
        run.server.receive_unmasking(cl.unmask(survivors))
    with pytest.raises(AggregationAborted, match="norm"):
        run.server.finalize()


def test_parameters() -> None:
    roster = [i.instance_id for i in _IDENTITIES[:500]]
    params = SecAggParams.create("s", 1, roster, 12288, 1.0, 4.22)
    assert params.threshold == 334
    assert params.max_abs_coordinate() < 2**31
    assert params.quantised_sensitivity > 1.0
    with pytest.raises(Exception):
        SecAggParams.create("s", 1, roster, 8, 1.0, 0.0, frac_bits=24)  # would overflow
    assert params.digest() != SecAggParams.create("s", 1, roster, 12288, 1.0, 4.0).digest()
    # A client built with other parameters cannot join: its messages carry another digest.
    run = Run(6, 8)
    stray = SecAggClient(run.ids[0], SecAggParams.create("s-1", 7, run.params.roster, 8, 2.0, 0.0))
    with pytest.raises(CryptoError, match="parameters"):
        run.server.receive_advertisement(stray.advertise_keys())


def test_quantisation_clips_and_is_unbiased() -> None:
    _, params, _ = _setup(10, dim=50_000)
    x = np.full(params.dim, 0.3 / math.sqrt(params.dim))
    q = quantise(x, params)
    assert abs(q.mean() / params.scale - x[0]) < 4 * 0.5 / params.scale / math.sqrt(params.dim)
    assert np.all(np.abs(q - x * params.scale) < 1)
    big = np.full(params.dim, 1.0)
    qb = quantise(big, params)
    assert np.linalg.norm(qb) <= params.quantised_l2_bound
    assert np.linalg.norm(qb / params.scale) == pytest.approx(params.clip_norm, rel=1e-4)
