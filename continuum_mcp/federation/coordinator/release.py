"""Pure release decisions of one window (release v2): candidate counts in, released phrases out.

Why pure: this is where privacy is decided, so it must be testable exactly (fixed counts and a
seeded noise source give exact decisions) and reusable by the benchmark without a database or an
HTTP server. The engine feeds it the window's counts from the store and writes its decisions back.

Rules (DESIGN.md "Release v2"; the unit is a phrase token, a released phrase implies its slot):
- :func:`window_counts`: distinct contributors per token over the window's submissions, counting
  at most C distinct tokens per member (the first C it sent: its own most frequent phrases), so
  the L2 sensitivity sqrt(C) the calibration assumes holds whatever a client sends;
- :func:`select_phrases`: once per window, each candidate that is not released already gets ONE
  integer discrete-Gaussian draw; it is released when the noisy count exceeds ``tau`` and the true
  count reaches the hard floor ``floor`` (``min_contributors``). Released counts are integers;
- sticky: a released token is never a candidate again and its count is never redrawn;
- :func:`withdrawals`: at the next scheduled release (never on request), a released token whose
  remaining contributors fell under the floor (deletions, leaving) is withdrawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from continuum_mcp.privacy.noise import discrete_gaussian, discrete_gaussian_pmf

#: (sigma, size) -> int64 draws of the discrete Gaussian N_Z(0, sigma^2)
IntNoise = Callable[[float, int], np.ndarray]


@dataclass(frozen=True)
class PhraseDecision:
    keep: bool
    true_count: int
    noisy_count: int


def discrete_noise(rng: np.random.Generator | None = None) -> IntNoise:
    """Integer noise: the CSPRNG discrete Gaussian by default; with a seeded ``rng`` (tests and
    benchmarks), exact draws from the same pmf (support cut where the mass is below 2^-100)."""
    if rng is None:
        return lambda sigma, n: discrete_gaussian(sigma, n)

    def seeded(sigma: float, n: int) -> np.ndarray:
        if sigma <= 0 or n == 0:
            return np.zeros(n, dtype=np.int64)
        half = int(math.ceil(sigma * math.sqrt(2.0 * 100.0 * math.log(2.0)))) + 2
        support = np.arange(-half, half + 1, dtype=np.int64)
        p = discrete_gaussian_pmf(sigma, support)
        return rng.choice(support, size=n, p=p / p.sum()).astype(np.int64)

    return seeded


def window_counts(member_tokens: Iterable[tuple[str, Iterable[str]]], max_phrases: int) -> dict[str, int]:
    """Distinct contributors per token; each member counts for its first ``max_phrases`` distinct
    tokens only (a member listed twice is merged, in order)."""
    per_member: dict[str, dict[str, None]] = {}
    for member, tokens in member_tokens:
        mine = per_member.setdefault(member, {})
        for t in tokens:
            if len(mine) >= max_phrases:
                break
            mine.setdefault(t, None)
    counts: dict[str, int] = {}
    for mine in per_member.values():
        for t in mine:
            counts[t] = counts.get(t, 0) + 1
    return counts


def select_phrases(candidates: Mapping[str, int], released: Collection[str], *, sigma: float, tau: int,
                   floor: int, noise: IntNoise) -> dict[str, PhraseDecision]:
    """One decision per new candidate (sorted, so a seeded noise source is reproducible)."""
    keys = sorted(k for k in candidates if k not in released)
    draws = noise(sigma, len(keys)) if keys else np.zeros(0, dtype=np.int64)
    out: dict[str, PhraseDecision] = {}
    for key, z in zip(keys, draws):
        c = int(candidates[key])
        noisy = c + int(z)
        out[key] = PhraseDecision(keep=noisy > tau and c >= floor, true_count=c, noisy_count=noisy)
    return out


def withdrawals(remaining: Mapping[str, int], released: Collection[str], floor: int) -> set[str]:
    """Released tokens whose remaining distinct contributors are below the floor."""
    return {t for t in released if int(remaining.get(t, 0)) < floor}


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


__all__ = ["IntNoise", "PhraseDecision", "centroids", "discrete_noise", "select_phrases", "window_counts",
           "withdrawals"]
