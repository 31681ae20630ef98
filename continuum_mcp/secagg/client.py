"""A participant's side of one aggregation: a pure state machine, messages in, messages out."""

from __future__ import annotations

import os
from functools import lru_cache

import nacl.public
import numpy as np

from continuum_mcp.crypto.cipher import aead_decrypt, aead_encrypt
from continuum_mcp.crypto.identity import Identity
from continuum_mcp.crypto.shamir import ShamirDealer, unpack_share
from continuum_mcp.crypto.signing import b64decode, b64encode, verify_signature_only
from continuum_mcp.errors import AggregationAborted, CryptoError, InvalidInput
from continuum_mcp.privacy.dp import discrete_gaussian
from continuum_mcp.secagg._graph import MaskGraph, round_digest, verify_proof
from continuum_mcp.secagg._masks import (
    SEED_BYTES, _share_ad, _share_key, pairwise_mask_seed, prg_uint32, self_mask_seed,
    self_seed_commitment,
)
from continuum_mcp.secagg.messages import (
    SECAGG_METHOD, AdvertiseKeys, KeyRoster, MaskedInput, ShareInbox, ShareKeys, SignedMessage,
    SurvivorList, Unmasking, _check_context, _parse_payload, _sign, advert_leaf,
)
from continuum_mcp.secagg.params import SecAggParams, _to_ring, quantise


@lru_cache(maxsize=8)
def _dealer(holders: int, threshold: int) -> ShamirDealer:
    """Dealers are immutable (a Vandermonde matrix); every client of a round shares one."""
    return ShamirDealer(holders, threshold)


class SecAggClient:
    """One participant's side of one aggregation. Call the four steps in order, once each."""

    def __init__(self, identity: Identity, params: SecAggParams) -> None:
        if identity.instance_id not in params.roster:
            raise InvalidInput("this identity is not in the aggregation's roster")
        self.identity = identity
        self.params = params
        self.instance_id = identity.instance_id
        self._digest = params.digest()
        self._c_key = nacl.public.PrivateKey.generate()
        self._s_key = nacl.public.PrivateKey.generate()
        self._self_seed = os.urandom(SEED_BYTES)
        self._step = 0
        self._peers: dict[str, tuple[bytes, bytes]] = {}  # U1 (SecAgg+: neighbours) -> (c_pk, s_pk)
        self._u2: list[str] = []
        self._held: dict[str, tuple[bytes, bytes]] = {}  # owner -> (s-key share, b share)
        self._share_keys: dict[str, bytes] = {}  # peer -> pairwise share-encryption key
        self._round = self._digest  # after share_keys: the digest that also binds the key roster
        self._holder_count = 0
        self._points: dict[str, int] = {}  # holder -> its Shamir point of this client's secrets
        self._my_points: dict[str, int] = {}  # neighbour -> this client's point of its secrets
        self._quantised: np.ndarray | None = None

    def _advance(self, expected: int) -> None:
        if self._step != expected:
            raise InvalidInput(f"secure aggregation step {expected} called out of order")
        self._step = expected + 1

    @property
    def quantised_input(self) -> np.ndarray | None:
        """This client's own quantised input (local knowledge; used to check sums in tests)."""
        return None if self._quantised is None else self._quantised.copy()

    # round 0
    def advertise_keys(self) -> SignedMessage:
        self._advance(0)
        payload = AdvertiseKeys(
            session_id=self.params.session_id,
            round_id=self.params.round_id,
            params_digest=self._digest,
            sender=self.instance_id,
            c_public_key=b64encode(bytes(self._c_key.public_key)),
            s_public_key=b64encode(bytes(self._s_key.public_key)),
        )
        return _sign(self.identity, self.params, payload)

    # round 1
    def share_keys(self, roster: KeyRoster) -> SignedMessage:
        """Verify the advertisements (and, for SecAgg+, their place in the committed roster), fix
        the graph, then send each holder of this client's secrets its encrypted shares."""
        self._advance(1)
        params = self.params
        if roster.session_id != params.session_id or roster.round_id != params.round_id:
            raise CryptoError("key roster belongs to another session or round")
        senders = [self._accept_advert(msg) for msg in roster.adverts]
        own = (bytes(self._c_key.public_key), bytes(self._s_key.public_key))
        if self._peers.get(self.instance_id) != own:
            raise CryptoError("the key roster does not carry this client's own keys")
        size = self._fix_graph(roster, senders) if params.sparse else self._complete(senders)
        if size < params.survivor_floor or len(self._points) < params.threshold:
            raise AggregationAborted(
                f"only {size} participants advertised keys; {params.survivor_floor} needed"
            )
        shares = _dealer(self._holder_count, params.threshold).split_serialised(
            [bytes(self._s_key), self._self_seed])
        c_private = bytes(self._c_key)
        ciphertexts: dict[str, str] = {}
        for peer, point in self._points.items():
            mine = shares[point - 1]
            if peer == self.instance_id:
                self._held[peer] = (mine[0], mine[1])
                continue
            # Fixed-length binary plaintext (two serialised shares); who sent it to whom, and for
            # which session, round and roster, is bound by the key derivation and the AD.
            key = _share_key(params, self._round, self.instance_id, c_private, peer, self._peers[peer][0])
            self._share_keys[peer] = key
            blob = aead_encrypt(key, mine[0] + mine[1],
                                _share_ad(params, self._round, self.instance_id, peer))
            ciphertexts[peer] = b64encode(blob)
        payload = ShareKeys(
            session_id=params.session_id,
            round_id=params.round_id,
            params_digest=self._round,
            sender=self.instance_id,
            self_seed_commitment=b64encode(
                self_seed_commitment(params, self.instance_id, self._self_seed)
            ),
            ciphertexts=ciphertexts,
        )
        return _sign(self.identity, params, payload)

    def _accept_advert(self, msg: SignedMessage) -> str:
        params = self.params
        sender = verify_signature_only(msg.envelope, msg.body())
        if msg.envelope.method != SECAGG_METHOD or msg.envelope.path != params.path("advertise"):
            raise CryptoError("advertisement was signed for another purpose")
        advert = _parse_payload(msg, "advertise")
        assert isinstance(advert, AdvertiseKeys)
        _check_context(advert, params, self._digest, sender)
        if sender not in params.roster:
            raise CryptoError("advertisement from outside the roster")
        if sender in self._peers:
            raise CryptoError("two advertisements from one participant")
        self._peers[sender] = (
            b64decode(advert.c_public_key, what="public key", length=32),
            b64decode(advert.s_public_key, what="public key", length=32),
        )
        return sender

    def _complete(self, senders: list[str]) -> int:
        """Bonawitz: every advertiser holds a share; points are positions in sorted U1."""
        members = sorted(senders)
        self._round = self._digest
        self._holder_count = len(members)
        self._points = {m: j + 1 for j, m in enumerate(members)}
        own = self._points[self.instance_id]
        self._my_points = {m: own for m in members}
        return len(members)

    def _fix_graph(self, roster: KeyRoster, senders: list[str]) -> int:
        """SecAgg+: check each advert's Merkle proof against the committed root, derive the graph
        from the round digest, and require exactly this client's closed neighbourhood."""
        if (roster.recipient != self.instance_id or roster.roster_root is None
                or roster.roster_size is None or roster.leaf_indices is None or roster.proofs is None
                or not len(roster.leaf_indices) == len(roster.proofs) == len(senders)):
            raise CryptoError("sparse key roster is not addressed to this client or is incomplete")
        root = b64decode(roster.roster_root, what="roster root", length=32)
        size = roster.roster_size
        for msg, index, proof in zip(roster.adverts, roster.leaf_indices, roster.proofs, strict=True):
            raw = b64decode(proof, what="Merkle proof")
            verify_proof(root, size, index, advert_leaf(msg), [raw[i:i + 32] for i in range(0, len(raw), 32)])
        by_index = dict(zip(roster.leaf_indices, senders, strict=True))
        order = sorted(by_index)
        if len(by_index) != len(senders) or [by_index[i] for i in order] != sorted(senders):
            raise CryptoError("key roster leaves are duplicated or not in id order")
        own = roster.leaf_indices[senders.index(self.instance_id)]
        self._round = round_digest(self._digest, root)
        graph = MaskGraph(size, self.params.neighbours, bytes.fromhex(self._round))
        closed = graph.closed(own)
        if set(closed) != set(by_index):
            raise CryptoError("key roster does not hold exactly this client's graph neighbours")
        self._holder_count = graph.holder_count
        self._points = {by_index[j]: point for j, point in closed.items()}
        self._my_points = {peer: graph.mirror_point(point, own) for peer, point in self._points.items()}
        return size

    # round 2
    def masked_input(self, inbox: ShareInbox, vector: np.ndarray) -> SignedMessage:
        """Decrypt and check the shares received, then send the masked, noised, quantised input."""
        self._advance(2)
        params = self.params
        if (
            inbox.session_id != params.session_id
            or inbox.round_id != params.round_id
            or inbox.recipient != self.instance_id
        ):
            raise CryptoError("share inbox is addressed to another client, session or round")
        senders = list(dict.fromkeys(inbox.senders))
        if len(senders) != len(inbox.senders) or not set(senders) <= set(self._peers):
            raise CryptoError("share senders are not a subset of the advertised participants")
        if self.instance_id not in senders:
            raise CryptoError("the server dropped this client's own shares")
        if len(senders) < params.threshold:
            raise AggregationAborted(
                f"only {len(senders)} participants shared keys; {params.threshold} needed"
            )
        if set(inbox.ciphertexts) != set(senders) - {self.instance_id}:
            raise CryptoError("share inbox does not hold exactly one ciphertext per sender")
        for sender, blob_b64 in inbox.ciphertexts.items():
            key = self._share_keys[sender]
            blob = b64decode(blob_b64, what="share ciphertext")
            ad = _share_ad(params, self._round, sender, self.instance_id)
            plain = aead_decrypt(key, blob, ad)
            if len(plain) % 2:
                raise CryptoError("share plaintext has the wrong length")
            half = len(plain) // 2
            pair = (plain[:half], plain[half:])
            for raw in pair:
                threshold, index, secret_len, _ = unpack_share(raw)
                if index != self._my_points[sender] or threshold != params.threshold:
                    raise CryptoError("share has the wrong holder index or threshold")
                if secret_len != SEED_BYTES:
                    raise CryptoError("share is not of a 32-byte secret")
            self._held[sender] = pair
        self._u2 = senders

        q = quantise(vector, params)
        self._quantised = q
        noise = (
            discrete_gaussian(params.client_sigma_scaled, params.dim)
            if params.client_sigma_scaled > 0
            else np.zeros(params.dim, dtype=np.int64)
        )
        y = _to_ring(q + noise)
        y += prg_uint32(self_mask_seed(params, self.instance_id, self._self_seed), params.dim)
        s_private = bytes(self._s_key)
        s_public = bytes(self._s_key.public_key)
        for peer in senders:
            if peer == self.instance_id:
                continue
            seed = pairwise_mask_seed(
                params, self.instance_id, s_private, s_public, peer, self._peers[peer][1], self._round
            )
            mask = prg_uint32(seed, params.dim)
            if self.instance_id < peer:
                y += mask
            else:
                y -= mask
        payload = MaskedInput(
            session_id=params.session_id,
            round_id=params.round_id,
            params_digest=self._round,
            sender=self.instance_id,
            vector=b64encode(y.astype("<u4").tobytes()),
        )
        return _sign(self.identity, params, payload)

    # round 3
    def unmask(self, survivors: SurvivorList) -> SignedMessage:
        """Reveal, per owner, exactly one share: of b if it survived, of its s key if it dropped."""
        self._advance(3)
        params = self.params
        if survivors.session_id != params.session_id or survivors.round_id != params.round_id:
            raise CryptoError("survivor list belongs to another session or round")
        u3 = set(survivors.survivors)
        if len(u3) != len(survivors.survivors) or not u3 <= set(self._u2):
            raise CryptoError("survivors are not a subset of the participants that shared keys")
        if self.instance_id not in u3:
            raise CryptoError("this client's masked input is not in the survivor list")
        if len(u3) < params.threshold:
            raise AggregationAborted(f"only {len(u3)} survivors; {params.threshold} needed")
        mask_key_shares = {
            owner: b64encode(self._held[owner][0]) for owner in self._u2 if owner not in u3
        }
        self_seed_shares = {owner: b64encode(self._held[owner][1]) for owner in sorted(u3)}
        payload = Unmasking(
            session_id=params.session_id,
            round_id=params.round_id,
            params_digest=self._round,
            sender=self.instance_id,
            mask_key_shares=mask_key_shares,
            self_seed_shares=self_seed_shares,
        )
        return _sign(self.identity, params, payload)
