"""A member's own record of the governance statements it signed and the coordinator accepted.

Why: the coordinator publishes the statements every client counts, and could silently leave one
out (a ballot it does not like, an opt-out it ignores). Each client knows what it signed itself:
it keeps every accepted statement here (in the federation directory, so that every process of the
instance, the CLI included, checks the same record) and, whenever it counts a proposal, refuses
with :class:`StatementDropped` when one of its own is not among the published ones.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

from continuum_mcp._sqlite import atomic_write
from continuum_mcp.errors import StatementDropped
from continuum_mcp.federation.governance import SignedStatement

#: proposal id -> the statements this member signed about it (and its proposals), as accepted
OWN_STATEMENTS_FILE = "own_statements.json"


class OwnStatements:
    """The accepted statements of one member, in memory and, with ``directory``, on disk."""

    def __init__(self, directory: Path | None) -> None:
        self._path = None if directory is None else Path(directory) / OWN_STATEMENTS_FILE
        self._memory: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def _load(self) -> dict[str, list[str]]:
        if self._path is None:
            return self._memory
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): [str(s) for s in v] for k, v in data.items()} if isinstance(data, dict) else {}

    def add(self, proposal_id: str, signed: SignedStatement) -> None:
        with self._lock:
            data = self._load()
            entry = signed.model_dump_json()
            if entry not in data.setdefault(proposal_id, []):
                data[proposal_id].append(entry)
            if self._path is None:
                self._memory = data
            else:
                atomic_write(self._path, json.dumps(data, sort_keys=True).encode("utf-8"))

    def of(self, proposal_id: str) -> list[SignedStatement]:
        with self._lock:
            return [SignedStatement.model_validate_json(s) for s in self._load().get(proposal_id, [])]

    def check_listed(self, proposal_id: str, published: Sequence[SignedStatement]) -> None:
        """``StatementDropped`` naming each own statement about ``proposal_id`` that ``published``
        (the report's proposal and statements) does not carry exactly as signed."""
        listed = {s.envelope.signature for s in published}
        missing = [s for s in self.of(proposal_id) if s not in published]
        if missing:
            what = ", ".join(f"{s.type} signed at {s.envelope.timestamp}"
                             + (" (altered)" if s.envelope.signature in listed else "") for s in missing)
            raise StatementDropped(
                f"the coordinator does not publish {len(missing)} statement(s) you signed about {proposal_id}: "
                f"{what}. Its count is not the members': not taking part (report it to the federation)")


__all__ = ["OWN_STATEMENTS_FILE", "OwnStatements"]
