"""Privacy modes and contribution levels: the one place that maps them to DP parameters.

Release v2 (DESIGN.md section 2, docs/privacy.md): a window (``window_days``, one contribution
round) is ONE release per user: the noisy distinct-contributor counts of the phrase tokens the
user added (at most C = ``phrases_per_window``, L2 sensitivity sqrt(C)) and the DP centroid sums
of secure aggregation (input clipped to ``centroid_clip``, noise ``centroid_noise_multiplier``
times the clip). Both are Gaussian, so the window is exactly ``mu``-GDP; the mode's whole window
budget (epsilon at delta) is spent in that one shot: ``centroid_share`` of mu^2 on centroids, the
rest on phrases. A lifetime bound caps what repeated windows add up to: at most
``windows_per_year`` windows compose within any 365 days, at delta ``windows_per_year * delta``.

Every figure (sigma, tau, contributors needed, the lifetime epsilon) is computed by
:func:`continuum_mcp.privacy.accounting.calibrate_window` from the mode's parameters; nothing is
typed in. ``continuum-mcp privacy table`` (``continuum_mcp.cli.privacy``) prints the table.
"""

from __future__ import annotations

import math
from datetime import timedelta
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from continuum_mcp.errors import InvalidInput
from continuum_mcp.privacy.accounting import WindowCalibration, calibrate_window, gdp_epsilon
from continuum_mcp.privacy.ledger import LedgerBudget, PrivacySpend

ModeName = Literal["high", "balanced", "open"]
LevelName = Literal["minimal", "standard", "extensive"]

LIFETIME = timedelta(days=365)


class WindowAllocation(BaseModel):
    """Shares of the window's mu^2: the centroids' share, and the rest for phrase selection.

    ``centroids`` is also the squared clip of the secure-aggregation input (the clip is only a
    scale: the noise is calibrated per unit of the clip actually applied)."""

    model_config = ConfigDict(frozen=True)

    centroids: float = Field(ge=0, lt=1)

    @property
    def phrases(self) -> float:
        return 1.0 - self.centroids


class PrivacyMode(BaseModel):
    """A privacy mode: the budget of one release window and what the federation may release."""

    model_config = ConfigDict(frozen=True)

    name: ModeName
    budget_epsilon: float = Field(gt=0, description="epsilon of one window's release (and of any rolling window)")
    delta: float = Field(default=1e-6, gt=0, lt=1)
    window_days: int = Field(default=30, gt=0)
    windows_per_year: int = Field(default=12, gt=0)
    phrases_per_window: int = Field(default=20, gt=0, description="C: new phrases per user per window")
    allocation: WindowAllocation = WindowAllocation(centroids=0.1)
    phrases_released: str
    statements_released: str

    @cached_property
    def calibration(self) -> WindowCalibration:
        return calibrate_window(self.budget_epsilon, self.delta, self.phrases_per_window, self.allocation.centroids)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def sigma(self) -> float:
        """The secure-aggregation noise multiplier: noise std per unit of the (quantised) clip."""
        return self.calibration.centroid_noise_multiplier

    @property
    def centroid_noise_multiplier(self) -> float:
        return self.calibration.centroid_noise_multiplier

    @property
    def centroid_clip(self) -> float:
        """L2 clip of a member's secure-aggregation input (sqrt of the centroid share)."""
        return math.sqrt(self.allocation.centroids)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def count_sigma(self) -> float:
        """Std of the integer noise on each phrase's distinct-contributor count."""
        return self.calibration.sigma

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tau(self) -> int:
        """A phrase is released when its noisy count exceeds this integer."""
        return self.calibration.tau

    def window_spend(self, centroid_noise_multiplier: float | None = None) -> PrivacySpend:
        """What one window's release costs a contributor, from the parameters actually used:
        the phrase selection's mu and the centroids' (noise per unit clip), composed exactly,
        plus the thresholding failure probability as extra delta."""
        cal = self.calibration
        m_c = self.centroid_noise_multiplier if centroid_noise_multiplier is None else centroid_noise_multiplier
        if m_c <= 0:
            raise InvalidInput("the centroid noise multiplier must be positive")
        mu = math.sqrt(cal.mu_phrases ** 2 + (0.0 if math.isinf(m_c) else 1.0 / m_c ** 2))
        return PrivacySpend.gaussian(1.0 / mu, extra_delta=cal.delta_threshold)

    def round_spend(self) -> PrivacySpend:
        """A round is a window's release (one per window): its spend at the calibrated noise."""
        return self.window_spend()

    @property
    def lifetime_delta(self) -> float:
        return self.windows_per_year * self.delta

    @computed_field  # type: ignore[prop-decorator]
    @cached_property
    def lifetime_epsilon(self) -> float:
        """Epsilon (at ``lifetime_delta``) of ``windows_per_year`` windows composed exactly: the
        most a member's ledger lets any 365 days add up to."""
        spend = self.window_spend()
        assert spend.mu is not None
        k = self.windows_per_year
        return gdp_epsilon(math.sqrt(k) * spend.mu, self.lifetime_delta - k * spend.extra_delta)

    def lifetime_budget(self) -> LedgerBudget:
        return LedgerBudget(window=LIFETIME, epsilon=self.lifetime_epsilon + 1e-6, delta=self.lifetime_delta)


class ContributionLevel(BaseModel):
    """How many patterns (slots) one instance feeds into centroids and the preview per window: L.

    The level does not change the DP phrase count: every level adds at most C phrases per window."""

    model_config = ConfigDict(frozen=True)

    name: LevelName
    max_slots: int = Field(gt=0)


class ReleaseRequirement(BaseModel):
    """One row of the privacy table: what a phrase needs to be released, for one mode and level."""

    model_config = ConfigDict(frozen=True)

    mode: ModeName
    level: LevelName
    L: int
    C: int
    epsilon: float
    delta: float
    window_days: int
    sigma: float
    tau: int
    delta_gaussian: float
    delta_threshold: float
    centroid_noise_multiplier: float
    contributors_50: int
    contributors_95: int
    lifetime_epsilon: float
    lifetime_delta: float
    windows_per_year: int


class PrivacyPolicy(BaseModel):
    """All modes and levels, in one immutable object that is passed to whoever needs it."""

    model_config = ConfigDict(frozen=True)

    modes: tuple[PrivacyMode, ...]
    levels: tuple[ContributionLevel, ...]
    max_phrases_per_pattern: int = Field(default=4, gt=0)
    default_mode: ModeName = "high"
    default_level: LevelName = "standard"

    def mode(self, name: str) -> PrivacyMode:
        for m in self.modes:
            if m.name == name:
                return m
        raise InvalidInput(f"unknown privacy mode {name!r}; choose one of {[m.name for m in self.modes]}")

    def level(self, name: str) -> ContributionLevel:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise InvalidInput(f"unknown contribution level {name!r}; choose one of {[lv.name for lv in self.levels]}")

    def with_mode(self, name: str, **changes: object) -> PrivacyPolicy:
        """This policy with mode ``name``'s parameters changed (e.g. a test federation of a
        handful of members with a large budget, or weekly windows); everything is recomputed."""
        fields = {**self.mode(name).model_dump(include=set(PrivacyMode.model_fields)), **changes}
        new = PrivacyMode.model_validate(fields)
        return self.model_copy(update={"modes": tuple(new if m.name == name else m for m in self.modes)})

    def release_requirement(self, mode_name: str, level_name: str, component: str = "phrases") -> ReleaseRequirement:
        """What a phrase needs in one window of ``mode_name`` at ``level_name`` (computed)."""
        if component != "phrases":
            raise InvalidInput(f"release v2 selects phrases only (a released phrase implies its slot), not {component}")
        m, lv = self.mode(mode_name), self.level(level_name)
        cal = m.calibration
        return ReleaseRequirement(
            mode=m.name, level=lv.name, L=lv.max_slots, C=m.phrases_per_window, epsilon=m.budget_epsilon,
            delta=m.delta, window_days=m.window_days, sigma=cal.sigma, tau=cal.tau,
            delta_gaussian=cal.delta_gaussian, delta_threshold=cal.delta_threshold,
            centroid_noise_multiplier=cal.centroid_noise_multiplier, contributors_50=cal.contributors_50,
            contributors_95=cal.contributors_95, lifetime_epsilon=m.lifetime_epsilon,
            lifetime_delta=m.lifetime_delta, windows_per_year=m.windows_per_year)

    def table(self) -> list[ReleaseRequirement]:
        """Every (mode, level) row of the privacy table."""
        return [self.release_requirement(m.name, lv.name) for m in self.modes for lv in self.levels]


def default_policy() -> PrivacyPolicy:
    """The project's modes and levels (DESIGN.md section 2)."""
    return PrivacyPolicy(
        modes=(
            PrivacyMode(name="high", budget_epsilon=10.0, phrases_released="DP-selected",
                        statements_released="never (and never sent)"),
            PrivacyMode(name="balanced", budget_epsilon=20.0, phrases_released="DP-selected",
                        statements_released="never sent (whole-statement DP selection is not implemented)"),
            PrivacyMode(name="open", budget_epsilon=30.0, phrases_released="DP-selected, plus the hard floor",
                        statements_released="scrubbed statements with at least min_contributors contributors "
                                            "(a floor, not DP for text)"),
        ),
        levels=(
            ContributionLevel(name="minimal", max_slots=20),
            ContributionLevel(name="standard", max_slots=100),
            ContributionLevel(name="extensive", max_slots=250),
        ),
    )


def privacy_table_markdown(policy: PrivacyPolicy | None = None) -> str:
    """The README/docs privacy table, computed from ``policy`` (default: :func:`default_policy`)."""
    p = policy or default_policy()
    lines = [
        "| mode | level (L) | epsilon per window (delta) | C | count noise sigma | tau | contributors for 50 % / 95 % "
        "| lifetime: epsilon per 365 days (delta) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in p.table():
        lines.append(
            f"| {r.mode} | {r.level} ({r.L}) | {r.epsilon:g} ({r.delta:g}) | {r.C} | {r.sigma:.2f} | {r.tau} "
            f"| {r.contributors_50} / {r.contributors_95} | {r.lifetime_epsilon:.1f} ({r.lifetime_delta:g}, "
            f"{r.windows_per_year} windows) |")
    m = p.modes[0]
    lines += [
        "",
        f"One release per window ({m.window_days} days): integer discrete-Gaussian noise on each new phrase's "
        f"distinct-contributor count (each member adds at most C phrases per window: L2 sensitivity sqrt(C)), "
        "released when the noisy count exceeds tau and the true count reaches `min_contributors`; "
        f"{m.allocation.centroids:.0%} of the window's mu^2 goes to the DP centroids. The level's L caps patterns "
        "for centroids and the preview, not the phrase count, so the contributors needed do not depend on it.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    print(privacy_table_markdown(), end="")


if __name__ == "__main__":
    main()
