"""The coordinator's privacy accounting of rounds: each member's ledger, what a window costs,
who can afford a round, and the charge of an attempt.

Why apart from the round engine: these are the privacy figures of a round computed from the
mechanism's parameters (the noise a round's ``SecAggParams`` actually carry), which the engine,
the service (a member's status) and the tests all read; the engine only decides *when* to charge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone

from continuum_mcp._db import SqlDatabase
from continuum_mcp.errors import PrivacyBudgetExceeded
from continuum_mcp.federation.coordinator.config import CoordinatorConfig
from continuum_mcp.federation.participant import sybil_noise_factor
from continuum_mcp.privacy.dp import gdp_epsilon
from continuum_mcp.privacy.ledger import PrivacyLedger, PrivacySpend
from continuum_mcp.privacy.modes import PrivacyMode
from continuum_mcp.secagg import SecAggParams

logger = logging.getLogger(__name__)


class RoundPrivacy:
    """Every member's coordinator-side ledger (in ``db``, a component of the store) under the federation's mode."""

    def __init__(self, db: SqlDatabase, config: CoordinatorConfig, mode: PrivacyMode,
                 now: Callable[[], float]) -> None:
        self._db = db
        self.config = config
        self.mode = mode
        self.now = now

    def ledger(self, instance_id: str) -> PrivacyLedger:
        return PrivacyLedger(db=self._db, identity=instance_id, budget_epsilon=self.mode.budget_epsilon,
                             delta=self.mode.delta, window=timedelta(days=self.config.window_days),
                             lifetime=self.mode.lifetime_budget(), clock=self._clock)

    def _clock(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=timezone.utc)

    def spent(self, instance_id: str) -> float:
        """Every purpose's spends of the window composed (releases and learning sessions)."""
        with self.ledger(instance_id) as ledger:
            return ledger.status().total_epsilon

    def window_spend(self, params: SecAggParams) -> PrivacySpend:
        """The window's spend with the noise ``params`` actually carry from the honest survivors
        alone (the sybil-calibration factor taken out, as the clients charge): noise std per unit
        of the quantised clip (the sensitivity of the released sum), not per unit of the float clip."""
        honest = params.noise_sigma / sybil_noise_factor(params.n, self.config.sybil_fraction, params.survivor_floor)
        return self.mode.window_spend(honest / params.quantised_sensitivity)

    def round_epsilon(self, params: SecAggParams | None = None) -> float:
        """Epsilon of one window's release at the mode's delta, from the spend the ledgers record."""
        spend = self.mode.round_spend() if params is None else self.window_spend(params)
        assert spend.mu is not None
        return gdp_epsilon(spend.mu, self.mode.delta - spend.extra_delta)

    def eligible(self, members: Iterable[str]) -> list[str]:
        """Members whose ledger affords this round (others wait, nothing lost)."""
        spend = self.mode.round_spend()
        out = []
        for m in members:
            with self.ledger(m) as ledger:
                if ledger.check(spend).allowed:
                    out.append(m)
                else:
                    logger.info("member %s is past its privacy budget; its submission waits", m)
        return out

    def charge_attempt(self, params: SecAggParams, members: Iterable[str]) -> None:
        """Charge each member whose masked input this attempt received the window's spend, one
        label per attempt (its session id ``<fed>/r<round>/a<attempt>``) as the clients do: the
        attempt belongs to the round's window, and an attempt that aborted after masked inputs were
        sent could still have been unmasked by a malicious coordinator. Idempotent per (member,
        attempt), so a transaction retried (or taken over by another process) charges once."""
        spend = self.window_spend(params)
        for m in sorted(members):
            try:
                with self.ledger(m) as ledger:
                    ledger.spend(spend, round_id=params.session_id)
            except PrivacyBudgetExceeded:
                logger.warning("member %s is past its privacy budget; spend not recorded", m)


__all__ = ["RoundPrivacy"]
