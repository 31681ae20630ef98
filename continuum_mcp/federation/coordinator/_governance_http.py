"""The HTTP handlers of the governance routes (``protocol._governance_routes``): translation only."""

from __future__ import annotations

from typing import Any

from continuum_mcp.errors import NotFound
from continuum_mcp.federation.protocol import GOVERNANCE_STATEMENT_ROUTES, SECAGG_PHASES


def _gov(s: Any) -> Any:
    if s.governance is None:
        raise NotFound("this coordinator runs no governance")
    return s.governance


def _pid(c: Any) -> str:
    return str(c.params["proposal_id"])


def _secagg_post(s: Any, c: Any) -> Any:
    from continuum_mcp.federation.coordinator.http import validate
    from continuum_mcp.secagg import SignedMessage

    kind = str(c.params["kind"])
    if kind not in SECAGG_PHASES:
        raise NotFound(f"unknown secure-aggregation message kind {kind!r}")
    return _gov(s).secagg_post(c.caller, _pid(c), c.round_id, kind, validate(SignedMessage, c.body.message, "message."))


def _statement(expected: str) -> Any:
    return lambda s, c: _gov(s).statement(c.caller, _pid(c), expected, c.body)


GOVERNANCE_HANDLERS: dict[str, Any] = {
    "gov_info": lambda s, c: _gov(s).info(),
    "gov_propose": lambda s, c: _gov(s).propose(c.caller, c.body),
    "gov_proposals": lambda s, c: _gov(s).proposals(),
    "gov_report": lambda s, c: _gov(s).report(_pid(c)),
    **{name: _statement(kind) for name, kind in GOVERNANCE_STATEMENT_ROUTES.items()},
    "session_round": lambda s, c: _gov(s).round_state(c.caller, _pid(c)),
    "session_round_of": lambda s, c: _gov(s).round_state(c.caller, _pid(c), c.round_id),
    "session_secagg_roster": lambda s, c: _gov(s).rounds.key_roster(_pid(c), c.round_id, c.caller),
    "session_secagg_inbox": lambda s, c: _gov(s).rounds.inbox(_pid(c), c.round_id, c.caller),
    "session_secagg_survivors": lambda s, c: _gov(s).rounds.survivors(_pid(c), c.round_id, c.caller),
    "session_secagg_post": _secagg_post,
}

__all__ = ["GOVERNANCE_HANDLERS"]
