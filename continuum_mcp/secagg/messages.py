"""The messages of secure aggregation: signed client payloads and the server's broadcasts.

All fields are JSON-safe (bytes as base64) so any transport can carry them. ``PHASES`` names the
four client phases once; the path a client signs and the wire contract both derive from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from continuum_mcp.crypto.identity import Identity
from continuum_mcp.crypto.signing import Envelope, b64decode, canonical_json
from continuum_mcp.errors import CryptoError, InvalidInput
from continuum_mcp.secagg._graph import leaf_hash
from continuum_mcp.secagg.params import SecAggParams

SECAGG_METHOD = "SECAGG"

Kind = Literal["advertise", "share_keys", "masked_input", "unmask"]

PHASES: tuple[Kind, ...] = get_args(Kind)
"""The client phases in protocol order: advertise, share_keys, masked_input, unmask."""


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


def _absent(value: Any) -> bool:
    return value is None


class KeyRoster(BaseModel):
    """Server -> clients after round 0: the accepted (signed) key advertisements.

    Complete graph (Bonawitz): one roster for everyone with every advertisement, and none of the
    optional fields. SecAgg+: one roster per ``recipient`` with the advertisements of its closed
    neighbourhood only, the Merkle root and leaf count of all N sorted advertisements (whose
    hash with the params digest seeds the graph), and each advertisement's leaf index and proof.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: str
    round_id: int
    adverts: list[SignedMessage]
    recipient: str | None = Field(default=None, exclude_if=_absent)
    roster_root: str | None = Field(default=None, exclude_if=_absent,
                                    description="base64 Merkle root of the N sorted adverts")
    roster_size: int | None = Field(default=None, ge=1, exclude_if=_absent, description="N = |U1|")
    leaf_indices: list[int] | None = Field(default=None, exclude_if=_absent)
    proofs: list[str] | None = Field(default=None, exclude_if=_absent,
                                     description="base64 of each advert's sibling hashes, leaf up")


class ShareInbox(BaseModel):
    """Server -> one client after round 1: the members of U2 among its neighbours (all of U2 for
    the complete graph) and the share ciphertexts they addressed to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: str
    round_id: int
    recipient: str
    senders: list[str]
    ciphertexts: dict[str, str]


class SurvivorList(BaseModel):
    """Server -> clients after round 2: the members of U3 (whose masked inputs are in the sum)
    among the recipient's share senders; for the complete graph that is U3, one list for all."""

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

def advert_leaf(msg: SignedMessage) -> bytes:
    """Merkle leaf of a signed advertisement: the hash of its canonical JSON."""
    return leaf_hash(canonical_json(msg.model_dump(mode="json")))


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
