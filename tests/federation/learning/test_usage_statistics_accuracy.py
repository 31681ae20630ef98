"""A usage-statistics session's histogram matches the true one within the DP error the accountant
predicts, over repeated runs: each bin's error stays within the predicted 99 % bound (2.576 std) at
the stated rate, and the empirical std is the predicted one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.federation.learning import (
    SIGNALS, SessionContext, SessionParams, UsageEvent, UsageInputs, UsageStatisticsResult, get_kind,
    session_round_params, simulate_round_sum, usage_distributions,
)
from continuum_mcp.federation.learning.usage_statistics import UsageStatistics
from continuum_mcp.federation.participant import honest_survivors
from continuum_mcp.secagg import simulate
from continuum_mcp.secagg.params import threshold_for

T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)
TOOLS = ("remember", "recall", "forget", "update_memory", "list_memories", "federation_query", "governance_x")


def _member(rng: np.random.Generator) -> UsageInputs:
    """A member with its own habits: a preferred hour, a few sessions, recalls, edits."""
    events: list[UsageEvent] = []
    hour = int(rng.integers(6, 23))
    for day in range(int(rng.integers(1, 6))):
        t = T0 + timedelta(days=day, hours=hour + int(rng.integers(-1, 2)), minutes=int(rng.integers(0, 50)))
        for _ in range(int(rng.integers(1, 8))):
            t += timedelta(minutes=float(rng.exponential(6)))
            tool = str(rng.choice(TOOLS))
            events.append(UsageEvent(at=t, kind="tool", tool=tool))
            if tool == "recall":
                n = int(rng.integers(0, 12))
                events.append(UsageEvent(at=t, kind="recall", result_count=n, memory_ids=list(range(n))))
            elif tool in ("forget", "update_memory"):
                events.append(UsageEvent(at=t, kind="forget" if tool == "forget" else "update",
                                         memory_ids=[int(rng.integers(0, 12))]))
            elif tool == "remember":
                events.append(UsageEvent(at=t, kind="remember", memory_ids=[100 + len(events)]))
    return UsageInputs(events=events)


def _truth(members: list[UsageInputs]) -> np.ndarray:
    dists = [usage_distributions(m.events) for m in members]
    return np.concatenate([sum(d[name] for d in dists) for name in SIGNALS])


def _errors(res: UsageStatisticsResult, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    noisy = np.concatenate([h.noisy for h in res.histograms])
    shown = np.concatenate([h.members for h in res.histograms])
    return noisy - truth, shown - truth, res.histograms[0].std, res.histograms[0].bound_99


@pytest.mark.slow
def test_histogram_error_matches_the_predicted_error_over_repeated_runs() -> None:
    rng = np.random.default_rng(2026)
    members = [_member(rng) for _ in range(40)]
    truth = _truth(members)
    kind, ctx = get_kind("usage_statistics"), SessionContext()
    p = SessionParams.build(kind="usage_statistics")
    errs, over = [], 0
    runs = 200
    for _ in range(runs):
        noisy, std = simulate_round_sum(kind, members, ctx, p)
        res = kind.postprocess(noisy, std, ctx, p)
        assert isinstance(res, UsageStatisticsResult)
        e, shown_e, pred_std, bound = _errors(res, truth)
        assert np.all(np.abs(shown_e) <= np.abs(e) + 1e-9)  # the projection never adds error
        errs.append(e)
        over += int(np.sum(np.abs(e) > bound))
    all_e = np.concatenate(errs)
    cells = all_e.size  # 200 runs x 47 bins
    # P(|error| > 2.576 std) = 1 %: expected 94 of 9400; a calibrated mechanism stays in [0.6 %, 1.5 %]
    # except with probability < 1e-4 (binomial), an over-noised or under-noised one does not.
    assert 0.006 * cells <= over <= 0.015 * cells, over / cells
    assert np.std(all_e) == pytest.approx(pred_std, rel=0.05)
    assert abs(np.mean(all_e)) < 4 * pred_std / np.sqrt(cells)  # unbiased before the projection
    # the predicted std is the one the session's parameters give, not just what the simulation added:
    # noise multiplier x clip, raised so the honest survivors alone add it (sqrt(t / h)) and by the
    # survivors beyond t (sqrt(n / t)), per member's bin weight (the quantised clip adds < 1 %)
    n, t = len(members), threshold_for(len(members))
    nominal = UsageStatistics().predicted_std(p.noise_multiplier * p.clip, p)
    expected = nominal * np.sqrt(n / honest_survivors(n, t, p.sybil_fraction))
    assert expected <= pred_std <= expected * 1.01 and np.std(all_e) >= 0.95 * expected


@pytest.mark.slow
def test_histogram_error_through_real_secure_aggregation_with_dropouts() -> None:
    rng = np.random.default_rng(7)
    ids = [Identity.generate() for _ in range(12)]
    members = [_member(rng) for _ in ids]
    kind, ctx = get_kind("usage_statistics"), SessionContext()
    p = SessionParams.build(kind="usage_statistics")
    dim = kind.layout(ctx).dim
    survivors = members[:8]  # 4 of 12 drop out after sharing keys (t = 8)
    truth = _truth(survivors)
    errs, preds = [], []
    for r in range(30):
        sp = session_round_params("fed-acc/s1", r, 0, [i.instance_id for i in ids], dim, p)
        inputs = {i.instance_id: kind.local_vector(m, ctx, p) for i, m in zip(ids, members)}
        drops = {i.instance_id: "after_share_keys" for i in ids[8:]}
        out = simulate(sp, ids, inputs, Verifier(MemoryReplayGuard()), drops).result
        assert sorted(out.contributors) == sorted(i.instance_id for i in ids[:8])
        res = kind.postprocess(out.float_sum, out.noise_sigma, ctx, p)
        assert isinstance(res, UsageStatisticsResult)
        e, _, pred, _ = _errors(res, truth)
        errs.append(e / pred)
        preds.append(pred)
    z = np.concatenate(errs)
    assert np.std(z) == pytest.approx(1.0, rel=0.12) and np.mean(np.abs(z) > 2.5758293) < 0.03
    assert min(preds) >= 1.1 / np.sqrt((1 - 0.05) / len(SIGNALS))  # never below the multiplier's 2.52
