"""The governance methods of :class:`continuum_mcp.app.Continuum` (a mixin, so the core API
class stays small): each is one call on the member's :class:`federation.client.Governance`,
which signs, publishes and counts for itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from continuum_mcp._sqlite import atomic_write
from continuum_mcp.errors import InvalidInput

Choice = Literal["approve", "reject", "abstain"]  # governance.Choice, without importing it at start-up

#: the longest one take-part call may run (a session round's phases are minutes at most)
MAX_TAKE_PART_SECONDS = 3600.0

#: the member's own record of its standing opt-ins (proposal id -> kind), in the federation dir
CONSENTS_FILE = "consents.json"


def consents(federation_dir: Path) -> dict[str, str]:
    """The standing opt-ins recorded on this machine (empty without a file or with a bad one)."""
    try:
        data = json.loads((Path(federation_dir) / CONSENTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def consented_to_usage(federation_dir: Path) -> bool:
    """Whether the user stands opted in to a usage-statistics session: the only time the local
    usage record records anything (``Continuum``'s default answer)."""
    return "usage_statistics" in consents(federation_dir).values()


def set_consent(federation_dir: Path | None, proposal_id: str, kind: str | None) -> None:
    """Record (``kind``) or drop (None) this member's standing opt-in to ``proposal_id``."""
    if federation_dir is None:
        return
    current = consents(federation_dir)
    if kind is None:
        current.pop(proposal_id, None)
    else:
        current[proposal_id] = kind
    atomic_write(Path(federation_dir) / CONSENTS_FILE, json.dumps(current, sort_keys=True).encode("utf-8"))


class SessionKindInfo(BaseModel):
    """A session kind with what it touches and the computed guarantee of its default parameters."""

    kind: str
    data_touched: str
    default_params: dict[str, Any]
    guarantee: dict[str, Any]


def session_kinds() -> list[SessionKindInfo]:
    """Every supported session kind, its data description and the guarantee its defaults give,
    computed by the accountant (docs/governance.md prints them: ``learning.guarantees_markdown``)."""
    from continuum_mcp.federation.learning import SESSION_KINDS, SessionParams, session_guarantee

    out = []
    for name, kind in sorted(SESSION_KINDS.items()):
        params = SessionParams.build(kind=name)
        out.append(SessionKindInfo(kind=name, data_touched=kind.data_touched, default_params=params.model_dump(),
                                   guarantee=session_guarantee(params).model_dump(mode="json")))
    return out


class GovernanceMethods:
    """Mixed into ``Continuum``; needs its ``_require()`` (the joined FederationClient)."""

    def _require(self) -> Any:  # provided by Continuum
        raise NotImplementedError

    @property
    def _gov(self) -> Any:
        from continuum_mcp.federation.client._governance import member_governance

        return member_governance(self._require())

    def session_kinds(self) -> list[SessionKindInfo]:
        return session_kinds()

    def propose(self, kind: str, *, title: str, expected_benefit: str, data_description: str | None = None,
                discussion_seconds: int | None = None, **params: Any) -> Any:
        return self._gov.propose(kind, title=title, expected_benefit=expected_benefit,
                                                  data_description=data_description,
                                                  discussion_seconds=discussion_seconds, **params)

    def proposals(self) -> list[Any]:
        return self._gov.proposals()

    def vote_proposal(self, proposal_id: str, choice: Choice, concern: str = "") -> Any:
        return self._gov.vote(proposal_id, choice, concern)

    def opt_in(self, proposal_id: str) -> Any:
        return self._gov.opt_in(proposal_id)

    def opt_out(self, proposal_id: str) -> Any:
        return self._gov.opt_out(proposal_id)

    def halt(self, proposal_id: str) -> Any:
        return self._gov.halt(proposal_id)

    def session_report(self, proposal_id: str) -> Any:
        """The report with this client's own tally (``CryptoError`` if the coordinator contradicts it)."""
        return self._gov.report(proposal_id)

    def adopt(self, proposal_id: str, approve: bool = True) -> Any:
        return self._gov.adopt(proposal_id, approve)

    def take_part(self, proposal_id: str, *, timeout_seconds: float = 60.0) -> Any:
        """Take part for at most ``timeout_seconds`` (checked first: a NaN, zero or negative time
        would return at once looking like "nothing to do", an endless one would never return)."""
        if isinstance(timeout_seconds, bool) or not (0 < float(timeout_seconds) <= MAX_TAKE_PART_SECONDS):
            raise InvalidInput(f"take-part time must be more than 0 and at most {MAX_TAKE_PART_SECONDS:g} seconds, "
                               f"not {timeout_seconds!r}")
        return self._gov.participate(proposal_id, timeout_seconds=float(timeout_seconds))


__all__ = ["CONSENTS_FILE", "GovernanceMethods", "SessionKindInfo", "consented_to_usage", "consents", "session_kinds",
           "set_consent"]

