"""Secure aggregation (Bonawitz et al., CCS 2017), semi-honest server, signed client messages.

Pure state machines: :class:`SecAggClient` and :class:`SecAggServer` consume and produce pydantic
messages with JSON-safe fields (bytes as base64) and contain no network code, so the federation
service only carries their messages. ``docs/secagg.md`` describes protocol, parameters and threat
model; the short version:

0. *Advertise keys*: each client makes two X25519 key pairs (``c`` to encrypt shares, ``s`` to agree
   mask seeds) and sends both public keys, signed with its Ed25519 identity. U1 = senders.
1. *Share keys*: each client Shamir-shares its ``s`` private key and a fresh 32-byte self-mask seed
   ``b`` (threshold t = ceil(2n/3) over the roster of n) and sends every peer in U1 its two shares,
   encrypted with XChaCha20-Poly1305 under a key derived from the pairwise ``c`` agreement, with
   session, round, sender and recipient bound into key and associated data. It also commits to
   ``b``. U2 = senders.
2. *Masked input*: the clipped float vector is quantised to fixed point with stochastic rounding,
   the client adds its share of distributed discrete Gaussian noise, then the self-mask PRG(b) and,
   for every peer v in U2, +PRG(s_uv) if u < v else -PRG(s_uv), all modulo 2^32. Seeds are 256-bit
   keyed-BLAKE2b outputs of the X25519 agreement bound to session/round/parameters/parties;
   PRG = SHAKE-256. U3 = senders.
3. *Unmask*: given U3, each survivor sends its share of ``b_u`` for u in U3 and of ``s_u`` for u in
   U2 \\ U3 (never both for one u). The server reconstructs, checks each result against the
   commitment or advertised public key, removes the masks, aborts below t at every step, and
   refuses a sum whose norm exceeds what |U3| clipped inputs plus the noise can produce.

Noise: each client adds N_Z(0, sigma_c^2) with sigma_c = noise_sigma * scale / sqrt(t). Every
aggregate that is released sums at least t clients' noise (the server aborts below t), so its noise
variance is |U3| sigma_c^2 >= (noise_sigma * scale)^2: the target sigma holds with any tolerated
dropouts, and is exceeded by a factor sqrt(|U3| / t) <= sqrt(n / t) ~ 1.22 without dropouts.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import nacl.bindings
import nacl.exceptions
import nacl.public
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from continuum_mcp.crypto.cipher import aead_decrypt, aead_encrypt, derive_key, encode_context
from continuum_mcp.privacy.dp import discrete_gaussian
from continuum_mcp.errors import (
    AggregationAborted,
    CryptoError,
    InvalidInput,
    ReplayError,
)
from continuum_mcp.crypto.identity import (
    Envelope,
    Identity,
    Verifier,
    b64decode,
    b64encode,
    canonical_json,
    verify_signature_only,
)
from continuum_mcp.crypto.shamir import Reconstructor, ShamirDealer, unpack_share

MODULUS_BITS = 32
MODULUS = 2**MODULUS_BITS
SECAGG_METHOD = "SECAGG"
SEED_BYTES = 32
_PRG_DOMAIN = b"continuum-mcp/secagg/prg/v1\x00"
# Tail parameter of the noise-norm bound: P(||noise|| > bound) <= exp(-40) ~ 4e-18.
_NOISE_TAIL_X = 40.0


def threshold_for(n: int) -> int:
    """t = ceil(2n/3): tolerates up to a third of the roster dropping out."""
    return -(-2 * n // 3)


# --------------------------------------------------------------------------- parameters


class SecAggParams(BaseModel):
    """Public parameters of one aggregation, identical for the server and every client.

    Their digest is bound into every key derivation and associated data, so parties that disagree
    on any parameter cannot complete the protocol together.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: str = Field(min_length=1, max_length=128)
    round_id: int = Field(ge=0)
    roster: list[str] = Field(description="sorted instance ids invited to this aggregation")
    dim: int = Field(ge=1, le=1 << 24)
    clip_norm: float = Field(gt=0, description="L2 bound of one client's float input")
    noise_sigma: float = Field(ge=0, description="target noise std of the float sum (0 = none)")
    frac_bits: int = Field(ge=0, le=30, description="fixed-point scale is 2^frac_bits")
    threshold: int

    @classmethod
    def create(
        cls,
        session_id: str,
        round_id: int,
        roster: Sequence[str],
        dim: int,
        clip_norm: float,
        noise_sigma: float,
        frac_bits: int | None = None,
    ) -> SecAggParams:
        """Parameters with t = ceil(2n/3); ``frac_bits`` defaults to the largest safe scale.

        Raises ``InvalidInput`` if the sum could wrap around modulo 2^32 (too many clients or too
        fine a scale for the clip norm and noise).
        """
        members = sorted(set(roster))
        if len(members) != len(roster):
            raise InvalidInput("roster has duplicate instance ids")
        if len(members) < 3:
            raise InvalidInput("secure aggregation needs at least 3 participants")
        if not (math.isfinite(clip_norm) and math.isfinite(noise_sigma)):
            raise InvalidInput("clip norm and noise sigma must be finite")
        base: dict[str, Any] = dict(
            session_id=session_id,
            round_id=round_id,
            roster=members,
            dim=dim,
            clip_norm=clip_norm,
            noise_sigma=noise_sigma,
            threshold=threshold_for(len(members)),
        )
        try:
            if frac_bits is not None:
                params = cls(**base, frac_bits=frac_bits)
                params.check_no_overflow()
                return params
            for bits in range(24, -1, -1):
                params = cls(**base, frac_bits=bits)
                if params.max_abs_coordinate() < 2**31:
                    return params
        except ValidationError as exc:
            raise InvalidInput(f"invalid secure aggregation parameters: {exc}") from exc
        raise InvalidInput("no fixed-point scale avoids overflow modulo 2^32 for these parameters")

    @property
    def n(self) -> int:
        return len(self.roster)

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    @property
    def client_sigma_scaled(self) -> float:
        """Discrete Gaussian sigma each client adds, in fixed-point units: target / sqrt(t)."""
        return self.noise_sigma * self.scale / math.sqrt(self.threshold)

    @property
    def quantised_l2_bound(self) -> float:
        """Bound on ||q|| of one quantised input: clip*scale plus sqrt(d) from stochastic rounding."""
        return self.clip_norm * self.scale + math.sqrt(self.dim)

    @property
    def quantised_sensitivity(self) -> float:
        """L2 sensitivity of the released float sum after quantisation (>= clip_norm).

        A caller calibrating DP noise should use this, not ``clip_norm``:
        ``noise_sigma = sigma_per_unit_sensitivity * quantised_sensitivity``.
        """
        return self.quantised_l2_bound / self.scale

    def noise_l2_bound(self, contributors: int) -> float:
        """High-probability bound on the L2 norm of the summed noise, in fixed-point units.

        Laurent-Massart chi-square tail, valid for sigma-subgaussian coordinates (the discrete
        Gaussian is, CKS20): failure probability <= exp(-40).
        """
        sigma = math.sqrt(contributors) * self.client_sigma_scaled
        d, x = self.dim, _NOISE_TAIL_X
        return sigma * math.sqrt(d + 2 * math.sqrt(d * x) + 2 * x)

    def sum_l2_bound(self, contributors: int) -> float:
        """Largest L2 norm an honest unmasked sum of ``contributors`` clients can have."""
        return contributors * self.quantised_l2_bound + self.noise_l2_bound(contributors)

    def max_abs_coordinate(self) -> float:
        """Worst-case |coordinate| of the integer sum with all n clients (must stay below 2^31)."""
        noise = 12 * math.sqrt(self.n) * self.client_sigma_scaled
        return self.n * (self.clip_norm * self.scale + 1) + noise

    def check_no_overflow(self) -> None:
        if self.max_abs_coordinate() >= 2**31:
            raise InvalidInput("the sum could wrap around modulo 2^32: lower frac_bits")

    @cached_property
    def _roster_positions(self) -> dict[str, int]:
        return {member: k for k, member in enumerate(self.roster)}

    @cached_property
    def _digest(self) -> str:
        data = self.model_dump(mode="json")
        data["clip_norm"] = repr(float(self.clip_norm))
        data["noise_sigma"] = repr(float(self.noise_sigma))
        return hashlib.sha256(canonical_json(data)).hexdigest()

    def digest(self) -> str:
        """SHA-256 of the canonical parameters (floats written with repr, exactly reproducible)."""
        return self._digest

    def path(self, kind: str) -> str:
        """The path signed in a client message of this session and round."""
        return f"/secagg/{self.session_id}/{self.round_id}/{kind}"

    def holder_index(self, instance_id: str) -> int:
        """Shamir evaluation point of a roster member (1-based position in the sorted roster)."""
        position = self._roster_positions.get(instance_id)
        if position is None:
            raise CryptoError(f"{instance_id} is not in this aggregation's roster")
        return position + 1


# --------------------------------------------------------------------------- messages

Kind = Literal["advertise", "share_keys", "masked_input", "unmask"]


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: str
    round_id: int
    params_digest: str
    sender: str


class AdvertiseKeys(_Payload):
    kind: Literal["advertise"] = "advertise"
    c_public_key: str = Field(description="base64 X25519 key for share encryption")
    s_public_key: str = Field(description="base64 X25519 key for mask agreement")


class ShareKeys(_Payload):
    kind: Literal["share_keys"] = "share_keys"
    self_seed_commitment: str = Field(description="base64 PRF commitment to the self-mask seed")
    ciphertexts: dict[str, str] = Field(description="recipient instance id -> base64 ciphertext")


class MaskedInput(_Payload):
    kind: Literal["masked_input"] = "masked_input"
    vector: str = Field(description="base64 of the masked vector, little-endian uint32")


class Unmasking(_Payload):
    kind: Literal["unmask"] = "unmask"
    mask_key_shares: dict[str, str] = Field(description="dropped owner -> base64 share of s key")
    self_seed_shares: dict[str, str] = Field(description="surviving owner -> base64 share of b")


_PAYLOADS: dict[str, type[_Payload]] = {
    "advertise": AdvertiseKeys,
    "share_keys": ShareKeys,
    "masked_input": MaskedInput,
    "unmask": Unmasking,
}


class SignedMessage(BaseModel):
    """A client message: the payload (JSON) and the identity's envelope over its canonical form."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    envelope: Envelope
    payload: dict[str, Any]

    def body(self) -> bytes:
        return canonical_json(self.payload)

    def wire_size(self) -> int:
        """Bytes of the serialised message (what an HTTP body would carry)."""
        return len(self.model_dump_json().encode("utf-8"))


class KeyRoster(BaseModel):
    """Server -> clients after round 0: every accepted (signed) key advertisement."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: str
    round_id: int
    adverts: list[SignedMessage]


class ShareInbox(BaseModel):
    """Server -> one client after round 1: U2 and the share ciphertexts addressed to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: str
    round_id: int
    recipient: str
    senders: list[str]
    ciphertexts: dict[str, str]


class SurvivorList(BaseModel):
    """Server -> clients after round 2: U3, the clients whose masked inputs are in the sum."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: str
    round_id: int
    survivors: list[str]


@dataclass(frozen=True)
class AggregateResult:
    """What the server learns: the noisy sum (integer and dequantised) and who is in it."""

    int_sum: np.ndarray  # int64, fixed-point units
    float_sum: np.ndarray  # float64, int_sum / scale
    contributors: list[str]  # U3
    recovered_dropouts: list[str]  # U2 \ U3, whose pairwise masks were removed
    noise_sigma: float  # std of the noise in float_sum (float units)
    norm: float  # ||int_sum||_2
    norm_bound: float  # refusal bound it was checked against


# --------------------------------------------------------------------------- primitives


def prg_uint32(seed: bytes, dim: int) -> np.ndarray:
    """Expand a >= 128-bit seed into ``dim`` uniform uint32 values with SHAKE-256."""
    if len(seed) < 16:
        raise InvalidInput("PRG seeds have at least 128 bits")
    stream = hashlib.shake_256(_PRG_DOMAIN + seed).digest(4 * dim)
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32)


def _x25519(private_key: bytes, public_key: bytes) -> bytes:
    try:
        return nacl.bindings.crypto_scalarmult(private_key, public_key)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, TypeError) as exc:
        raise CryptoError("X25519 agreement failed (invalid or low-order public key)") from exc


def _ordered(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def pairwise_mask_seed(
    params: SecAggParams,
    own_id: str,
    own_private: bytes,
    own_public: bytes,
    peer_id: str,
    peer_public: bytes,
) -> bytes:
    """Seed s_uv, equal for both parties: KDF(X25519) bound to session, round, params, parties."""
    shared = _x25519(own_private, peer_public)
    (low_id, high_id) = _ordered(own_id, peer_id)
    low_pk, high_pk = (own_public, peer_public) if own_id == low_id else (peer_public, own_public)
    return derive_key(
        shared,
        "secagg/pairwise-mask/v1",
        params.session_id,
        params.round_id,
        params.digest(),
        low_id,
        high_id,
        low_pk,
        high_pk,
    )


def _share_key(
    params: SecAggParams, digest: str, own_id: str, own_private: bytes, peer_id: str,
    peer_public: bytes,
) -> bytes:
    shared = _x25519(own_private, peer_public)
    low_id, high_id = _ordered(own_id, peer_id)
    return derive_key(
        shared, "secagg/share-encryption/v1", params.session_id, params.round_id, digest,
        low_id, high_id,
    )


def _share_ad(params: SecAggParams, digest: str, sender: str, recipient: str) -> bytes:
    """Associated data of a share ciphertext: direction and context, unambiguously encoded."""
    return encode_context(
        "secagg/share/v1", (params.session_id, params.round_id, digest, sender, recipient)
    )


def self_mask_seed(params: SecAggParams, owner: str, seed: bytes) -> bytes:
    return derive_key(seed, "secagg/self-mask/v1", params.session_id, params.round_id,
                      params.digest(), owner)


def self_seed_commitment(params: SecAggParams, owner: str, seed: bytes) -> bytes:
    """Hiding, binding commitment to b (a PRF of a 256-bit random key) checked after recovery."""
    return derive_key(seed, "secagg/self-seed-commitment/v1", params.session_id,
                      params.round_id, params.digest(), owner)


def _uniform01(n: int) -> np.ndarray:
    """Uniform [0, 1) doubles from the OS CSPRNG (53-bit resolution)."""
    raw = np.frombuffer(os.urandom(8 * n), dtype="<u8")
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


def quantise(vector: np.ndarray, params: SecAggParams) -> np.ndarray:
    """L2-clip to ``clip_norm``, scale by 2^frac_bits, stochastic rounding (unbiased) to int64."""
    x = np.asarray(vector, dtype=np.float64)
    if x.shape != (params.dim,):
        raise InvalidInput(f"input must have shape ({params.dim},), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InvalidInput("input has NaN or infinite values")
    norm = float(np.linalg.norm(x))
    if norm > params.clip_norm:
        x = x * (params.clip_norm / norm)
    scaled = x * params.scale
    floor = np.floor(scaled)
    return (floor + (_uniform01(params.dim) < (scaled - floor))).astype(np.int64)


def _to_ring(values: np.ndarray) -> np.ndarray:
    return (values % MODULUS).astype(np.uint32)


def _from_ring(values: np.ndarray) -> np.ndarray:
    signed = values.astype(np.int64)
    signed[signed >= 2**31] -= MODULUS
    return signed


def _decode_vector(text: str, dim: int) -> np.ndarray:
    raw = b64decode(text, what="masked vector", length=4 * dim)
    return np.frombuffer(raw, dtype="<u4").astype(np.uint32)


def _sign(identity: Identity, params: SecAggParams, payload: _Payload) -> SignedMessage:
    data = payload.model_dump(mode="json")
    envelope = identity.sign(SECAGG_METHOD, params.path(payload.kind), canonical_json(data))  # type: ignore[attr-defined]
    return SignedMessage(envelope=envelope, payload=data)


def _parse_payload(msg: SignedMessage, kind: str) -> _Payload:
    try:
        payload = _PAYLOADS[kind].model_validate(msg.payload)
    except ValidationError as exc:
        raise InvalidInput(f"malformed {kind} message: {exc.errors()[0]['msg']}") from exc
    return payload


def _check_context(payload: _Payload, params: SecAggParams, digest: str, sender: str) -> None:
    if payload.session_id != params.session_id or payload.round_id != params.round_id:
        raise CryptoError("message belongs to another session or round")
    if payload.params_digest != digest:
        raise CryptoError("message was made with different aggregation parameters")
    if payload.sender != sender:
        raise CryptoError("payload sender differs from the signing identity")


# --------------------------------------------------------------------------- client


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
        self._peers: dict[str, tuple[bytes, bytes]] = {}  # U1: id -> (c_pk, s_pk)
        self._u2: list[str] = []
        self._held: dict[str, tuple[bytes, bytes]] = {}  # owner -> (s-key share, b share)
        self._share_keys: dict[str, bytes] = {}  # peer -> pairwise share-encryption key
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
        """Verify every advertisement, then send each peer its encrypted shares of (s key, b)."""
        self._advance(1)
        params = self.params
        if roster.session_id != params.session_id or roster.round_id != params.round_id:
            raise CryptoError("key roster belongs to another session or round")
        for msg in roster.adverts:
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
        own = (bytes(self._c_key.public_key), bytes(self._s_key.public_key))
        if self._peers.get(self.instance_id) != own:
            raise CryptoError("the key roster does not carry this client's own keys")
        if len(self._peers) < params.threshold:
            raise AggregationAborted(
                f"only {len(self._peers)} participants advertised keys; {params.threshold} needed"
            )
        dealer = ShamirDealer(params.n, params.threshold)
        shares = dealer.split_serialised([bytes(self._s_key), self._self_seed])
        c_private = bytes(self._c_key)
        ciphertexts: dict[str, str] = {}
        for peer, (c_pk, _) in self._peers.items():
            mine = shares[params.holder_index(peer) - 1]
            if peer == self.instance_id:
                self._held[peer] = (mine[0], mine[1])
                continue
            # Fixed-length binary plaintext (two serialised shares); who sent it to whom, and for
            # which session and round, is bound by the key derivation and the associated data.
            plaintext = mine[0] + mine[1]
            key = _share_key(params, self._digest, self.instance_id, c_private, peer, c_pk)
            self._share_keys[peer] = key
            blob = aead_encrypt(key, plaintext, _share_ad(params, self._digest, self.instance_id, peer))
            ciphertexts[peer] = b64encode(blob)
        payload = ShareKeys(
            session_id=params.session_id,
            round_id=params.round_id,
            params_digest=self._digest,
            sender=self.instance_id,
            self_seed_commitment=b64encode(
                self_seed_commitment(params, self.instance_id, self._self_seed)
            ),
            ciphertexts=ciphertexts,
        )
        return _sign(self.identity, params, payload)

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
        own_index = params.holder_index(self.instance_id)
        for sender, blob_b64 in inbox.ciphertexts.items():
            key = self._share_keys[sender]
            blob = b64decode(blob_b64, what="share ciphertext")
            ad = _share_ad(params, self._digest, sender, self.instance_id)
            plain = aead_decrypt(key, blob, ad)
            if len(plain) % 2:
                raise CryptoError("share plaintext has the wrong length")
            half = len(plain) // 2
            pair = (plain[:half], plain[half:])
            for raw in pair:
                threshold, index, secret_len, _ = unpack_share(raw)
                if index != own_index or threshold != params.threshold:
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
                params, self.instance_id, s_private, s_public, peer, self._peers[peer][1]
            )
            mask = prg_uint32(seed, params.dim)
            if self.instance_id < peer:
                y += mask
            else:
                y -= mask
        payload = MaskedInput(
            session_id=params.session_id,
            round_id=params.round_id,
            params_digest=self._digest,
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
            params_digest=self._digest,
            sender=self.instance_id,
            mask_key_shares=mask_key_shares,
            self_seed_shares=self_seed_shares,
        )
        return _sign(self.identity, params, payload)


# --------------------------------------------------------------------------- server


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

DropPoint = Literal["before_advertise", "after_advertise", "after_share_keys", "after_masked_input"]


@dataclass
class SimulationReport:
    """Outcome and costs of :func:`simulate` (CPU seconds and serialised bytes per party)."""

    result: AggregateResult
    clients: dict[str, SecAggClient]
    client_cpu: dict[str, float] = field(default_factory=dict)
    client_bytes_sent: dict[str, int] = field(default_factory=dict)
    server_cpu: float = 0.0
    server_bytes_sent: int = 0


def simulate(
    params: SecAggParams,
    identities: Sequence[Identity],
    inputs: Mapping[str, np.ndarray],
    verifier: Verifier,
    dropouts: Mapping[str, DropPoint] | None = None,
) -> SimulationReport:
    """Run one aggregation in-process with the real client and server state machines.

    Messages are serialised to JSON and parsed back on every hop, as a transport would; the
    ``dropouts`` map says at which point a client stops responding. Used by tests and benchmarks.
    """
    drops = dict(dropouts or {})
    server = SecAggServer(params, verifier, {i.instance_id: i.public_key for i in identities})
    clients = {i.instance_id: SecAggClient(i, params) for i in identities}
    cpu = {cid: 0.0 for cid in clients}
    sent = {cid: 0 for cid in clients}
    server_cpu = 0.0
    server_sent = 0

    def hop(model: BaseModel) -> Any:
        return type(model).model_validate_json(model.model_dump_json())

    def client_call(cid: str, fn: Any, *args: Any) -> SignedMessage:
        start = time.process_time()
        msg = fn(*args)
        cpu[cid] += time.process_time() - start
        sent[cid] += msg.wire_size()
        return hop(msg)

    def server_call(fn: Any, *args: Any) -> Any:
        nonlocal server_cpu
        start = time.process_time()
        out = fn(*args)
        server_cpu += time.process_time() - start
        return out

    active = [c for c in clients if drops.get(c) != "before_advertise"]
    for cid in active:
        server_call(server.receive_advertisement, client_call(cid, clients[cid].advertise_keys))
    roster = server_call(server.close_advertisements)
    roster_wire = roster.model_dump_json()
    # Every client receives the same bytes; parse them once (the parsed model is immutable and
    # clients only read it), which keeps large simulations quick without changing any party's work.
    roster_received = KeyRoster.model_validate_json(roster_wire)
    active = [c for c in active if drops.get(c) != "after_advertise"]
    for cid in active:
        server_sent += len(roster_wire.encode("utf-8"))
        msg = client_call(cid, clients[cid].share_keys, roster_received)
        server_call(server.receive_shares, msg)
    inboxes = server_call(server.close_shares)
    active = [c for c in active if drops.get(c) != "after_share_keys"]
    for cid in active:
        wire = inboxes[cid].model_dump_json()
        server_sent += len(wire.encode("utf-8"))
        msg = client_call(
            cid, clients[cid].masked_input, ShareInbox.model_validate_json(wire), inputs[cid]
        )
        server_call(server.receive_masked_input, msg)
    survivors = server_call(server.close_masked_inputs)
    survivors_wire = survivors.model_dump_json()
    survivors_received = SurvivorList.model_validate_json(survivors_wire)
    active = [c for c in active if drops.get(c) != "after_masked_input"]
    for cid in active:
        server_sent += len(survivors_wire.encode("utf-8"))
        msg = client_call(cid, clients[cid].unmask, survivors_received)
        server_call(server.receive_unmasking, msg)
    result = server_call(server.finalize)
    return SimulationReport(
        result=result,
        clients=clients,
        client_cpu=cpu,
        client_bytes_sent=sent,
        server_cpu=server_cpu,
        server_bytes_sent=server_sent,
    )
