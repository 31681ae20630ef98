"""The local outbox: planned patterns in *plain text*, on this machine only (``outbox.db``, 0600).

Why: contributions are encrypted for the round that is current when they are actually sent, so
a coordinator that is down, or a round that is busy aggregating, never loses one. ``outbox``
holds what waits; ``submitted`` what went to a round (``pending`` until that round's secure
aggregation is released, then ``aggregated``), which is also what the secagg input is built from.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from continuum_mcp._sqlite import Database
from continuum_mcp.crypto.cipher import FederationCipher
from continuum_mcp.errors import WrongPhase
from continuum_mcp.federation.api import CoordinatorAPI
from continuum_mcp.federation.client._sentlog import record_sent
from continuum_mcp.federation.protocol import ContributionReceipt, ModeName
from continuum_mcp.federation.submission import PlannedPattern, build_contribution, choose_for_round

logger = logging.getLogger(__name__)

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, created_at REAL NOT NULL,
    patterns TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS submitted (round_id INTEGER NOT NULL, slot INTEGER NOT NULL,
    pattern TEXT NOT NULL, submitted_at REAL NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
    PRIMARY KEY (round_id, slot))
"""


class Outbox(Database):
    """outbox.db: queued contributions, and what was submitted to which round."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, OUTBOX_SCHEMA, private=True, what="federation outbox")

    def size(self) -> int:
        return int(self.read("SELECT COUNT(*) FROM outbox")[0][0])

    def queue(self, planned: Sequence[PlannedPattern]) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO outbox (created_at, patterns) VALUES (?, ?)",
                      (time.time(), json.dumps([p.model_dump() for p in planned])))

    def submitted(self, round_id: int, *, up_to: bool = False) -> list[PlannedPattern]:
        """Pending submitted patterns of ``round_id`` (or of every round up to it, oldest first)."""
        where = "round_id <= ?" if up_to else "round_id = ?"
        rows = self.read(f"SELECT pattern FROM submitted WHERE status = 'pending' AND {where} ORDER BY round_id",
                            (round_id,))
        return [PlannedPattern.model_validate_json(r[0]) for r in rows]

    def drain(self, api: CoordinatorAPI, cipher: FederationCipher, federation_mode: ModeName, cap: int
              ) -> ContributionReceipt | None:
        """Send the outbox (merged with what this round already holds) for the current round.

        Returns None when there is nothing to send or the round is not collecting; raises
        CoordinatorUnavailable (the outbox stays) when the coordinator cannot be reached."""
        rows = self.read("SELECT id, patterns FROM outbox ORDER BY id")
        if not rows:
            return None
        state = api.round_current()
        if state.phase != "collecting":
            return None
        r = state.round_id
        queued = [PlannedPattern.model_validate(d) for _, pats in rows for d in json.loads(pats)]
        chosen = choose_for_round(self.submitted(r) + queued, cap)  # later queued contributions win per slot
        try:
            receipt = api.contribute(build_contribution(chosen, r, cipher, federation_mode))
        except WrongPhase:
            return None  # the round closed meanwhile: stays queued, re-encrypted next time
        now = time.time()
        with self.tx() as c:
            c.execute("DELETE FROM submitted WHERE round_id = ? AND status = 'pending'", (r,))
            c.executemany("INSERT OR REPLACE INTO submitted (round_id, slot, pattern, submitted_at, status) "
                          "VALUES (?, ?, ?, ?, 'pending')", [(r, p.slot, p.model_dump_json(), now) for p in chosen])
            c.execute("DELETE FROM outbox WHERE id <= ?", (rows[-1][0],))
        record_sent(self.path.parent, r, chosen, federation_mode)  # what left, for the user to see later
        logger.info("submitted %d pattern(s) to round %d", len(chosen), r)
        return receipt

    def mark_aggregated(self, round_id: int) -> None:
        """The rounds up to ``round_id`` were released: their submissions are spent."""
        with self.tx() as c:
            c.execute("UPDATE submitted SET status = 'aggregated' WHERE round_id <= ? AND status = 'pending'",
                      (round_id,))

    def clear(self) -> int:
        """Forget every queued and submitted pattern; returns how many queued contributions went."""
        with self.tx() as c:
            n = int(c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            c.execute("DELETE FROM outbox")
            c.execute("DELETE FROM submitted")
        return n
