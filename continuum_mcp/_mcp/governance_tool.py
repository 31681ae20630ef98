"""The one governance tool, ``federation_governance``: learning sessions by ``action``.

Why one tool with an action: eight small tools would crowd the model's tool list for something a
user does rarely; the arguments stay strict (each action checks that it got what it needs, and
nothing else is accepted). Shown only while this instance is a member, like the other
federation tools.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from continuum_mcp._mcp.surface import ContinuumServer
from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.governance import PROPOSAL_ID_PATTERN

Action = Literal["kinds", "propose", "proposals", "vote", "opt_in", "take_part", "opt_out", "halt", "report", "adopt"]
_NEEDS_ID = {"vote", "opt_in", "take_part", "opt_out", "halt", "report", "adopt"}
#: how long one take_part call takes part before it returns (call again while the session runs)
TAKE_PART_SECONDS = 60.0
_ONLY: dict[str, set[str]] = {  # which optional arguments each action takes
    "propose": {"kind", "title", "expected_benefit", "data_description", "discussion_days", "params"},
    "vote": {"choice", "concern"}, "adopt": {"choice"},
}


def register_governance_tool(mcp: ContinuumServer, run: Any, annotations: Any) -> None:
    @mcp.tool(title="Federation governance", annotations=annotations)
    async def federation_governance(
        action: Annotated[Action, Field(description="kinds: session kinds and their computed guarantees; propose; "
                                        "proposals: list; vote: a ballot; opt_in (show the user what it touches "
                                        "first); take_part: send this instance's share of the running session's "
                                        "rounds (up to a minute a call); opt_out; halt: vote to stop a running "
                                        "session; report: counted by this client; adopt: vote on a session's "
                                        "result.")],
        proposal_id: Annotated[str | None, Field(pattern=PROPOSAL_ID_PATTERN, description="The proposal, for "
                                                 "every action but kinds, propose and proposals.")] = None,
        choice: Annotated[Literal["approve", "reject", "abstain"] | None, Field(
            description="vote: approve, reject or abstain; adopt: approve or reject.")] = None,
        concern: Annotated[str | None, Field(max_length=2000, description="vote: an optional concern.")] = None,
        kind: Annotated[str | None, Field(max_length=64, description="propose: the session kind.")] = None,
        title: Annotated[str | None, Field(max_length=200, description="propose: one line.")] = None,
        expected_benefit: Annotated[str | None, Field(max_length=2000, description="propose.")] = None,
        data_description: Annotated[str | None, Field(max_length=2000, description="propose: what it touches "
                                                      "(default: the kind's own description).")] = None,
        discussion_days: Annotated[float | None, Field(gt=0, le=365, description="propose.")] = None,
        params: Annotated[dict[str, Any] | None, Field(description="propose: session parameters (rounds, "
                                                       "noise_multiplier, clip, ...).")] = None,
    ) -> dict[str, Any]:
        """Propose, discuss and consent to federated learning sessions; the client counts the
        signed ballots itself and refuses sessions its own tally does not approve."""
        given = {k for k, v in dict(choice=choice, concern=concern, kind=kind, title=title,
                                    expected_benefit=expected_benefit, data_description=data_description,
                                    discussion_days=discussion_days, params=params).items() if v is not None}
        extra = given - _ONLY.get(action, set())
        if extra:
            raise InvalidInput(f"action {action} takes no {', '.join(sorted(extra))}")
        if action in _NEEDS_ID and proposal_id is None:
            raise InvalidInput(f"action {action} needs proposal_id")
        pid = str(proposal_id)

        def call(app: Any) -> Any:
            if action == "kinds":
                return {"kinds": [k.model_dump(mode="json") for k in app.session_kinds()]}
            if action == "propose":
                if not (kind and title and expected_benefit):
                    raise InvalidInput("action propose needs kind, title and expected_benefit")
                return app.propose(kind, title=title, expected_benefit=expected_benefit,
                                   data_description=data_description,
                                   discussion_seconds=None if discussion_days is None else int(discussion_days * 86400),
                                   **(params or {}))
            if action == "proposals":
                return {"proposals": [p.model_dump(mode="json") for p in app.proposals()]}
            if action == "vote":
                if choice is None:
                    raise InvalidInput("action vote needs choice")
                return app.vote_proposal(pid, choice, concern or "")
            if action == "adopt":
                if choice not in ("approve", "reject"):  # a vote is never implied
                    raise InvalidInput("action adopt needs choice approve or reject")
                return app.adopt(pid, approve=choice != "reject")
            if action == "take_part":
                return app.take_part(pid, timeout_seconds=TAKE_PART_SECONDS)
            return {"opt_in": app.opt_in, "opt_out": app.opt_out, "halt": app.halt,
                    "report": app.session_report}[action](pid)

        out = await run(call)
        return out if isinstance(out, dict) else out.model_dump(mode="json")
