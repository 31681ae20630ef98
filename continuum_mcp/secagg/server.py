"""The aggregating server's side: verifies, enforces the threshold, learns only the noisy sum."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, TypeVar

import nacl.bindings
import numpy as np

from continuum_mcp.crypto.shamir import Reconstructor
from continuum_mcp.crypto.signing import Verifier, b64decode, b64encode
from continuum_mcp.errors import AggregationAborted, CryptoError, InvalidInput, ReplayError
from continuum_mcp.secagg._graph import MaskGraph, MerkleTree, round_digest
from continuum_mcp.secagg._masks import pairwise_mask_seed, prg_uint32, self_mask_seed, self_seed_commitment
from continuum_mcp.secagg.messages import (
    SECAGG_METHOD, AdvertiseKeys, AggregateResult, KeyRoster, MaskedInput, ShareInbox,
    ShareKeys, SignedMessage, SurvivorList, Unmasking, _check_context, _decode_vector,
    _parse_payload, _Payload, advert_leaf,
)
from continuum_mcp.secagg.params import SecAggParams, _from_ring


_Shared = TypeVar("_Shared", KeyRoster, SurvivorList)


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
        self._round = self._digest  # SecAgg+: also binds the key roster, from round 1 on
        self._graph = MaskGraph(0, None)
        self._closed: list[dict[int, int]] = []
        self._holders: dict[str, dict[str, int]] = {}
        self._senders: dict[str, list[str]] = {}  # v -> members of U2 that sent v shares
        self._survivors: dict[str, list[str]] = {}  # v -> members of U3 among v's senders
        #: set when every secret was recovered but the sum's norm check refused it (some input was
        #: not clipped): a host may then release what does not depend on the sum
        self.sum_refused = False

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
        _check_context(payload, self.params, self._digest if step == 0 else self._round, sender)
        if sender in seen:
            raise ReplayError(f"a {kind} message from {sender} was already accepted")
        return payload

    def _require(self, step: int, count: int, what: str) -> None:
        if self._step != step:
            raise InvalidInput("secure aggregation phase closed out of order")
        floor = self.params.survivor_floor
        if count < floor:
            self._step = -1
            raise AggregationAborted(
                f"only {count} participants {what}; at least {floor} are needed"
            )
        self._step = step + 1

    # round 0
    def receive_advertisement(self, msg: SignedMessage) -> None:
        payload = self._accept(msg, "advertise", 0, self._adverts)
        assert isinstance(payload, AdvertiseKeys)
        c_pk = b64decode(payload.c_public_key, what="public key", length=32)
        s_pk = b64decode(payload.s_public_key, what="public key", length=32)
        self._adverts[payload.sender] = (msg, c_pk, s_pk)

    def close_key_rosters(self) -> dict[str, KeyRoster]:
        """End round 0: fix U1 and the graph; each member of U1 gets its key roster. For the
        complete graph every value is the same roster of all advertisements."""
        self._require(0, len(self._adverts), "advertised keys")
        self._u1 = sorted(self._adverts)
        params = self.params
        if not params.sparse:
            self._graph = MaskGraph(len(self._u1), None)
            shared = KeyRoster(session_id=params.session_id, round_id=params.round_id,
                               adverts=[self._adverts[u][0] for u in self._u1])
            self._set_holders()
            return dict.fromkeys(self._u1, shared)
        tree = MerkleTree([advert_leaf(self._adverts[u][0]) for u in self._u1])
        self._round = round_digest(self._digest, tree.root)
        self._graph = MaskGraph(tree.size, params.neighbours, bytes.fromhex(self._round))
        self._set_holders()
        root = b64encode(tree.root)
        rosters = {}
        for leaf, owner in enumerate(self._u1):
            indices = sorted(self._closed[leaf])
            rosters[owner] = KeyRoster(
                session_id=params.session_id, round_id=params.round_id,
                adverts=[self._adverts[self._u1[j]][0] for j in indices], recipient=owner,
                roster_root=root, roster_size=tree.size, leaf_indices=indices,
                proofs=[b64encode(b"".join(tree.proof(j))) for j in indices],
            )
        return rosters

    def _set_holders(self) -> None:
        self._closed = self._graph.all_closed()
        self._holders = {u: {self._u1[j]: point for j, point in self._closed[leaf].items()}
                         for leaf, u in enumerate(self._u1)} if self.params.sparse else {}

    def holders(self, owner: str) -> dict[str, int]:
        """Holder -> Shamir point of ``owner``'s secrets (its closed neighbourhood in U1)."""
        if not self.params.sparse:
            return self._complete_points
        return self._holders[owner]

    @cached_property
    def _complete_points(self) -> dict[str, int]:
        return {u: j + 1 for j, u in enumerate(self._u1)}

    def close_advertisements(self) -> KeyRoster:
        """Complete graph only: end round 0 and return the one roster every member receives."""
        return self._broadcast(self.close_key_rosters, "key rosters")

    def _broadcast(self, close: Callable[[], dict[str, _Shared]], what: str) -> _Shared:
        if self.params.sparse:
            raise InvalidInput(f"SecAgg+ {what} are per member: use {close.__name__}()")
        return next(iter(close().values()))

    # round 1
    def receive_shares(self, msg: SignedMessage) -> None:
        payload = self._accept(msg, "share_keys", 1, self._shares)
        assert isinstance(payload, ShareKeys)
        if payload.sender not in self._adverts:
            raise CryptoError("share message from a client that did not advertise keys")
        if set(payload.ciphertexts) != set(self.holders(payload.sender)) - {payload.sender}:
            raise CryptoError("share message must hold one ciphertext per holder of its shares")
        b64decode(payload.self_seed_commitment, what="commitment", length=32)
        self._shares[payload.sender] = payload

    def close_shares(self) -> dict[str, ShareInbox]:
        """End round 1: each member of U2 gets the ciphertexts its neighbours in U2 sent it."""
        self._require(1, len(self._shares), "shared keys")
        self._u2 = sorted(self._shares)
        self._senders = {v: [u for u in self._u2 if u in self.holders(v)] for v in self._u2} \
            if self.params.sparse else dict.fromkeys(self._u2, self._u2)
        return {
            v: ShareInbox(
                session_id=self.params.session_id,
                round_id=self.params.round_id,
                recipient=v,
                senders=senders,
                ciphertexts={u: self._shares[u].ciphertexts[v] for u in senders if u != v},
            )
            for v, senders in self._senders.items()
        }

    # round 2
    def receive_masked_input(self, msg: SignedMessage) -> None:
        payload = self._accept(msg, "masked_input", 2, self._masked)
        assert isinstance(payload, MaskedInput)
        if payload.sender not in self._u2:
            raise CryptoError("masked input from a client that did not share keys")
        self._masked[payload.sender] = _decode_vector(payload.vector, self.params.dim)

    def close_survivor_lists(self) -> dict[str, SurvivorList]:
        """End round 2: each member of U3 gets U3 among its share senders (all of U3 for the
        complete graph, one list for everyone)."""
        self._require(2, len(self._masked), "sent masked inputs")
        self._u3 = sorted(self._masked)
        sid, rid = self.params.session_id, self.params.round_id
        if not self.params.sparse:
            shared = SurvivorList(session_id=sid, round_id=rid, survivors=self._u3)
            self._survivors = dict.fromkeys(self._u3, self._u3)
            return dict.fromkeys(self._u3, shared)
        self._survivors = {v: [u for u in self._senders[v] if u in self._masked] for v in self._u3}
        return {v: SurvivorList(session_id=sid, round_id=rid, survivors=u3)
                for v, u3 in self._survivors.items()}

    def close_masked_inputs(self) -> SurvivorList:
        """Complete graph only: end round 2 and return the one survivor list (U3)."""
        return self._broadcast(self.close_survivor_lists, "survivor lists")

    # round 3
    def receive_unmasking(self, msg: SignedMessage) -> None:
        payload = self._accept(msg, "unmask", 3, self._unmask)
        assert isinstance(payload, Unmasking)
        if payload.sender not in self._u3:
            raise CryptoError("unmasking message from a client outside the survivors")
        survivors = self._survivors[payload.sender]
        dropped = set(self._senders[payload.sender]) - set(self._masked)
        if set(payload.mask_key_shares) != dropped or set(payload.self_seed_shares) != set(survivors):
            raise CryptoError("unmasking message does not hold exactly the requested shares")
        self._unmask[payload.sender] = payload

    def _reconstruct(self, owners: list[str], field_name: str) -> dict[str, bytes]:
        """Each owner's secret from the shares its responding holders sent; owners with the same
        holder points share one reconstructor (all of them, for the complete graph)."""
        t = self.params.threshold
        groups: dict[tuple[int, ...], list[tuple[str, list[str]]]] = {}
        for owner in owners:
            points = self.holders(owner)
            responders = [v for v in self._senders[owner] if v in self._unmask]
            if len(responders) < t:
                self._step = -1
                raise AggregationAborted(
                    f"only {len(responders)} holders of {owner}'s shares answered; {t} are needed"
                )
            key = tuple(points[v] for v in responders)
            groups.setdefault(key, []).append((owner, responders))
        out: dict[str, bytes] = {}
        for key, members in groups.items():
            rec = Reconstructor(list(key), t)
            share_sets = [[b64decode(getattr(self._unmask[v], field_name)[owner], what="share")
                           for v in responders] for owner, responders in members]
            for (owner, _), secret in zip(members, rec.reconstruct_many(share_sets), strict=True):
                out[owner] = secret
        return out

    def finalize(self) -> AggregateResult:
        """Reconstruct seeds and keys, remove all masks, check the norm, return the noisy sum."""
        self._require(3, len(self._unmask), "sent unmasking shares")
        params = self.params
        dropped = [u for u in self._u2 if u not in self._masked]
        total = np.zeros(params.dim, dtype=np.uint32)
        for vector in self._masked.values():
            total += vector
        for owner, seed in self._reconstruct(self._u3, "self_seed_shares").items():
            commitment = b64decode(self._shares[owner].self_seed_commitment, what="commitment")
            if self_seed_commitment(params, owner, seed) != commitment:
                raise CryptoError(f"recovered self-mask seed of {owner} fails its commitment")
            total -= prg_uint32(self_mask_seed(params, owner, seed), params.dim)
        for owner, s_private in self._reconstruct(dropped, "mask_key_shares").items():
            s_public = self._adverts[owner][2]
            if nacl.bindings.crypto_scalarmult_base(s_private) != s_public:
                raise CryptoError(f"recovered mask key of {owner} does not match its public key")
            for v in self._senders[owner]:
                if v not in self._masked:
                    continue
                seed = pairwise_mask_seed(
                    params, owner, s_private, s_public, v, self._adverts[v][2], self._round
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
            self.sum_refused = True
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
