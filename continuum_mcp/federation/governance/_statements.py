"""Signed governance statements: a proposal, a ballot, an opt-in or opt-out, a halt vote, an
adoption vote. Each is a payload signed by one member's identity key.

Why signed statements and not just signed requests: the coordinator is not trusted to count. It
publishes every statement it received exactly as signed, and every client checks each signature
and counts again (:mod:`._tally`). A request signature proves who sent a request to the
coordinator; a statement signature proves to *everyone else* what a member said.

Payloads are canonical JSON (no floats: numbers that are not integers travel as strings), signed
in an :class:`Envelope` over the pseudo-method ``STATEMENT`` and the path ``/governance/<type>``,
so a statement cannot be passed off as an HTTP request or a secure-aggregation message, and one
type cannot be passed off as another. Every statement names its federation, and all but the
proposal name the proposal (``proposal_id``, a hash of the signed proposal), so a ballot cannot
be replayed into another federation or onto another proposal.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from continuum_mcp.crypto.identity import Identity
from continuum_mcp.crypto.signing import Envelope, canonical_json, verify_signature_only
from continuum_mcp.errors import CryptoError, InvalidInput

STATEMENT_METHOD = "STATEMENT"
MAX_TEXT = 2000
PROPOSAL_ID_PATTERN = r"^prop-[0-9a-f]{20}$"
#: codebook versions: ``v<n>`` shipped, ``c-<24 hex>`` learned (named by content)
VERSION_PATTERN = r"^(v[0-9]{1,6}|c-[0-9a-f]{24})$"

Choice = Literal["approve", "reject", "abstain"]


class _Statement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    federation_id: str = Field(min_length=1, max_length=128)


class ProposalStatement(_Statement):
    """What a proposer asks the federation to learn. ``params_json`` is the session kind's
    parameters exactly as its model serialises them (a string: signed payloads carry no floats);
    the privacy guarantee is *not* part of it, every party computes it from these parameters."""

    type: Literal["proposal"] = "proposal"
    title: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=64, description="A supported session kind.")
    params_json: str = Field(min_length=2, max_length=8000)
    data_description: str = Field(min_length=1, max_length=MAX_TEXT,
                                  description="What the session touches on each instance, in plain words "
                                              "(shown to the user before opt-in).")
    expected_benefit: str = Field(min_length=1, max_length=MAX_TEXT)
    discussion_deadline: int = Field(ge=0, description="Unix seconds: ballots and opt-ins count up to here.")


class BallotStatement(_Statement):
    type: Literal["ballot"] = "ballot"
    proposal_id: str = Field(pattern=PROPOSAL_ID_PATTERN)
    choice: Choice
    concern: str = Field(default="", max_length=MAX_TEXT)


class ConsentStatement(_Statement):
    """Opt in to (or out of) the session of a proposal. Opt-in is needed per session."""

    type: Literal["opt_in", "opt_out"]
    proposal_id: str = Field(pattern=PROPOSAL_ID_PATTERN)


class HaltStatement(_Statement):
    type: Literal["halt"] = "halt"
    proposal_id: str = Field(pattern=PROPOSAL_ID_PATTERN)


class AdoptionStatement(_Statement):
    """A vote on adopting the result of a session (a codebook version), named by version and digest
    so that a vote cannot be carried over to other vectors published under the same name."""

    type: Literal["adopt"] = "adopt"
    proposal_id: str = Field(pattern=PROPOSAL_ID_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    choice: Literal["approve", "reject"]


Statement = Annotated[Union[ProposalStatement, BallotStatement, ConsentStatement, HaltStatement, AdoptionStatement],
                      Field(discriminator="type")]
_STATEMENT = TypeAdapter(Statement)
StatementType = Literal["proposal", "ballot", "opt_in", "opt_out", "halt", "adopt"]


class SignedStatement(BaseModel):
    """A statement's payload (canonical JSON) and the signer's envelope over it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    envelope: Envelope
    payload: dict[str, Any]

    @property
    def signer(self) -> str:
        return self.envelope.instance_id

    @property
    def type(self) -> str:
        return str(self.payload.get("type", ""))


def _path(statement_type: str) -> str:
    return f"/governance/{statement_type}"


def sign_statement(identity: Identity, statement: BaseModel, *, timestamp: int | None = None) -> SignedStatement:
    """Sign ``statement`` with ``identity`` (the envelope's timestamp orders a member's statements)."""
    payload = statement.model_dump(mode="json")
    return SignedStatement(envelope=identity.sign(STATEMENT_METHOD, _path(payload["type"]), canonical_json(payload),
                                                  timestamp=timestamp), payload=payload)


def open_statement(signed: SignedStatement, federation_id: str) -> Any:
    """The statement ``signed`` carries, once its signature, type binding and federation check out
    (``CryptoError`` otherwise; a well-signed but malformed payload is ``InvalidInput``)."""
    try:
        verify_signature_only(signed.envelope, canonical_json(signed.payload))
    except InvalidInput as exc:  # e.g. a float smuggled into the payload
        raise CryptoError(exc.message) from exc
    if signed.envelope.method != STATEMENT_METHOD or signed.envelope.path != _path(signed.type):
        raise CryptoError("the statement was signed as something else than its type")
    try:
        statement = _STATEMENT.validate_python(signed.payload)
    except ValidationError as exc:
        raise InvalidInput(f"malformed {signed.type or 'governance'} statement: {exc.errors()[0]['msg']}") from exc
    if statement.federation_id != federation_id:
        raise CryptoError(f"the statement is for federation {statement.federation_id!r}, not {federation_id!r}")
    return statement


def proposal_id(signed: SignedStatement) -> str:
    """The proposal's id: a hash of the whole signed proposal, which anyone can recompute."""
    return "prop-" + hashlib.sha256(canonical_json(signed.model_dump(mode="json"))).hexdigest()[:20]


def codebook_digest(vectors: Any) -> str:
    """SHA-256 of a codebook's float32 little-endian bytes (what an adoption vote names)."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).hexdigest()


__all__ = [
    "AdoptionStatement", "BallotStatement", "Choice", "ConsentStatement", "HaltStatement", "PROPOSAL_ID_PATTERN",
    "ProposalStatement", "SignedStatement", "Statement", "StatementType", "codebook_digest", "open_statement",
    "proposal_id", "sign_statement",
]
