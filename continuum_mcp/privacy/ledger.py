"""Persistent per-identity privacy ledger over a rolling window, with a lifetime bound beside it.

Why a ledger: every contribution round releases something about the user, and DP guarantees only
hold for the *composition* of everything released. The ledger records each round's spend in
SQLite (WAL, one transaction per spend, ``BEGIN IMMEDIATE`` so that two processes cannot both read
"enough budget left" and both spend), or, for a coordinator on PostgreSQL, in its database (the same
SQL; each spend under an advisory lock of its identity), composes the spends of the last ``window`` exactly, warns at
``warn_fraction`` of the budget and refuses past it, saying when budget returns. A second,
longer horizon (``lifetime``, e.g. 365 days at its own epsilon and delta) bounds what repeated
windows add up to; a spend must fit both.

Purposes: every spend carries one (``release``: a pattern release window; ``learning``: a round of
a governance-approved learning session). Each purpose has its own window budget, so a member who
contributed to a release can still take part in a learning session of the same window; the ONE
lifetime bound covers every purpose together, and :attr:`LedgerStatus.total_epsilon` is the exact
composition of all purposes' spends of the window (what the member has really disclosed).

Composition:
- Gaussian releases (described by their noise multiplier sigma / L2-sensitivity, i.e.
  mu = 1/multiplier in Gaussian DP) compose exactly: mu adds in quadrature (Dong, Roth & Su).
  A Gaussian release may carry an ``extra_delta`` (e.g. the threshold-failure probability of a
  partition selection); those add up and are taken off the budget's delta.
- Spends given as (epsilon, delta) are composed with the Gaussian part by dp-accounting's
  privacy-loss-distribution (PLD) accountant (pessimistic, so a safe upper bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from continuum_mcp._db import Connection, SqlDatabase
from continuum_mcp._sqlite import Database
from continuum_mcp.privacy.dp import compose_gdp, gdp_epsilon
from continuum_mcp.errors import InvalidInput, PrivacyBudgetExceeded

#: what a spend paid for; each purpose has its own window budget, the lifetime bound is shared
Purpose = Literal["release", "learning"]
PURPOSES: tuple[str, ...] = ("release", "learning")

#: the ledger's schema (SQLite dialect; translated for PostgreSQL) and its version. Version 2 added
#: ``purpose`` (version-1 spends were all releases: :func:`migrate_ledger` keeps them as such).
LEDGER_SCHEMA_VERSION = 2
LEDGER_SCHEMA = _SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_spends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL,
    round_id TEXT NOT NULL,
    spent_at REAL NOT NULL,
    noise_multiplier REAL,
    epsilon REAL,
    delta REAL,
    extra_delta REAL NOT NULL DEFAULT 0,
    purpose TEXT NOT NULL DEFAULT 'release',
    UNIQUE (identity, round_id)
);
CREATE INDEX IF NOT EXISTS privacy_spends_identity_time ON privacy_spends (identity, spent_at);
"""


def migrate_ledger(conn: Connection, found: int) -> None:
    """Bring a ledger of schema ``found`` to :data:`LEDGER_SCHEMA_VERSION` in the opening
    transaction, keeping every spend (portable SQL: SQLite and PostgreSQL)."""
    if found < 2:
        conn.execute("ALTER TABLE privacy_spends ADD COLUMN purpose TEXT NOT NULL DEFAULT 'release'")

# Spends that land within this much of the budget still fit (root-finder round-off only).
_TOLERANCE = 1e-9
_PLD_DISCRETIZATION = 1e-4


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class PrivacySpend(BaseModel):
    """One release: either a Gaussian mechanism (noise_multiplier = sigma / L2 sensitivity, plus an
    optional extra_delta) or a generic (epsilon, delta)-DP release."""

    model_config = ConfigDict(frozen=True)

    noise_multiplier: float | None = Field(default=None, gt=0)
    epsilon: float | None = Field(default=None, ge=0)
    delta: float | None = Field(default=None, ge=0, lt=1)
    extra_delta: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _one_form(self) -> PrivacySpend:
        gaussian = self.noise_multiplier is not None
        approx = self.epsilon is not None or self.delta is not None
        if gaussian == approx:
            raise ValueError("give either noise_multiplier or (epsilon, delta), not both or neither")
        if approx and (self.epsilon is None or self.delta is None):
            raise ValueError("an (epsilon, delta) spend needs both epsilon and delta")
        if approx and self.extra_delta:
            raise ValueError("extra_delta only applies to Gaussian spends; fold it into delta")
        return self

    @classmethod
    def gaussian(cls, noise_multiplier: float, extra_delta: float = 0.0) -> PrivacySpend:
        return cls(noise_multiplier=noise_multiplier, extra_delta=extra_delta)

    @classmethod
    def approx_dp(cls, epsilon: float, delta: float) -> PrivacySpend:
        return cls(epsilon=epsilon, delta=delta)

    @property
    def mu(self) -> float | None:
        return None if self.noise_multiplier is None else 1.0 / self.noise_multiplier


class LedgerBudget(BaseModel):
    """A budget over a rolling horizon: what all spends of any ``window`` may compose to."""

    model_config = ConfigDict(frozen=True)

    window: timedelta
    epsilon: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)


class LedgerEntry(BaseModel):
    """A recorded spend, as shown by :meth:`PrivacyLedger.history`."""

    model_config = ConfigDict(frozen=True)

    identity: str
    round_id: str
    spent_at: datetime
    spend: PrivacySpend
    in_window: bool
    leaves_window_at: datetime
    purpose: str = "release"


class LedgerStatus(BaseModel):
    """The budget of one purpose as it stands, or would stand after a proposed spend, with the
    composed total of every purpose beside it."""

    model_config = ConfigDict(frozen=True)

    identity: str
    purpose: str = "release"
    budget_epsilon: float
    delta: float
    spent_epsilon: float
    epsilon_after: float
    remaining_epsilon: float
    allowed: bool
    warning: bool
    already_spent: bool = False
    returns_at: datetime | None = None
    message: str
    lifetime_budget_epsilon: float | None = None
    lifetime_delta: float | None = None
    lifetime_spent_epsilon: float | None = None
    lifetime_epsilon_after: float | None = None
    total_epsilon: float = Field(default=0.0, description="Every purpose's spends of the window composed exactly "
                                                          "(at ``delta``): what the member has disclosed in it.")
    total_epsilon_after: float = 0.0
    by_purpose: dict[str, float] = Field(default_factory=dict, description="Each purpose's own window spend.")


def compose_epsilon(spends: list[PrivacySpend], delta: float) -> float:
    """Epsilon at ``delta`` of the composition of ``spends`` (exact GDP, PLD when mixed)."""
    if not spends:
        return 0.0
    extra = math.fsum(s.extra_delta for s in spends)
    approx = [s for s in spends if s.noise_multiplier is None]
    budget_delta = delta - extra
    if budget_delta <= 0:
        return math.inf
    mu = compose_gdp([s.mu for s in spends if s.mu is not None])
    if not approx:
        return gdp_epsilon(mu, budget_delta)
    if math.fsum(s.delta or 0.0 for s in approx) >= budget_delta:
        return math.inf
    # dp-accounting is imported only here, for mixed spends: it is slow to import.
    from dp_accounting.pld import common as pld_common
    from dp_accounting.pld import privacy_loss_distribution as pld

    dist: pld.PrivacyLossDistribution | None = None
    if mu > 0:
        dist = pld.from_gaussian_mechanism(1.0 / mu, value_discretization_interval=_PLD_DISCRETIZATION)
    for s in approx:
        assert s.epsilon is not None and s.delta is not None
        part = pld.from_privacy_parameters(
            pld_common.DifferentialPrivacyParameters(s.epsilon, s.delta),
            value_discretization_interval=_PLD_DISCRETIZATION,
        )
        dist = part if dist is None else dist.compose(part)
    assert dist is not None
    return float(max(0.0, dist.get_epsilon_for_delta(budget_delta)))


class PrivacyLedger:
    """Per-identity privacy budget over a rolling window, persistent in SQLite at ``path`` or in
    an already opened ledger database ``db`` (e.g. the coordinator's PostgreSQL; not closed here).

    Several processes may open the same file; each spend is one write transaction (``BEGIN
    IMMEDIATE``; on PostgreSQL an advisory lock of the identity), so check-and-record is atomic and
    the budget is never exceeded. A spend is idempotent per ``round_id``: a retried round is
    recorded once.

    A handle spends and checks under one purpose: ``release`` with the window budget given here
    (``budget_epsilon``, ``delta``, ``window``), or, after :meth:`for_purpose`, another purpose with
    its own window budget. The ``lifetime`` bound applies to all purposes together.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        db: SqlDatabase | None = None,
        identity: str = "local",
        budget_epsilon: float = 10.0,
        delta: float = 1e-6,
        window: timedelta = timedelta(days=30),
        warn_fraction: float = 0.8,
        clock: Callable[[], datetime] = _utc_now,
        busy_timeout_s: float = 60.0,
        lifetime: LedgerBudget | None = None,
    ) -> None:
        if not (budget_epsilon > 0 and math.isfinite(budget_epsilon)):
            raise InvalidInput(f"budget_epsilon must be positive, got {budget_epsilon}")
        if not (0 < delta < 1):
            raise InvalidInput(f"delta must be in (0, 1), got {delta}")
        if window <= timedelta(0):
            raise InvalidInput("window must be positive")
        if not (0 < warn_fraction <= 1):
            raise InvalidInput(f"warn_fraction must be in (0, 1], got {warn_fraction}")
        if not identity:
            raise InvalidInput("identity must not be empty")
        if (path is None) == (db is None):
            raise InvalidInput("give the ledger a path or an opened database, not both or neither")
        self.path = None if path is None else Path(path)
        self.identity = identity
        self.purpose: str = "release"
        self.budget_epsilon = float(budget_epsilon)
        self.delta = float(delta)
        self.window = window
        self.warn_fraction = float(warn_fraction)
        if lifetime is not None and lifetime.window < window:
            raise InvalidInput("the lifetime horizon must be at least as long as the window")
        self.lifetime = lifetime
        self._release = LedgerBudget(window=window, epsilon=self.budget_epsilon, delta=self.delta)
        self._clock = clock
        self._owned = db is None
        if db is None:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The project's one SQLite helper: synchronous=FULL (a recorded spend survives a power cut,
            # or the budget would be under-counted), IMMEDIATE transactions, a schema version.
            db = Database(self.path, LEDGER_SCHEMA, version=LEDGER_SCHEMA_VERSION, migrate=migrate_ledger,
                          timeout=busy_timeout_s, what="privacy ledger")
        self._db: SqlDatabase = db

    def for_purpose(self, purpose: Purpose, budget: LedgerBudget | None = None) -> PrivacyLedger:
        """This handle, from now on spending and checking under ``purpose`` against ``budget`` (its
        own window budget; ``release`` defaults to the one given at construction). Returns self."""
        if purpose not in PURPOSES:
            raise InvalidInput(f"purpose: one of {list(PURPOSES)}, not {purpose!r}")
        if budget is None and purpose != "release":
            raise InvalidInput(f"the {purpose} purpose needs its window budget")
        b = budget or self._release
        if self.lifetime is not None and self.lifetime.window < b.window:
            raise InvalidInput("the lifetime horizon must be at least as long as the window")
        self.purpose, self.budget_epsilon, self.delta, self.window = purpose, b.epsilon, b.delta, b.window
        return self

    # -- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._owned:
            self._db.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> AbstractContextManager[Connection]:
        """A write transaction: takes the (identity's) write lock before reading, so check+spend is atomic."""
        return self._db.tx(self.identity)

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise InvalidInput("the ledger clock must return timezone-aware datetimes")
        return now

    @staticmethod
    def _row_spend(row: tuple[object, ...]) -> PrivacySpend:
        nm, eps, dl, extra = row
        if nm is not None:
            return PrivacySpend(noise_multiplier=float(nm), extra_delta=float(extra))  # type: ignore[arg-type]
        return PrivacySpend(epsilon=float(eps), delta=float(dl))  # type: ignore[arg-type]

    def _rows(self, conn: Connection, now: datetime, window: timedelta) -> list[tuple[float, str, PrivacySpend]]:
        """(time, purpose, spend) of every spend of the last ``window``, oldest first."""
        rows = conn.execute(
            "SELECT spent_at, purpose, noise_multiplier, epsilon, delta, extra_delta FROM privacy_spends "
            "WHERE identity = ? AND spent_at > ? ORDER BY spent_at, id",
            (self.identity, (now - window).timestamp()),
        ).fetchall()
        return [(float(r[0]), str(r[1]), self._row_spend(r[2:])) for r in rows]

    def _find_round(self, conn: Connection, round_id: str) -> tuple[str, PrivacySpend] | None:
        row = conn.execute(
            "SELECT purpose, noise_multiplier, epsilon, delta, extra_delta FROM privacy_spends "
            "WHERE identity = ? AND round_id = ?",
            (self.identity, round_id),
        ).fetchone()
        return None if row is None else (str(row[0]), self._row_spend(row[1:]))

    def _evaluate(self, conn: Connection, proposed: PrivacySpend | None, already: bool = False) -> LedgerStatus:
        """The status of this handle's purpose (after ``proposed``), the lifetime over every purpose,
        and the composed total of every purpose's spends of the window."""
        now = self._now()
        longest = max(self.window, self._release.window)
        rows = self._rows(conn, now, longest)
        start = (now - self.window).timestamp()
        window = [(ts, s) for ts, p, s in rows if p == self.purpose and ts > start]
        lifetime_rows = None
        if self.lifetime is not None:
            lifetime_rows = [(ts, s) for ts, _, s in self._rows(conn, now, self.lifetime.window)]
        status = self._status(window, proposed, already, lifetime_rows)
        by_purpose: dict[str, list[PrivacySpend]] = {}
        for ts, p, s in rows:
            if ts > (now - (self.window if p == self.purpose else self._release.window)).timestamp():
                by_purpose.setdefault(p, []).append(s)
        every = [s for spends in by_purpose.values() for s in spends]
        total = compose_epsilon(every, self.delta)
        after = total if proposed is None or already else compose_epsilon(every + [proposed], self.delta)
        update: dict[str, object] = {
            "total_epsilon": total, "total_epsilon_after": after,
            "by_purpose": {p: compose_epsilon(sp, self.delta) for p, sp in sorted(by_purpose.items())}}
        if set(by_purpose) - {self.purpose}:
            update["message"] = status.message + f"; all purposes together: epsilon {after:.2f} over the window"
        return status.model_copy(update=update)

    def _status(
        self, window: list[tuple[float, PrivacySpend]], proposed: PrivacySpend | None, already: bool = False,
        lifetime_rows: list[tuple[float, PrivacySpend]] | None = None,
    ) -> LedgerStatus:
        spends = [s for _, s in window]
        spent = compose_epsilon(spends, self.delta)
        after = spent if proposed is None or already else compose_epsilon(spends + [proposed], self.delta)
        allowed = after <= self.budget_epsilon + _TOLERANCE
        warning = after >= self.warn_fraction * self.budget_epsilon
        life: dict[str, float | None] = {}
        life_allowed = True
        if self.lifetime is not None and lifetime_rows is not None:
            lt = self.lifetime
            l_spends = [s for _, s in lifetime_rows]
            l_spent = compose_epsilon(l_spends, lt.delta)
            l_after = l_spent if proposed is None or already else compose_epsilon(l_spends + [proposed], lt.delta)
            life_allowed = l_after <= lt.epsilon + _TOLERANCE
            life = dict(lifetime_budget_epsilon=lt.epsilon, lifetime_delta=lt.delta,
                        lifetime_spent_epsilon=l_spent, lifetime_epsilon_after=l_after)
        returns_at: datetime | None = None
        if not allowed and proposed is not None:
            returns_at = self._return_time(window, proposed)
        if allowed and not life_allowed and proposed is not None:
            assert self.lifetime is not None and lifetime_rows is not None
            returns_at = self._return_time(lifetime_rows, proposed, self.lifetime)
        what = self._budget_noun()
        if already:
            message = "this round was already recorded; nothing new was spent"
        elif not allowed:
            message = self._refusal_message(after, returns_at)
        elif not life_allowed:
            assert self.lifetime is not None
            message = (f"this {self._spend_noun()} would bring the lifetime budget (all purposes) to epsilon "
                       f"{life['lifetime_epsilon_after']:.2f}, over the limit of {self.lifetime.epsilon:.2f} "
                       f"(delta {self.lifetime.delta:g}) per {self.lifetime.window.days} days" + (
                           "" if returns_at is None else
                           f"; enough budget returns at {returns_at.isoformat(timespec='seconds')}"))
        elif warning:
            message = (
                f"{what} {after:.2f} of {self.budget_epsilon:g} (epsilon at delta {self.delta:g}) "
                f"over the last {self.window.days} days: at or above {self.warn_fraction:.0%}"
            )
        else:
            message = f"{what} {after:.2f} of {self.budget_epsilon:g} used"
        return LedgerStatus(
            identity=self.identity,
            purpose=self.purpose,
            budget_epsilon=self.budget_epsilon,
            delta=self.delta,
            spent_epsilon=spent,
            epsilon_after=after,
            remaining_epsilon=max(0.0, self.budget_epsilon - spent),
            allowed=allowed and life_allowed,
            warning=warning,
            already_spent=already,
            returns_at=returns_at,
            message=message,
            **life,  # type: ignore[arg-type]
        )

    def _budget_noun(self) -> str:
        return "privacy budget" if self.purpose == "release" else f"{self.purpose} privacy budget"

    def _spend_noun(self) -> str:
        return "contribution" if self.purpose == "release" else f"{self.purpose} round"

    def _return_time(self, window: list[tuple[float, PrivacySpend]], proposed: PrivacySpend,
                     budget: LedgerBudget | None = None) -> datetime | None:
        """Earliest time at which enough old spends have left the window for ``proposed`` to fit."""
        b = budget or LedgerBudget(window=self.window, epsilon=self.budget_epsilon, delta=self.delta)
        for i, (ts, _) in enumerate(window):
            rest = [s for _, s in window[i + 1 :]]
            if compose_epsilon(rest + [proposed], b.delta) <= b.epsilon + _TOLERANCE:
                return datetime.fromtimestamp(ts, tz=timezone.utc) + b.window
        return None

    def _refusal_message(self, after: float, returns_at: datetime | None) -> str:
        what = self._budget_noun()
        head = (
            f"this {self._spend_noun()} would bring the {what} to epsilon {after:.2f}, over the "
            f"limit of {self.budget_epsilon:g} (delta {self.delta:g}) per {self.window.days} days"
        )
        if returns_at is None:
            return head + "; the spend alone is larger than the whole budget, so it can never be made"
        return head + f"; enough budget returns at {returns_at.isoformat(timespec='seconds')}"

    # -- public API ----------------------------------------------------------------------------

    def spent(self) -> float:
        """Epsilon (at the ledger's delta) this purpose spent within its rolling window, now."""
        return self.status().spent_epsilon

    def remaining(self) -> float:
        """Budget epsilon minus what the window has spent (never negative)."""
        return self.status().remaining_epsilon

    def status(self) -> LedgerStatus:
        """The budget as it stands now."""
        return self._evaluate(self._db, None)

    def check(self, proposed: PrivacySpend) -> LedgerStatus:
        """What the budget would be after ``proposed``, without recording anything."""
        return self._evaluate(self._db, proposed)

    def spent_over(self, period: timedelta, delta: float | None = None) -> float:
        """Epsilon (at ``delta``, default the ledger's) that the spends of every purpose of the last
        ``period`` compose to."""
        rows = self._rows(self._db, self._now(), period)
        return compose_epsilon([s for _, _, s in rows], self.delta if delta is None else delta)

    def spend(self, proposed: PrivacySpend, *, round_id: str) -> LedgerStatus:
        """Record ``proposed`` for ``round_id`` under this handle's purpose atomically, or raise
        PrivacyBudgetExceeded.

        Idempotent: if this identity already recorded ``round_id`` with the same spend and purpose,
        nothing is spent again; a different spend under the same round id is refused as invalid.
        """
        if not round_id:
            raise InvalidInput("round_id must not be empty")
        with self._transaction() as conn:
            previous = self._find_round(conn, round_id)
            if previous is not None:
                if previous != (self.purpose, proposed):
                    raise InvalidInput(f"round {round_id!r} was already recorded with a different spend or purpose")
                return self._evaluate(conn, proposed, already=True)
            status = self._evaluate(conn, proposed)
            if not status.allowed:
                raise PrivacyBudgetExceeded(status.message)
            conn.execute(
                "INSERT INTO privacy_spends (identity, round_id, spent_at, noise_multiplier, epsilon, "
                "delta, extra_delta, purpose) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.identity, round_id, self._now().timestamp(), proposed.noise_multiplier, proposed.epsilon,
                 proposed.delta, proposed.extra_delta, self.purpose),
            )
        return status

    def history(self) -> list[LedgerEntry]:
        """Every recorded spend of this identity (every purpose), oldest first, with whether it still
        counts in its purpose's window (this handle's window for its purpose, the release window else)."""
        now = self._now()
        rows = self._db.execute(
            "SELECT round_id, spent_at, noise_multiplier, epsilon, delta, extra_delta, purpose FROM privacy_spends "
            "WHERE identity = ? ORDER BY spent_at, id",
            (self.identity,),
        ).fetchall()
        out: list[LedgerEntry] = []
        for r in rows:
            at, purpose = datetime.fromtimestamp(float(r[1]), tz=timezone.utc), str(r[6])
            window = self.window if purpose == self.purpose else self._release.window
            out.append(LedgerEntry(identity=self.identity, round_id=str(r[0]), spent_at=at, spend=self._row_spend(r[2:6]),
                                   in_window=at > now - window, leaves_window_at=at + window, purpose=purpose))
        return out
