"""The aggregating server's side: verifies, enforces the threshold, learns only the noisy sum."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import nacl.bindings
import numpy as np

from continuum_mcp.crypto.shamir import Reconstructor
from continuum_mcp.crypto.signing import Verifier, b64decode
from continuum_mcp.errors import AggregationAborted, CryptoError, InvalidInput, ReplayError
from continuum_mcp.secagg._masks import pairwise_mask_seed, prg_uint32, self_mask_seed, self_seed_commitment
from continuum_mcp.secagg.messages import (
    SECAGG_METHOD, AdvertiseKeys, AggregateResult, KeyRoster, MaskedInput, ShareInbox,
    ShareKeys, SignedMessage, SurvivorList, Unmasking, _check_context, _decode_vector,
    _parse_payload, _Payload,
)
from continuum_mcp.secagg.params import SecAggParams, _from_ring


class SecAggServer:
    """The aggregating server's side. It verifies every client message (signature, freshness,
    replay, context), enforces the threshold at every step and learns only the noisy sum."""

    def __init__(
        self,
        params: SecAggParams,
        verifier: Verifier,
        registered_keys: Mapping[str, bytes] | None = None,
    ) -> None:
        self.params = params
        self._verifier = verifier
        self._registered = dict(registered_keys) if registered_keys is not None else None
        self._digest = params.digest()
        self._step = 0
        self._adverts: dict[str, tuple[SignedMessage, bytes, bytes]] = {}
        self._shares: dict[str, ShareKeys] = {}
        self._masked: dict[str, np.ndarray] = {}
        self._unmask: dict[str, Unmasking] = {}
        self._u1: list[str] = []
        self._u2: list[str] = []
        self._u3: list[str] = []

    def _accept(self, msg: SignedMessage, kind: str, step: int, seen: Mapping[str, Any]) -> _Payload:
        if self._step != step:
            raise InvalidInput(f"the {kind} phase of this aggregation is not open")
        claimed = msg.envelope.instance_id
        if claimed not in self.params.roster:
            raise CryptoError("message from an identity outside the roster")
        expected_key = self._registered.get(claimed) if self._registered is not None else None
        if self._registered is not None and expected_key is None:
            raise CryptoError("no registered key for this identity")
        sender = self._verifier.verify(
            msg.envelope,
            method=SECAGG_METHOD,
            path=self.params.path(kind),
            body=msg.body(),
            expected_public_key=expected_key,
        )
        payload = _parse_payload(msg, kind)
        _check_context(payload, self.params, self._digest, sender)
        if sender in seen:
            raise ReplayError(f"a {kind} message from {sender} was already accepted")
        return payload

    # round 0
    def receive_advertisement(self, msg: SignedMessage) -> None:
        payload = self._accept(msg, "advertise", 0, self._adverts)
        assert isinstance(payload, AdvertiseKeys)
        c_pk = b64decode(payload.c_public_key, what="public key", length=32)
        s_pk = b64decode(payload.s_public_key, what="public key", length=32)
        self._adverts[payload.sender] = (msg, c_pk, s_pk)

    def close_advertisements(self) -> KeyRoster:
        self._require(0, len(self._adverts), "advertised keys")
        self._u1 = sorted(self._adverts)
        return KeyRoster(
            session_id=self.params.session_id,
            round_id=self.params.round_id,
            adverts=[self._adverts[u][0] for u in self._u1],
        )

    def _require(self, step: int, count: int, what: str) -> None:
        if self._step != step:
            raise InvalidInput("secure aggregation phase closed out of order")
        if count < self.params.threshold:
            self._step = -1
            raise AggregationAborted(
                f"only {count} participants {what}; at least {self.params.threshold} are needed"
            )
        self._step = step + 1

    # round 1
    def receive_shares(self, msg: SignedMessage) -> None:
        payload = self._accept(msg, "share_keys", 1, self._shares)
        assert isinstance(payload, ShareKeys)
        if payload.sender not in self._u1:
            raise CryptoError("share message from a client that did not advertise keys")
        if set(payload.ciphertexts) != set(self._u1) - {payload.sender}:
            raise CryptoError("share message must hold one ciphertext per other participant")
        b64decode(payload.self_seed_commitment, what="commitment", length=32)
        self._shares[payload.sender] = payload

    def close_shares(self) -> dict[str, ShareInbox]:
        self._require(1, len(self._shares), "shared keys")
        self._u2 = sorted(self._shares)
        return {
            v: ShareInbox(
                session_id=self.params.session_id,
                round_id=self.params.round_id,
                recipient=v,
                senders=self._u2,
                ciphertexts={u: self._shares[u].ciphertexts[v] for u in self._u2 if u != v},
            )
            for v in self._u2
        }

    # round 2
    def receive_masked_input(self, msg: SignedMessage) -> None:
        payload = self._accept(msg, "masked_input", 2, self._masked)
        assert isinstance(payload, MaskedInput)
        if payload.sender not in self._u2:
            raise CryptoError("masked input from a client that did not share keys")
        self._masked[payload.sender] = _decode_vector(payload.vector, self.params.dim)

    def close_masked_inputs(self) -> SurvivorList:
        self._require(2, len(self._masked), "sent masked inputs")
        self._u3 = sorted(self._masked)
        return SurvivorList(
            session_id=self.params.session_id, round_id=self.params.round_id, survivors=self._u3
        )

    # round 3
    def receive_unmasking(self, msg: SignedMessage) -> None:
        payload = self._accept(msg, "unmask", 3, self._unmask)
        assert isinstance(payload, Unmasking)
        if payload.sender not in self._u3:
            raise CryptoError("unmasking message from a client outside the survivors")
        dropped = set(self._u2) - set(self._u3)
        if set(payload.mask_key_shares) != dropped or set(payload.self_seed_shares) != set(self._u3):
            raise CryptoError("unmasking message does not hold exactly the requested shares")
        self._unmask[payload.sender] = payload

    def finalize(self) -> AggregateResult:
        """Reconstruct seeds and keys, remove all masks, check the norm, return the noisy sum."""
        self._require(3, len(self._unmask), "sent unmasking shares")
        params = self.params
        responders = sorted(self._unmask)
        indices = [params.holder_index(v) for v in responders]
        rec = Reconstructor(indices, params.threshold)
        dropped = [u for u in self._u2 if u not in self._masked]

        def shares_of(owner: str, field_name: str) -> list[bytes]:
            return [
                b64decode(getattr(self._unmask[v], field_name)[owner], what="share")
                for v in responders
            ]

        total = np.zeros(params.dim, dtype=np.uint32)
        for vector in self._masked.values():
            total += vector
        seeds = rec.reconstruct_many([shares_of(u, "self_seed_shares") for u in self._u3])
        for owner, seed in zip(self._u3, seeds, strict=True):
            commitment = b64decode(self._shares[owner].self_seed_commitment, what="commitment")
            if self_seed_commitment(params, owner, seed) != commitment:
                raise CryptoError(f"recovered self-mask seed of {owner} fails its commitment")
            total -= prg_uint32(self_mask_seed(params, owner, seed), params.dim)
        if dropped:
            keys = rec.reconstruct_many([shares_of(u, "mask_key_shares") for u in dropped])
            for owner, s_private in zip(dropped, keys, strict=True):
                s_public = self._adverts[owner][2]
                if nacl.bindings.crypto_scalarmult_base(s_private) != s_public:
                    raise CryptoError(f"recovered mask key of {owner} does not match its public key")
                for v in self._u3:
                    seed = pairwise_mask_seed(
                        params, owner, s_private, s_public, v, self._adverts[v][2]
                    )
                    mask = prg_uint32(seed, params.dim)
                    # v added +mask if v < owner, else -mask: undo it.
                    if v < owner:
                        total -= mask
                    else:
                        total += mask
        int_sum = _from_ring(total)
        norm = float(np.linalg.norm(int_sum.astype(np.float64)))
        bound = params.sum_l2_bound(len(self._u3))
        if norm > bound:
            raise AggregationAborted(
                f"unmasked sum has norm {norm:.4g} > {bound:.4g}, more than {len(self._u3)} "
                "clipped inputs plus noise can produce; refusing it"
            )
        noise_sigma = math.sqrt(len(self._u3)) * params.client_sigma_scaled / params.scale
        return AggregateResult(
            int_sum=int_sum,
            float_sum=int_sum.astype(np.float64) / params.scale,
            contributors=list(self._u3),
            recovered_dropouts=dropped,
            noise_sigma=noise_sigma,
            norm=norm,
            norm_bound=bound,
        )


# --------------------------------------------------------------------------- in-process driver
