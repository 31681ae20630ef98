"""Credit rules: what members earn and pay, and the balance they see.

Why through the store's transaction: every charge is a check of the balance and a journal entry in
the same write transaction of the caller (SQLite ``BEGIN IMMEDIATE``; on PostgreSQL the advisory
lock of the store, or of the member for a query or download), so concurrent spends (threads or
processes) queue on that lock and can neither overdraw nor double-spend. The journal is
append-only (triggers refuse UPDATE/DELETE); the balance is its sum.
"""

from __future__ import annotations

from continuum_mcp._db import Connection
from collections.abc import Iterable, Mapping

from continuum_mcp.errors import Conflict, InsufficientCredits
from continuum_mcp.federation.coordinator import _credit_sql as sql
from continuum_mcp.federation.coordinator.store import day_start, month_start
from continuum_mcp.federation.protocol import CreditBalance, CreditRules


class Credits:
    """The federation's credit rules applied inside store transactions (pass ``conn`` and ``now``)."""

    def __init__(self, rules: CreditRules, require_contribution: bool) -> None:
        self.rules = rules
        self.require_contribution = require_contribution

    def balance(self, conn: Connection, caller: str, now: float) -> CreditBalance:
        rules = self.rules
        s = sql.summary(conn, caller, month_start(now), day_start(now))
        pending = min(s.pending_patterns * rules.earn_per_pattern,
                      max(0.0, rules.earn_daily_limit - s.pattern_earned_today))
        free_left = max(0, rules.free_queries_per_day - s.free_queries_today) if self.require_contribution \
            else rules.free_queries_per_day
        return CreditBalance(available=s.available, earned_this_month=s.earned_since, spent_this_month=s.spent_since,
                             pending=pending, free_queries_left_today=free_left)

    @staticmethod
    def charge(conn: Connection, caller: str, cost: float, kind: str, ref: str, now: float) -> None:
        """Check and debit in the caller's IMMEDIATE transaction: never negative, never twice."""
        if cost <= 0:
            return
        available = sql.balance(conn, caller)
        if available + 1e-9 < cost:
            raise InsufficientCredits(
                f"this needs {cost:g} credits and you have {available:g}; contribute patterns or verify "
                "released ones to earn credits")
        if not sql.journal(conn, caller, -cost, kind, ref, now):
            raise Conflict(f"charge {kind}/{ref} was already made")

    def charge_query(self, conn: Connection, caller: str, *, priority: bool, level: str, ref: str,
                     now: float) -> tuple[float, bool]:
        """Charge one query: (charged, free_tier). Free when contribution is not required."""
        if not self.require_contribution:
            return 0.0, False
        free = sql.count_kind_since(conn, caller, "free_query", day_start(now)) < self.rules.free_queries_per_day
        charged = 0.0 if free else self.rules.cost_query
        if priority and level != "extensive":
            charged += self.rules.cost_priority
        self.charge(conn, caller, charged, "query", ref, now)
        if free:
            sql.journal(conn, caller, 0.0, "free_query", ref, now)
        return charged, free

    def charge_download(self, conn: Connection, caller: str, ref: str, now: float) -> float:
        charged = self.rules.cost_download if self.require_contribution else 0.0
        self.charge(conn, caller, charged, "download", ref, now)
        return charged

    def earn_round(self, conn: Connection, round_id: int, patterns: Mapping[str, int],
                   members: Iterable[str], now: float) -> None:
        """Credit each released member per pattern, within the daily limit (idempotent per round)."""
        for m in members:
            earned_today = sql.sum_kind_since(conn, m, "pattern", day_start(now))
            amount = min(patterns.get(m, 0) * self.rules.earn_per_pattern,
                         max(0.0, self.rules.earn_daily_limit - earned_today))
            if amount > 0:
                sql.journal(conn, m, amount, "pattern", f"r{round_id}", now)

    def earn_verification(self, conn: Connection, caller: str, pattern_id: str, now: float) -> None:
        sql.journal(conn, caller, self.rules.earn_per_verification, "verify", pattern_id, now)

    def earn_quality(self, conn: Connection, members: Iterable[str], pattern_id: str, now: float) -> None:
        for m in members:
            sql.journal(conn, m, self.rules.earn_per_quality_release, "quality", pattern_id, now)


__all__ = ["Credits"]
