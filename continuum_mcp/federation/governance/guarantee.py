"""A proposal's parameters and computed guarantee, as every party derives them (a module of its
own, outside the package face: it needs the learning package, which needs the wire contract).

The proposer's own numbers are never trusted: the coordinator (to refuse a proposal over the cap)
and every client (in its tally) parse the signed ``params_json`` with the learning package's
model and run its accountant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.governance._statements import ProposalStatement
from continuum_mcp.federation.learning import SessionGuarantee, SessionParams, session_guarantee


def proposal_params(prop: ProposalStatement) -> SessionParams:
    """The session parameters a proposal signs (``InvalidInput`` if they do not parse or name
    another kind than the proposal)."""
    try:
        params = SessionParams.model_validate_json(prop.params_json)
    except ValueError as exc:
        raise InvalidInput(f"params_json: not valid session parameters ({str(exc).splitlines()[0]})") from exc
    if params.kind != prop.kind:
        raise InvalidInput(f"params_json names kind {params.kind!r} but the proposal is of kind {prop.kind!r}")
    return params


def proposal_guarantee(prop: ProposalStatement) -> SessionGuarantee | None:
    """The computed guarantee, or None when the parameters are not ones this party can run."""
    try:
        return session_guarantee(proposal_params(prop))
    except InvalidInput:
        return None


def session_label(federation_id: str, proposal_id: str) -> str:
    """The secure-aggregation label of a session's rounds: ``<federation>/<proposal id>``, so a
    round id is ``<federation>/<proposal id>/r<round>/a<attempt>`` (ledger labels stay per federation)."""
    return f"{federation_id}/{proposal_id}"




def context_after(kind: Any, initial: Any, results: Sequence[Any]) -> Any:
    """The context the next round reads: ``initial`` folded through the released rounds' results
    (``kind.next_context``). Coordinator and clients both build it from the published results,
    so every participant computes against the same public state."""
    ctx = initial
    for r in results:
        ctx = kind.next_context(ctx, r)
    return ctx


__all__ = ["context_after", "proposal_guarantee", "proposal_params", "session_label"]
