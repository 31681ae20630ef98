"""What this instance's federation membership did, read back for people: the privacy budget over
time, what each contribution sent, and the released patterns received.

Why apart from ``app.py``: these are read-only views over three local files (``ledger.db``,
``sent.db``, ``cache.db``) that the dashboard shows and any other adapter may show; ``Continuum``
delegates here. Every figure is composed by the ledger's own ``compose_epsilon`` from the recorded
mechanisms. Nothing here creates an identity key or a file that was not there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.client import FederationClient, PatternCache
from continuum_mcp.federation.client._sentlog import SENT_DB, SentContribution, SentLog
from continuum_mcp.privacy.ledger import LedgerEntry, PrivacyLedger, compose_epsilon
from continuum_mcp.privacy.modes import PrivacyMode, default_policy


class BudgetPoint(BaseModel):
    """The privacy budget as it stood just after ``at`` (a spend, a spend leaving the window, now)."""

    at: datetime
    window_epsilon: float = Field(description="Composed epsilon of the spends in the rolling window ending at `at`.")
    lifetime_epsilon: float = Field(description="Composed epsilon of every recorded spend up to `at`.")


class PrivacyHistory(BaseModel):
    """The privacy ledger over time, for a plot: every spend and the composed budget after each event."""

    joined: bool
    mode: str = Field(description="The privacy mode whose budget, delta and window the figures use.")
    budget_epsilon: float
    delta: float
    window_days: int
    window_epsilon: float = Field(description="Spent in the rolling window now.")
    lifetime_epsilon: float = Field(description="Every recorded spend composed (no window).")
    spends: list[LedgerEntry] = Field(default_factory=list)
    points: list[BudgetPoint] = Field(default_factory=list)


class ReceivedPattern(BaseModel):
    """A released pattern in the local cache (decrypted here), as received; not a memory."""

    pattern_id: str
    slot: int
    summary: str
    phrases: list[str]
    statements: list[str]
    contributor_count: float = Field(description="Noisy (DP) count of distinct contributors, shown no lower than "
                                                 "the federation's release floor.")
    verification_count: int
    votes_up: int
    votes_down: int
    released_at_round: int


def budget_points(entries: Sequence[LedgerEntry], delta: float, window: timedelta, now: datetime,
                  lifetime_delta: float | None = None) -> list[BudgetPoint]:
    """The rolling-window and lifetime epsilon after every event up to ``now`` (the value is
    constant between events: plot it as steps). The lifetime composes at the lifetime bound's
    delta (release v2 states it so: each window uses up its own delta)."""
    life_delta = lifetime_delta if lifetime_delta is not None else delta
    events = sorted({e.spent_at for e in entries} | {e.leaves_window_at for e in entries if e.leaves_window_at <= now}
                    | {now})
    return [BudgetPoint(at=t, window_epsilon=compose_epsilon([e.spend for e in entries if t - window < e.spent_at <= t],
                                                             delta),
                        lifetime_epsilon=compose_epsilon([e.spend for e in entries if e.spent_at <= t], life_delta))
            for t in events]


def _default_mode() -> PrivacyMode:
    policy = default_policy()
    return policy.mode(policy.default_mode)


def open_ledger(federation_dir: Path, fed: FederationClient | None) -> tuple[PrivacyLedger, str] | None:
    """A ledger handle with the budget of the federation's mode (of the default mode after leaving:
    the ledger stays), or None when nothing was ever recorded. The caller closes it."""
    m = fed.membership() if fed is not None else None
    if fed is not None and m is not None:
        return fed.ledger(m), m.federation.privacy_mode
    path, key = federation_dir / "ledger.db", federation_dir / "identity.key"
    if not (path.exists() and key.exists()):
        return None
    from continuum_mcp.crypto.identity import Identity

    mode = _default_mode()
    return PrivacyLedger(path, identity=Identity.load_or_create(key).instance_id, budget_epsilon=mode.budget_epsilon,
                         delta=mode.delta, window=timedelta(days=mode.window_days)), mode.name


def privacy_history(federation_dir: Path, fed: FederationClient | None, *, now: datetime | None = None
                    ) -> PrivacyHistory:
    joined = fed is not None and fed.membership() is not None
    opened = open_ledger(federation_dir, fed)
    if opened is None:
        mode = _default_mode()
        return PrivacyHistory(joined=joined, mode=mode.name, budget_epsilon=mode.budget_epsilon, delta=mode.delta,
                              window_days=mode.window_days, window_epsilon=0.0, lifetime_epsilon=0.0)
    ledger, mode_name = opened
    with ledger:
        entries, status = ledger.history(), ledger.status()
    points = budget_points(entries, ledger.delta, ledger.window, now or datetime.now(timezone.utc),
                           default_policy().mode(mode_name).lifetime_delta)
    return PrivacyHistory(joined=joined, mode=mode_name, budget_epsilon=ledger.budget_epsilon, delta=ledger.delta,
                          window_days=ledger.window.days, window_epsilon=status.spent_epsilon,
                          lifetime_epsilon=points[-1].lifetime_epsilon, spends=entries, points=points)


def contribution_history(federation_dir: Path, *, offset: int = 0, limit: int = 50) -> list[SentContribution]:
    if offset < 0 or not 1 <= limit <= 1000:
        raise InvalidInput("offset must be >= 0 and limit in 1..1000")
    path = federation_dir / SENT_DB
    if not path.exists():
        return []
    log = SentLog(path)
    try:
        return log.entries(offset=offset, limit=limit)
    finally:
        log.close()


def received_patterns(federation_dir: Path, fed: FederationClient | None) -> list[ReceivedPattern]:
    m = fed.membership() if fed is not None else None
    path = federation_dir / "cache.db"
    if m is None or not path.exists():
        return []
    cache = PatternCache(path)
    try:
        rows = cache.rows()
    finally:
        cache.close()
    floor = float(m.federation.min_contributors)
    return [ReceivedPattern(pattern_id=r.pattern_id, slot=r.slot, summary=r.summary, phrases=r.phrases,
                            statements=r.statements, contributor_count=round(max(r.contributors, floor), 2),
                            verification_count=r.verifications, votes_up=r.votes_up, votes_down=r.votes_down,
                            released_at_round=r.released_at_round)
            for r in sorted(rows, key=lambda r: (-r.released_at_round, r.slot))]


__all__ = ["BudgetPoint", "PrivacyHistory", "ReceivedPattern", "budget_points", "contribution_history",
           "open_ledger", "privacy_history", "received_patterns"]
