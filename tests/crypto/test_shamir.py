"""Shamir secret sharing over GF(2^31 - 1): correctness, secrecy, serialisation, tamper checks."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from continuum_mcp.errors import CryptoError, InvalidInput
from continuum_mcp.crypto.shamir import (
    FIELD_PRIME,
    Reconstructor,
    ShamirDealer,
    Share,
    matmul_mod,
    reconstruct_secret,
    split_secret,
)


@given(secret=st.binary(min_size=1, max_size=64), n=st.integers(1, 12), data=st.data())
@settings(max_examples=60, deadline=None)
def test_round_trip_any_threshold_subset(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    shares = split_secret(secret, n, t)
    subset = data.draw(st.permutations(shares)).copy()[: data.draw(st.integers(t, n))]
    assert reconstruct_secret(subset) == secret


def test_every_subset_of_size_t_reconstructs() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, 6, 4)
    for subset in itertools.combinations(shares, 4):
        assert reconstruct_secret(list(subset)) == secret
    with pytest.raises(CryptoError, match="cannot reconstruct"):
        reconstruct_secret(shares[:3])


def test_fewer_than_t_shares_are_independent_of_the_secret() -> None:
    """t-1 shares are uniform whatever the secret (chi-square on the top bits of one share)."""
    zero, ones = bytes(32), b"\xff" * 32
    for secret in (zero, ones):
        values = np.array([split_secret(secret, 3, 2)[0].values[0] for _ in range(3000)])
        buckets = np.bincount(values >> 27, minlength=16)  # 16 buckets of [0, 2^31)
        assert stats.chisquare(buckets).pvalue > 1e-4


def test_serialisation_round_trip_and_rejection() -> None:
    share = split_secret(os.urandom(32), 5, 3)[2]
    raw = share.to_bytes()
    assert Share.from_bytes(raw) == share
    assert Share.model_validate_json(share.model_dump_json()) == share
    with pytest.raises(InvalidInput):
        Share.from_bytes(raw[:-1])
    with pytest.raises(InvalidInput):
        Share.from_bytes(b"XXXX" + raw[4:])
    too_big = raw[:-4] + (FIELD_PRIME).to_bytes(4, "big")
    with pytest.raises(InvalidInput):
        Share.from_bytes(too_big)
    with pytest.raises(ValueError):
        Share(threshold=3, index=0, secret_len=32, values=[0] * 9)  # x = 0 would be the secret


def test_tampered_or_inconsistent_shares_are_detected() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, 7, 4)
    for victim in range(7):
        bad = list(shares)
        values = list(bad[victim].values)
        values[3] = (values[3] + 1) % FIELD_PRIME
        bad[victim] = Share(threshold=4, index=victim + 1, secret_len=32, values=values)
        with pytest.raises(CryptoError):
            reconstruct_secret(bad)  # 7 shares at t = 4: extras expose any single change
    with pytest.raises(CryptoError, match="duplicate"):
        reconstruct_secret([shares[0], shares[0], shares[1], shares[2]])
    other = split_secret(secret, 7, 3)
    with pytest.raises(CryptoError, match="threshold"):
        reconstruct_secret([shares[0], shares[1], shares[2], other[3]])


def test_matmul_mod_matches_big_integers() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, FIELD_PRIME, size=(9, 40), dtype=np.int64)
    b = rng.integers(0, FIELD_PRIME, size=(40, 5), dtype=np.int64)
    a[0, :] = FIELD_PRIME - 1
    b[:, 0] = FIELD_PRIME - 1
    expected = [
        [sum(int(a[i, k]) * int(b[k, j]) for k in range(40)) % FIELD_PRIME for j in range(5)]
        for i in range(9)
    ]
    assert matmul_mod(a, b).tolist() == expected


def test_secagg_scale_n500_t334() -> None:
    """The shape secure aggregation needs: 2 secrets to 500 holders, recovery from 350 of them."""
    dealer = ShamirDealer(500, 334)
    owners = [[os.urandom(32), os.urandom(32)] for _ in range(20)]
    dealt = [dealer.split_serialised(pair) for pair in owners]
    holders = sorted(np.random.default_rng(1).choice(np.arange(1, 501), 350, replace=False))
    rec = Reconstructor([int(h) for h in holders], 334)
    for which in (0, 1):
        sets = [[d[h - 1][which] for h in holders] for d in dealt]
        assert rec.reconstruct_many(sets) == [pair[which] for pair in owners]
    # The serialised and object forms agree.
    objects = dealer.split([owners[0][0]])
    assert reconstruct_secret([objects[h - 1][0] for h in holders[:334]]) == owners[0][0]
    assert Share.from_bytes(dealt[0][5][0]).index == 6
