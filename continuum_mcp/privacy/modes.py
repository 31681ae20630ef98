"""Privacy modes and contribution levels: the one place that maps them to DP parameters.

Every figure here (sigma, rounds afforded, thresholds, contributors needed) is computed from the
mode's epsilon, budget and delta by :mod:`continuum_mcp.privacy.dp`; nothing is typed in.

How a round is accounted (see docs/privacy.md):
- A round is ONE Gaussian release: the user's whole contribution (embedding sums, slot counts,
  phrase counts, and in ``balanced`` statement counts) is scaled to L2 norm <= 1 and every
  coordinate gets N(0, sigma^2). ``allocation`` says which share of the squared norm each part
  gets, so each part sees noise sigma / sqrt(share) per unit of its own sensitivity.
- sigma is the analytic Gaussian for (epsilon_per_round, delta_gaussian), with delta_gaussian =
  (1 - threshold_delta_share) * delta; rounds compose exactly in Gaussian DP (mu in quadrature).
- Partition selection also fails with a small probability (a user's own item passing the
  threshold). Those probabilities add up over rounds, so the window reserves
  threshold_delta_share * delta for them, split over the rounds the budget affords and the
  selections per round. The ledger records a round as
  ``PrivacySpend.gaussian(sigma, extra_delta=...)`` and composes to exactly the mode's budget.

``python -m continuum_mcp.privacy.modes`` prints the README's privacy table.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from continuum_mcp.privacy.dp import (
    contributors_needed_gaussian,
    contributors_needed_policy,
    gaussian_partition_threshold,
    gaussian_sigma,
    gdp_epsilon,
    gdp_mu,
    policy_gaussian_threshold,
)
from continuum_mcp.errors import InvalidInput
from continuum_mcp.privacy.ledger import PrivacySpend

ModeName = Literal["high", "balanced", "open"]
LevelName = Literal["minimal", "standard", "extensive"]
Component = Literal["slots", "phrases", "statements"]

_POLICY_ALPHA = 3.0  # Gopi et al.'s cutoff Gamma = rho + alpha * sigma


def _max_rounds(mu_round: float, budget_epsilon: float, delta: float) -> int:
    """Largest r with r rounds of mu_round-GDP composing to <= budget_epsilon at delta."""
    mu_budget = gdp_mu(budget_epsilon, delta)
    r = int(math.floor((mu_budget / mu_round) ** 2))
    # Guard the floor against round-off on both sides with the exact epsilon.
    while r > 0 and gdp_epsilon(math.sqrt(r) * mu_round, delta) > budget_epsilon + 1e-9:
        r -= 1
    while gdp_epsilon(math.sqrt(r + 1) * mu_round, delta) <= budget_epsilon + 1e-9:
        r += 1
    return r


class RoundAllocation(BaseModel):
    """Shares of a user's squared L2 contribution norm (= shares of the round's mu^2)."""

    model_config = ConfigDict(frozen=True)

    centroids: float = Field(ge=0, le=1)
    slots: float = Field(gt=0, le=1)
    phrases: float = Field(ge=0, le=1)
    statements: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> RoundAllocation:
        total = self.centroids + self.slots + self.phrases + self.statements
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"allocation shares must sum to 1, got {total}")
        return self

    def selections(self) -> list[Component]:
        """The partition-selection releases that take part in a round."""
        out: list[Component] = ["slots"]
        if self.phrases > 0:
            out.append("phrases")
        if self.statements > 0:
            out.append("statements")
        return out


class PrivacyMode(BaseModel):
    """A privacy mode: per-round epsilon, rolling budget, and what the federation may release."""

    model_config = ConfigDict(frozen=True)

    name: ModeName
    epsilon_per_round: float = Field(gt=0)
    budget_epsilon: float = Field(gt=0)
    delta: float = Field(default=1e-6, gt=0, lt=1)
    window_days: int = Field(default=30, gt=0)
    threshold_delta_share: float = Field(default=0.1, gt=0, lt=1)
    allocation: RoundAllocation
    phrases_released: str
    statements_released: str

    @computed_field  # type: ignore[prop-decorator]
    @cached_property
    def delta_gaussian(self) -> float:
        """The share of delta the composed Gaussian noise is measured at."""
        return (1.0 - self.threshold_delta_share) * self.delta

    @computed_field  # type: ignore[prop-decorator]
    @cached_property
    def sigma(self) -> float:
        """Noise per unit L2 sensitivity of one round (analytic Gaussian at epsilon_per_round)."""
        return gaussian_sigma(self.epsilon_per_round, self.delta_gaussian)

    @computed_field  # type: ignore[prop-decorator]
    @cached_property
    def rounds_afforded(self) -> int:
        """Rounds the rolling budget affords under exact Gaussian-DP composition."""
        return _max_rounds(1.0 / self.sigma, self.budget_epsilon, self.delta_gaussian)

    @computed_field  # type: ignore[prop-decorator]
    @cached_property
    def rounds_afforded_pure_gaussian(self) -> int:
        """DESIGN.md's figure: rounds of (epsilon_per_round, delta) Gaussian releases within
        (budget, delta), with no delta reserved for partition selection."""
        return _max_rounds(gdp_mu(self.epsilon_per_round, self.delta), self.budget_epsilon, self.delta)

    @computed_field  # type: ignore[prop-decorator]
    @cached_property
    def threshold_delta_per_selection(self) -> float:
        """Failure probability each partition selection of each round may use."""
        n_sel = len(self.allocation.selections())
        return self.threshold_delta_share * self.delta / (self.rounds_afforded * n_sel)

    def round_spend(self) -> PrivacySpend:
        """What one contribution round costs, in the form the ledger composes."""
        n_sel = len(self.allocation.selections())
        return PrivacySpend.gaussian(self.sigma, extra_delta=n_sel * self.threshold_delta_per_selection)

    def component_sigma(self, component: Component | Literal["centroids"]) -> float:
        """Noise per unit sensitivity that one part of the round sees, given its norm share."""
        share = float(getattr(self.allocation, component))
        if share <= 0:
            raise InvalidInput(f"mode {self.name} releases no {component} under DP")
        return self.sigma / math.sqrt(share)


class ContributionLevel(BaseModel):
    """How many slots (patterns) one instance may contribute per round: the per-user bound L."""

    model_config = ConfigDict(frozen=True)

    name: LevelName
    max_slots: int = Field(gt=0)


class ReleaseRequirement(BaseModel):
    """How many distinct contributors an item needs before it is released, for one mode/level."""

    model_config = ConfigDict(frozen=True)

    mode: ModeName
    level: LevelName
    component: Component
    partitions_per_user: int
    count_sigma: float
    threshold: float
    contributors_p50: int
    contributors_p95: int
    set_union_threshold: float
    set_union_p50_best: int
    set_union_p50_worst: int


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

    def partitions_per_user(self, level: ContributionLevel, component: Component) -> int:
        """Per-user bound L of one selection: slots and statements L, phrases L * m."""
        return level.max_slots * (self.max_phrases_per_pattern if component == "phrases" else 1)

    def release_requirement(self, mode_name: str, level_name: str, component: Component) -> ReleaseRequirement:
        """Threshold and contributors needed for one selection of one round, computed."""
        mode, level = self.mode(mode_name), self.level(level_name)
        partitions = self.partitions_per_user(level, component)
        unit_sigma = mode.component_sigma(component)
        delta_thr = mode.threshold_delta_per_selection
        # Gaussian thresholding of distinct-user counts: L2 sensitivity sqrt(L).
        count_sigma = unit_sigma * math.sqrt(partitions)
        tau = gaussian_partition_threshold(count_sigma, delta_thr, partitions)
        # Gopi et al.'s policy Gaussian on unit-L2 weights.
        rho = policy_gaussian_threshold(unit_sigma, delta_thr, partitions)
        cutoff = rho + _POLICY_ALPHA * unit_sigma
        return ReleaseRequirement(
            mode=mode.name,
            level=level.name,
            component=component,
            partitions_per_user=partitions,
            count_sigma=count_sigma,
            threshold=tau,
            contributors_p50=contributors_needed_gaussian(tau, count_sigma, 0.5),
            contributors_p95=contributors_needed_gaussian(tau, count_sigma, 0.95),
            set_union_threshold=rho,
            set_union_p50_best=contributors_needed_policy(rho, unit_sigma, cutoff, partitions, 0.5, worst_case=False),
            set_union_p50_worst=contributors_needed_policy(rho, unit_sigma, cutoff, partitions, 0.5, worst_case=True),
        )


def default_policy() -> PrivacyPolicy:
    """The project's modes and levels (DESIGN.md section 2)."""
    return PrivacyPolicy(
        modes=tuple(
            PrivacyMode(name=name, epsilon_per_round=per_round, budget_epsilon=budget, allocation=allocation,
                        phrases_released=phrases, statements_released=statements)
            for name, per_round, budget, allocation, phrases, statements in (
                ("high", 1.0, 10.0, RoundAllocation(centroids=0.5, slots=0.25, phrases=0.25),
                 "DP-selected only", "never"),
                ("balanced", 4.0, 20.0, RoundAllocation(centroids=0.4, slots=0.2, phrases=0.2, statements=0.2),
                 "DP-selected only", "never yet (whole-statement DP selection is not implemented)"),
                ("open", 8.0, 30.0, RoundAllocation(centroids=0.5, slots=0.25, phrases=0.25),
                 "those with at least min_contributors distinct contributors (a floor, not DP)",
                 "contributors' scrubbed statements of released slots (not DP for text)"),
            )
        ),
        levels=(
            ContributionLevel(name="minimal", max_slots=20),
            ContributionLevel(name="standard", max_slots=100),
            ContributionLevel(name="extensive", max_slots=250),
        ),
    )


def _fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def privacy_table_markdown(policy: PrivacyPolicy | None = None) -> str:
    """The README's privacy tables, computed from ``policy`` (default: :func:`default_policy`)."""
    p = policy or default_policy()
    lines = [
        "| mode | epsilon per round | budget per 30 days | sigma per unit sensitivity | rounds it affords "
        "| phrases released | statements released |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in p.modes:
        lines.append(
            f"| {m.name} | {m.epsilon_per_round:g} | {m.budget_epsilon:g} (delta {m.delta:g}) | {_fmt(m.sigma)} "
            f"| {m.rounds_afforded} | {m.phrases_released} | {m.statements_released} |"
        )
    lines += [
        "",
        "Distinct contributors an item needs to be released in one round with probability 50 % / 95 % "
        "(Gaussian thresholding, what the coordinator runs in high and balanced mode), and with DP set union "
        "(policy Gaussian, 50 %, best case - worst case). `open` mode does not threshold with noise: it "
        "releases what at least `min_contributors` distinct members share (a floor, not DP); its rows show "
        "what DP selection would need at epsilon 8:",
        "",
        "| mode | level (L) | slot | slot, set union | phrase | phrase, set union | statement |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in p.modes:
        for lv in p.levels:
            cells = []
            for comp in ("slots", "phrases"):
                r = p.release_requirement(m.name, lv.name, comp)  # type: ignore[arg-type]
                cells.append(f"{r.contributors_p50} / {r.contributors_p95}")
                cells.append(f"{r.set_union_p50_best} - {r.set_union_p50_worst}")
            if "statements" in m.allocation.selections():
                r = p.release_requirement(m.name, lv.name, "statements")
                cells.append(f"{r.contributors_p50} / {r.contributors_p95}")
            else:
                cells.append("-")
            lines.append(f"| {m.name} | {lv.name} ({lv.max_slots}) | " + " | ".join(cells) + " |")
    notes = [
        "",
        "Assumptions, all in `continuum_mcp/privacy_modes.py`: a round is one Gaussian release of the "
        "user's contribution clipped to L2 norm 1; its squared norm is shared "
        + "; ".join(
            f"{m.name}: centroids {m.allocation.centroids:g}, slots {m.allocation.slots:g}, "
            f"phrases {m.allocation.phrases:g}" + (f", statements {m.allocation.statements:g}" if m.allocation.statements else "")
            for m in p.modes
        )
        + f". At most {p.max_phrases_per_pattern} phrases per pattern, so a phrase selection has "
        f"L x {p.max_phrases_per_pattern} partitions per user. "
        f"{p.modes[0].threshold_delta_share:.0%} of delta is reserved for threshold failures over the "
        "rounds the budget affords; sigma is the analytic Gaussian at the rest. Set-union best case: "
        "each contributor's whole unit of weight lands on the item; worst case: each contributor also "
        "holds L-1 other fresh items.",
    ]
    design = ", ".join(f"{m.name} {m.rounds_afforded_pure_gaussian}" for m in p.modes)
    notes.append(
        "Rounds of pure (epsilon per round, delta) analytic-Gaussian releases the budgets afford, "
        f"with no delta reserved for thresholds: {design}."
    )
    return "\n".join(lines + notes) + "\n"


def main() -> None:
    print(privacy_table_markdown(), end="")


if __name__ == "__main__":
    main()
