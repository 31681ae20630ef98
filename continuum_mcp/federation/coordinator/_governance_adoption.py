"""Which codebook the federation adopted by vote, as the coordinator counts it, cached.

Why a cache, and keyed by the database: the coordinator asks on every contribute, slots and query
request (the version in use decides which slot ids it accepts and serves), and counting means
checking every adoption vote's signature. The answer changes only with the governance state, so it
is kept under :func:`._governance_sql.adoption_key`, read in the same snapshot as the count: any
new statement, completed session, or member admitted or gone -- through any coordinator process
on the database -- makes the next request count again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from continuum_mcp.federation.coordinator import _governance_sql as gsql
from continuum_mcp.federation.governance import Tally


class AdoptionCount:
    """The adopted codebook of ``store``; ``tally(conn, row)`` is the coordinator's own count."""

    def __init__(self, store: Any, tally: Callable[[Any, gsql.ProposalRow], Tally]) -> None:
        self._store, self._tally = store, tally
        self._cached: tuple[tuple[Any, ...], Any] | None = None
        self.recounts = 0  #: how often the votes were counted (the cache's misses)

    def codebook(self) -> Any:
        """The codebook adopted by vote last, or None."""
        with self._store.reading() as conn:
            key = gsql.adoption_key(conn)
            cached = self._cached
            if cached is not None and cached[0] == key:
                return cached[1]
            codebook = self._count(conn)
        self._cached = (key, codebook)
        return codebook

    def _count(self, conn: Any) -> Any:
        from continuum_mcp.privacy.codebook import Codebook

        self.recounts += 1
        rows = [r for r in gsql.proposals(conn) if r.kind == "codebook_refinement" and r.phase == "completed"
                and r.result_json]
        for row in reversed(rows):
            res = json.loads(row.result_json or "{}")
            if "digest" in res and self._tally(conn, row).adopted(res["version"], res["digest"]):
                return Codebook.from_b64(res["vectors_b64"], res["slots"], res["dim"], parent=None)
        return None


__all__ = ["AdoptionCount"]
