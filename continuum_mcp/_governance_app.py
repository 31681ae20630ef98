"""The governance methods of :class:`continuum_mcp.app.Continuum` (a mixin, so the core API
class stays small): each is one call on the member's :class:`federation.client.Governance`,
which signs, publishes and counts for itself."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

Choice = Literal["approve", "reject", "abstain"]  # governance.Choice, without importing it at start-up


class SessionKindInfo(BaseModel):
    """A session kind with what it touches and the computed guarantee of its default parameters."""

    kind: str
    data_touched: str
    default_params: dict[str, Any]
    guarantee: dict[str, Any]


def session_kinds() -> list[SessionKindInfo]:
    """Every supported session kind, its data description and the guarantee its defaults give,
    computed by the accountant (what docs/governance.md prints)."""
    from continuum_mcp.federation.learning import SESSION_KINDS, SessionParams, session_guarantee

    out = []
    for name, kind in sorted(SESSION_KINDS.items()):
        params = SessionParams.build(kind=name)
        out.append(SessionKindInfo(kind=name, data_touched=kind.data_touched, default_params=params.model_dump(),
                                   guarantee=session_guarantee(params).model_dump(mode="json")))
    return out


def kinds_table_markdown() -> str:
    """The table of docs/governance.md: each default session kind's computed guarantee
    (regenerate with ``python -m continuum_mcp._governance_app``; a docs test compares)."""
    rows = ["| session kind | rounds | noise multiplier | clip | min participants | epsilon (whole session) "
            "| delta |", "|---|---|---|---|---|---|---|"]
    for k in session_kinds():
        g = k.guarantee
        rows.append(f"| {k.kind} | {g['rounds']} | {g['noise_multiplier']:g} | {g['clip']:g} | "
                    f"{g['min_participants']} | {g['epsilon']:.2f} | {g['delta']:g} |")
    return "\n".join(rows)


class GovernanceMethods:
    """Mixed into ``Continuum``; needs its ``_require()`` (the joined FederationClient)."""

    def _require(self) -> Any:  # provided by Continuum
        raise NotImplementedError

    def session_kinds(self) -> list[SessionKindInfo]:
        return session_kinds()

    def propose(self, kind: str, *, title: str, expected_benefit: str, data_description: str | None = None,
                discussion_seconds: int | None = None, **params: Any) -> Any:
        return self._require().governance.propose(kind, title=title, expected_benefit=expected_benefit,
                                                  data_description=data_description,
                                                  discussion_seconds=discussion_seconds, **params)

    def proposals(self) -> list[Any]:
        return self._require().governance.proposals()

    def vote_proposal(self, proposal_id: str, choice: Choice, concern: str = "") -> Any:
        return self._require().governance.vote(proposal_id, choice, concern)

    def opt_in(self, proposal_id: str) -> Any:
        return self._require().governance.opt_in(proposal_id)

    def opt_out(self, proposal_id: str) -> Any:
        return self._require().governance.opt_out(proposal_id)

    def halt(self, proposal_id: str) -> Any:
        return self._require().governance.halt(proposal_id)

    def session_report(self, proposal_id: str) -> Any:
        """The report with this client's own tally (``CryptoError`` if the coordinator contradicts it)."""
        return self._require().governance.verified(proposal_id)

    def adopt(self, proposal_id: str, approve: bool = True) -> Any:
        return self._require().governance.adopt(proposal_id, approve)

    def take_part(self, proposal_id: str, *, timeout_seconds: float = 60.0) -> Any:
        return self._require().governance.participate(proposal_id, timeout_seconds=timeout_seconds)


__all__ = ["GovernanceMethods", "SessionKindInfo", "kinds_table_markdown", "session_kinds"]


if __name__ == "__main__":
    print(kinds_table_markdown())
