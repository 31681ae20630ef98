"""Pure release decisions: distinct-contributor counts in, what is released (and its noisy count) out.

Why pure: this is where privacy is decided, so it must be testable exactly (fixed counts and a
seeded noise source give exact decisions) and reusable by the benchmark without a database or an
HTTP server. The engine feeds it the window's counts from the store and writes its decisions back.

Rules (per item: a slot, or a (slot, phrase token)):
- the hard floor ``floor`` (``min_contributors``) always applies: fewer true contributors are never
  released, whatever the noise says;
- with ``dp_select`` (modes ``high`` and ``balanced``) an item is released only if its noisy count
  exceeds the requirement's threshold (DP partition selection); ``open`` uses the floor alone,
  which is k-anonymity, not DP;
- an item whose true count did not change keeps its earlier noisy count (no fresh draw: repeated
  recomputation must not let anyone average the noise away);
- ``withdraw_only`` (after a deletion) re-evaluates only items released now: nothing new appears.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from continuum_mcp.privacy.dp import add_gaussian_noise

K = TypeVar("K", int, tuple[int, str])

#: sigma -> one draw of N(0, sigma^2)
Noise = Callable[[float], float]


class Requirement(Protocol):
    """What an item needs (``privacy.modes.ReleaseRequirement`` has both attributes)."""

    @property
    def count_sigma(self) -> float: ...

    @property
    def threshold(self) -> float: ...


class Prior(Protocol):
    """An item as released before (the store's rows have both attributes)."""

    @property
    def true_count(self) -> int: ...

    @property
    def noisy_count(self) -> float: ...


@dataclass(frozen=True)
class Decision:
    keep: bool
    true_count: int
    noisy_count: float
    was_released: bool


@dataclass(frozen=True)
class ReleasePlan:
    slots: dict[int, Decision] = field(default_factory=dict)
    phrases: dict[tuple[int, str], Decision] = field(default_factory=dict)

    @property
    def selected_slots(self) -> set[int]:
        return {s for s, d in self.slots.items() if d.keep}


def gaussian_noise(rng: np.random.Generator | None = None) -> Noise:
    """Gaussian noise: cryptographic randomness by default, a seeded ``rng`` for tests/benchmarks."""
    if rng is None:
        return lambda sigma: float(add_gaussian_noise(np.zeros(1), sigma)[0])
    return lambda sigma: float(rng.normal(0.0, sigma)) if sigma > 0 else 0.0


def decide(counts: Mapping[K, int], prior: Mapping[K, Prior], *, floor: int, requirement: Requirement,
           dp_select: bool, noise: Noise, withdraw_only: bool = False) -> dict[K, Decision]:
    """One decision per item counted now or released before (in sorted order, so a seeded
    noise source gives reproducible draws)."""
    out: dict[K, Decision] = {}
    for key in sorted(set(counts) | set(prior)):
        c = int(counts.get(key, 0))
        old = prior.get(key)
        if withdraw_only and old is None:
            continue
        if old is not None and old.true_count == c:
            noisy = float(old.noisy_count)
        else:
            noisy = c + noise(requirement.count_sigma)
        keep = c >= floor and (not dp_select or noisy > requirement.threshold)
        out[key] = Decision(keep=keep, true_count=c, noisy_count=noisy, was_released=old is not None)
    return out


def plan_release(
    slot_counts: Mapping[int, int],
    phrase_counts: Mapping[tuple[int, str], int],
    prior_slots: Mapping[int, Prior],
    prior_phrases: Mapping[tuple[int, str], Prior],
    *,
    floor: int,
    slot_requirement: Requirement,
    phrase_requirement: Requirement,
    dp_select: bool,
    noise: Noise,
    withdraw_only: bool = False,
) -> ReleasePlan:
    """The release of one recomputation of the window: slots and phrases decided independently."""
    kw = dict(floor=floor, dp_select=dp_select, noise=noise, withdraw_only=withdraw_only)
    return ReleasePlan(
        slots=decide(slot_counts, prior_slots, requirement=slot_requirement, **kw),  # type: ignore[arg-type]
        phrases=decide(phrase_counts, prior_phrases, requirement=phrase_requirement, **kw),  # type: ignore[arg-type]
    )


def centroids(float_sum: np.ndarray, slots: int, dim: int, only: set[int] | None = None) -> dict[int, np.ndarray]:
    """Unit DP centroids (little-endian float32) of the slots whose noisy sum block is non-zero."""
    out: dict[int, np.ndarray] = {}
    for s in range(slots):
        if only is not None and s not in only:
            continue
        block = np.asarray(float_sum[s * dim: (s + 1) * dim], dtype=np.float64)
        norm = float(np.linalg.norm(block))
        if norm > 0 and math.isfinite(norm):
            out[s] = (block / norm).astype("<f4")
    return out


__all__ = ["Decision", "Noise", "Prior", "ReleasePlan", "Requirement", "centroids", "decide", "gaussian_noise",
           "plan_release"]
