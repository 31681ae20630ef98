"""Usage statistics: DP histograms of privacy-safe interaction signals (federated analytics).

Each participating instance turns its local usage record (only kept for members who opted in to
a session that asks for it: :mod:`.recorder`) into one distribution per signal, so every member
counts once whatever how much it uses the tool: a member who recalls mostly at 9h adds about 1
to bin 9 of ``hour_of_day``. The signals (fixed, public bins):

- ``hour_of_day``: the hour (the instance's own clock) of each memory operation;
- ``session_length``: length of each run of events without a 30-minute pause;
- ``tools``: which MCP tools are called (the federation tools as one bin, unknown ones as other);
- ``recall_results``: how many memories a recall returned;
- ``recalled_then``: for each memory a recall returned, whether it was later updated, forgotten,
  or neither.

Each distribution has L2 norm <= 1; block s is scaled by w = sqrt((1 - PARTICIPANT_SHARE) / S) x
clip for S signals, so the whole vector is within the clip by construction (no data-dependent
clipping). Post-processing divides by w: each bin is a count of members plus Gaussian noise of
std noise_std / w (the accountant's predicted error, 2.52 members at the defaults), projected
onto the non-negative numbers (which only shrinks the error, the true count being >= 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.learning._kind import PARTICIPANT_SHARE, SessionContext, SessionKind, SessionResult

EventKind = Literal["tool", "remember", "recall", "update", "forget"]
MEMORY_OPERATIONS: frozenset[str] = frozenset({"remember", "recall", "update", "forget"})
SESSION_GAP = timedelta(minutes=30)
#: the standard normal's 99.5 % quantile: |error| <= Z99 std with probability 0.99 per bin
Z99 = 2.5758293035489004

TOOL_BINS = ("remember", "recall", "forget", "update_memory", "list_memories", "memory_stats", "federation", "other")
SIGNALS: dict[str, tuple[str, ...]] = {
    "hour_of_day": tuple(f"{h:02d}" for h in range(24)),
    "session_length": ("<1 min", "1-5 min", "5-15 min", "15-60 min", "1-3 h", ">3 h"),
    "tools": TOOL_BINS,
    "recall_results": ("0", "1", "2-3", "4-5", "6-10", ">10"),
    "recalled_then": ("updated", "forgotten", "neither"),
}
_SESSION_EDGES_S = (60, 300, 900, 3600, 10800)
_RESULT_EDGES = (0, 1, 3, 5, 10)  # upper bounds of the first five bins


class UsageEvent(BaseModel):
    """One recorded event (local only): when, what, and for recalls the result."""

    model_config = ConfigDict(frozen=True)

    at: AwareDatetime
    kind: EventKind
    tool: str | None = Field(default=None, description="The MCP tool's name, for kind 'tool'.")
    result_count: int | None = Field(default=None, ge=0, description="Memories a recall returned.")
    memory_ids: list[int] = Field(default_factory=list, description="Recalled, updated or forgotten memory ids.")


class UsageInputs(BaseModel):
    events: list[UsageEvent]


def _bucket(value: float, edges: Sequence[float]) -> int:
    for i, edge in enumerate(edges):
        if value <= edge:
            return i
    return len(edges)


def _tool_bin(name: str) -> int:
    if name in TOOL_BINS[:-2]:
        return TOOL_BINS.index(name)
    return TOOL_BINS.index("federation") if name.startswith("federation") else TOOL_BINS.index("other")


def _sessions(times: list[datetime]) -> list[float]:
    if not times:
        return []
    out, start, last = [], times[0], times[0]
    for t in times[1:]:
        if t - last >= SESSION_GAP:
            out.append((last - start).total_seconds())
            start = t
        last = t
    out.append((last - start).total_seconds())
    return out


def usage_counts(events: Sequence[UsageEvent]) -> dict[str, np.ndarray]:
    """The raw local counts per signal and bin (what the record shows the user)."""
    ev = sorted(events, key=lambda e: e.at)
    counts = {name: np.zeros(len(bins), dtype=np.float64) for name, bins in SIGNALS.items()}
    for e in ev:
        if e.kind in MEMORY_OPERATIONS:
            counts["hour_of_day"][e.at.hour] += 1
        if e.kind == "tool" and e.tool:
            counts["tools"][_tool_bin(e.tool)] += 1
        if e.kind == "recall" and e.result_count is not None:
            counts["recall_results"][_bucket(e.result_count, _RESULT_EDGES)] += 1
    for length in _sessions([e.at for e in ev]):
        counts["session_length"][_bucket(length, _SESSION_EDGES_S)] += 1
    fate: dict[int, int] = {}  # recalled memory id -> bin of what happened to it first
    for e in ev:
        if e.kind == "recall":
            for mid in e.memory_ids:
                fate.setdefault(mid, 2)
        elif e.kind in ("update", "forget"):
            for mid in e.memory_ids:
                if fate.get(mid) == 2:
                    fate[mid] = 0 if e.kind == "update" else 1
    for b in fate.values():
        counts["recalled_then"][b] += 1
    return counts


def usage_distributions(events: Sequence[UsageEvent]) -> dict[str, np.ndarray]:
    """Per signal, this member's distribution over the bins (sums to 1; zeros without events)."""
    out = {}
    for name, c in usage_counts(events).items():
        total = float(c.sum())
        out[name] = c / total if total > 0 else c
    return out


class UsageHistogram(BaseModel):
    signal: str
    bins: list[str]
    members: list[float] = Field(description="Noisy count of members per bin, projected to >= 0.")
    noisy: list[float] = Field(description="The same before the projection (unbiased).")
    std: float = Field(description="Predicted std of each bin's noise (members).")
    bound_99: float = Field(description="|error| of a bin stays below this with probability 0.99.")


def _histogram(signal: str, noisy: np.ndarray, std: float) -> UsageHistogram:
    return UsageHistogram(signal=signal, bins=list(SIGNALS[signal]), members=[max(0.0, float(x)) for x in noisy],
                          noisy=[float(x) for x in noisy], std=std, bound_99=Z99 * std)


class UsageStatisticsResult(SessionResult):
    histograms: list[UsageHistogram]
    rounds_averaged: int = 1


class UsageStatistics(SessionKind):
    name: ClassVar[str] = "usage_statistics"
    # 1 round: a histogram is one query; repeating it redraws noise on nearly the same signals, at
    # the cost of sqrt(rounds) in mu (more rounds are averaged by ``final_result``).
    default_rounds: ClassVar[int] = 1
    result_model: ClassVar[type[SessionResult]] = UsageStatisticsResult
    data_touched: ClassVar[str] = (
        "A local usage record, kept on this machine only while you take part in a session that asks for it, and "
        "viewable and deletable at any time: the hour of each memory operation, how long your sessions last, which "
        "tools are called, how many memories each recall returns, and whether recalled memories were later updated "
        "or forgotten. Never the text, the query or the memory ids. What leaves, inside secure aggregation and "
        "summed with every other participant's with noise, is your share of each histogram (each signal sums to "
        "one for you) plus a 1 for 'took part'.")

    def payload_segments(self, context: SessionContext) -> tuple[tuple[str, int], ...]:
        return tuple((name, len(bins)) for name, bins in SIGNALS.items())

    @staticmethod
    def block_weight(params: Any) -> float:
        return math.sqrt((1.0 - PARTICIPANT_SHARE) / len(SIGNALS)) * params.clip

    def payload(self, inputs: Any, context: SessionContext, params: Any) -> dict[str, np.ndarray]:
        data = inputs if isinstance(inputs, UsageInputs) else UsageInputs.model_validate(inputs)
        w = self.block_weight(params)
        return {name: w * dist for name, dist in usage_distributions(data.events).items()}

    def predicted_std(self, noise_std: float, params: Any) -> float:
        """Std of each released bin (members), from the round's noise: noise_std / w."""
        return noise_std / self.block_weight(params)

    def postprocess(self, noisy_sum: np.ndarray, noise_std: float, context: SessionContext,
                    params: Any) -> UsageStatisticsResult:
        seg = self.layout(context).split(noisy_sum)
        w, std = self.block_weight(params), self.predicted_std(noise_std, params)
        people, people_std = self.participants(seg, noise_std, params)
        return UsageStatisticsResult(
            kind=self.name, noisy_participants=people, participants_std=people_std,
            histograms=[_histogram(name, seg[name] / w, std) for name in SIGNALS])

    def final_result(self, results: Sequence[SessionResult]) -> SessionResult:
        """The mean of the rounds' histograms (noise std / sqrt(rounds)); post-processing only."""
        rs = [r for r in results if isinstance(r, UsageStatisticsResult)]
        if not rs or len(rs) != len(results):
            raise InvalidInput("usage statistics needs at least one released round of its own kind")
        k = len(rs)
        hists = []
        for i, h in enumerate(rs[0].histograms):
            hists.append(_histogram(h.signal, np.mean([r.histograms[i].noisy for r in rs], axis=0), h.std / math.sqrt(k)))
        return UsageStatisticsResult(
            kind=self.name, noisy_participants=float(np.mean([r.noisy_participants for r in rs])),
            participants_std=rs[0].participants_std / math.sqrt(k), histograms=hists, rounds_averaged=k)
