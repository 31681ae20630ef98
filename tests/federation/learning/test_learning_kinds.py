"""Session kinds as plug-ins: layout, sensitivity, local computation and post-processing of the
two kinds, on exact simulated DP sums and on a real secure aggregation."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.learning import (
    PARTICIPANT_SHARE, SESSION_KINDS, SIGNALS, CodebookInputs, CodebookRefinementResult, SessionContext,
    SessionParams, UsageEvent, UsageInputs, UsageStatisticsResult, get_kind, pattern_embeddings,
    session_round_params, simulate_round_sum, simulate_session, usage_counts,
)
from continuum_mcp.privacy.codebook import Codebook
from continuum_mcp.privacy.generalize import Generalizer
from continuum_mcp.privacy.scrub import Scrubber
from continuum_mcp.secagg import simulate

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def _small_codebook(k: int = 8, d: int = 384, seed: int = 0) -> Codebook:
    rng = np.random.default_rng(seed)
    return Codebook.from_vectors(rng.normal(size=(k, d)), parent=None)


def _clustered_inputs(cb: Codebook, n: int, per: int, shift: np.ndarray, seed: int = 1) -> list[CodebookInputs]:
    """n participants, each with ``per`` patterns near codewords moved by ``shift`` (k x d)."""
    rng = np.random.default_rng(seed)
    target = cb.vectors + shift
    out = []
    for _ in range(n):
        slots = rng.integers(0, cb.slots, per)
        e = target[slots] + 0.02 * rng.normal(size=(per, cb.dim))
        out.append(CodebookInputs(embeddings=e.tolist()))
    return out


def test_registry_names_describes_and_refuses() -> None:
    assert sorted(SESSION_KINDS) == ["codebook_refinement", "usage_statistics"]
    for name, kind in SESSION_KINDS.items():
        assert get_kind(name) is kind and len(kind.data_touched) > 100 and "leaves" in kind.data_touched
        with pytest.raises(InvalidInput, match="runs 1 local step"):
            SessionParams.build(kind=name, local_steps=2)
    with pytest.raises(InvalidInput, match="unknown session kind 'fedavg'; known"):
        get_kind("fedavg")


def test_codebook_vector_is_sums_counts_and_participation_within_the_clip() -> None:
    cb = _small_codebook()
    ctx, kind = SessionContext(codebook=cb), get_kind("codebook_refinement")
    p = SessionParams.build(kind="codebook_refinement", clip=2.0)
    layout = kind.layout(ctx)
    assert layout.segments == (("sums", 8 * 384), ("counts", 8), ("participants", 1))
    assert kind.sensitivity(p) == 2.0
    e = np.stack([cb.vectors[3], cb.vectors[3], cb.vectors[5]])
    seg = layout.split(kind.local_vector(CodebookInputs(embeddings=e.tolist()), ctx, p))
    total = math.sqrt(sum(float(np.sum(v * v)) for v in seg.values()))
    assert total == pytest.approx(2.0)  # the whole contribution, sums and counts together
    assert seg["participants"][0] == pytest.approx(math.sqrt(PARTICIPANT_SHARE) * 2.0)
    counts = seg["counts"]
    assert np.flatnonzero(counts).tolist() == [3, 5] and counts[3] == pytest.approx(2 * counts[5])
    sums = seg["sums"].reshape(8, 384)
    assert sums[3] @ cb.vectors[3] / np.linalg.norm(sums[3]) == pytest.approx(1.0, abs=1e-6)
    assert np.linalg.norm(sums[3]) / counts[3] == pytest.approx(3.0)  # sum / count = mean / COUNT_WEIGHT
    # an instance without patterns only says it took part
    empty = layout.split(kind.local_vector(CodebookInputs(embeddings=[]), ctx, p))
    assert not empty["sums"].any() and not empty["counts"].any()
    with pytest.raises(InvalidInput, match="384 dimensions"):
        kind.local_vector(CodebookInputs(embeddings=[[1.0, 0.0]]), ctx, p)


def test_lloyd_step_moves_well_supported_codewords_to_the_noisy_means() -> None:
    """1000 participants whose patterns sit at shifted codewords: a round moves every codeword to
    the shifted direction (cosine > 0.97), and the result is a new, content-named version."""
    cb = _small_codebook()
    rng = np.random.default_rng(5)
    shift = 0.6 * rng.normal(size=(8, 384)) / math.sqrt(384)
    truth = (cb.vectors + shift) / np.linalg.norm(cb.vectors + shift, axis=1, keepdims=True)
    ctx, kind = SessionContext(codebook=cb), get_kind("codebook_refinement")
    p = SessionParams.build(kind="codebook_refinement", rounds=1)
    noisy, std = simulate_round_sum(kind, _clustered_inputs(cb, 1000, 4, shift), ctx, p)
    res = kind.postprocess(noisy, std, ctx, p)
    assert isinstance(res, CodebookRefinementResult) and res.updated_slots == list(range(8))
    new = res.codebook(cb)
    assert new.version == res.version != cb.version and new.version.startswith("c-")
    assert np.all(np.sum(new.vectors * truth, axis=1) > 0.97)
    assert np.all(np.sum(cb.vectors * truth, axis=1) < 0.9)
    assert abs(res.noisy_participants - 1000) < 6 * res.participants_std
    assert CodebookRefinementResult.model_validate_json(res.model_dump_json()).codebook().version == res.version


def test_poorly_supported_codewords_keep_the_old_vector() -> None:
    cb = _small_codebook()
    ctx, kind = SessionContext(codebook=cb), get_kind("codebook_refinement")
    p = SessionParams.build(kind="codebook_refinement")
    results = simulate_session(kind, _clustered_inputs(cb, 12, 4, np.full((8, 384), 0.05)), ctx, p)
    assert len(results) == 3
    for r in results:
        assert isinstance(r, CodebookRefinementResult) and r.updated_slots == [] and r.version == cb.version
        assert max(r.noisy_counts) < r.min_count
        assert r.codebook(cb) is cb


def test_a_refined_result_with_foreign_vectors_is_refused() -> None:
    cb = _small_codebook()
    other = _small_codebook(seed=9)
    res = CodebookRefinementResult(kind="codebook_refinement", noisy_participants=1, participants_std=1,
                                   version=cb.version, parent_version="v0", vectors_b64=other.to_b64(), slots=8,
                                   dim=384, updated_slots=[0], noisy_counts=[0.0] * 8, count_std=1, min_count=1)
    with pytest.raises(InvalidInput, match="hash to"):
        res.codebook()


def test_pattern_embeddings_come_from_generalised_non_private_patterns(embedder) -> None:  # type: ignore[no-untyped-def]
    from continuum_mcp.memory.models import Memory
    now = datetime.now(timezone.utc)
    mems = [Memory(id=i + 1, text=text, tags=tags, created_at=now, updated_at=now, content_hash=f"h{i}")
            for i, (text, tags) in enumerate([
                ("I prefer dark mode in my editor", []), ("I like dark mode in editors", []),
                ("My bank PIN is 4321", ["private"]), ("I use vim keybindings everywhere", [])])]
    gen = Generalizer(embedder, Scrubber(), max_phrases=4)
    got = pattern_embeddings(mems, gen, min_confidence=0.0)
    assert got.embeddings and all(len(e) == 384 for e in got.embeddings)
    private = pattern_embeddings(mems[2:3], gen, min_confidence=0.0)
    assert private.embeddings == []


# ----------------------------------------------------------------------------- usage statistics


def _events() -> list[UsageEvent]:
    at = lambda minutes: T0 + timedelta(minutes=minutes)  # noqa: E731
    return [
        UsageEvent(at=at(0), kind="tool", tool="remember"), UsageEvent(at=at(0), kind="remember", memory_ids=[1]),
        UsageEvent(at=at(2), kind="tool", tool="recall"),
        UsageEvent(at=at(2), kind="recall", result_count=3, memory_ids=[1, 2, 3]),
        UsageEvent(at=at(4), kind="tool", tool="update_memory"), UsageEvent(at=at(4), kind="update", memory_ids=[2]),
        UsageEvent(at=at(100), kind="tool", tool="federation_query"),
        UsageEvent(at=at(101), kind="tool", tool="governance_vote"),
        UsageEvent(at=at(102), kind="forget", memory_ids=[3]), UsageEvent(at=at(103), kind="forget", memory_ids=[2]),
        UsageEvent(at=at(104), kind="recall", result_count=0),
    ]


def test_usage_counts_are_the_specified_signals() -> None:
    c = usage_counts(_events())
    assert c["hour_of_day"][9] == 3 and c["hour_of_day"][10] == 3 and c["hour_of_day"].sum() == 6  # memory ops only
    assert c["session_length"].tolist() == [0, 2, 0, 0, 0, 0]  # 4 min, then 4 min after a 96-min pause
    assert dict(zip(SIGNALS["tools"], c["tools"])) == {
        "remember": 1, "recall": 1, "forget": 0, "update_memory": 1, "list_memories": 0, "memory_stats": 0,
        "federation": 1, "other": 1}
    assert c["recall_results"].tolist() == [1, 0, 1, 0, 0, 0]
    # memory 2 was updated (first), 3 forgotten, 1 neither
    assert c["recalled_then"].tolist() == [1, 1, 1]


def test_usage_vector_is_each_members_distributions_within_the_clip() -> None:
    kind, ctx = get_kind("usage_statistics"), SessionContext()
    p = SessionParams.build(kind="usage_statistics")
    vec = kind.local_vector(UsageInputs(events=_events()), ctx, p)
    assert np.linalg.norm(vec) <= p.clip + 1e-12 and np.all(vec >= 0)
    seg = kind.layout(ctx).split(vec)
    w = math.sqrt((1 - PARTICIPANT_SHARE) / len(SIGNALS))
    for name in SIGNALS:
        assert seg[name].sum() == pytest.approx(w)  # one member's distribution, scaled
    # the worst case (every signal in one bin) is exactly the clip
    one = [UsageEvent(at=T0, kind="recall", result_count=0, memory_ids=[1]), UsageEvent(at=T0, kind="tool", tool="recall")]
    assert np.linalg.norm(kind.local_vector(UsageInputs(events=one), ctx, p)) == pytest.approx(p.clip)


def test_usage_histogram_counts_members_with_the_predicted_error() -> None:
    kind, ctx = get_kind("usage_statistics"), SessionContext()
    p = SessionParams.build(kind="usage_statistics")
    members = [UsageInputs(events=[UsageEvent(at=T0.replace(hour=h % 24), kind="remember")]) for h in range(60)]
    noisy, std = simulate_round_sum(kind, members, ctx, p)
    res = kind.postprocess(noisy, std, ctx, p)
    assert isinstance(res, UsageStatisticsResult)
    hours = next(h for h in res.histograms if h.signal == "hour_of_day")
    truth = np.array([3] * 12 + [2] * 12, dtype=float)
    w = math.sqrt((1 - PARTICIPANT_SHARE) / len(SIGNALS))
    assert hours.std == pytest.approx(std / w) and hours.bound_99 == pytest.approx(2.5758293 * std / w)
    assert hours.std > 2.52  # 1.1 / w, raised by the sybil factor of 60 members
    assert np.all(np.abs(np.array(hours.noisy) - truth) < 6 * hours.std)
    assert all(m >= 0 for h in res.histograms for m in h.members)
    # averaging rounds divides the std by sqrt(rounds)
    avg = kind.final_result([res, res])
    assert isinstance(avg, UsageStatisticsResult) and avg.rounds_averaged == 2
    assert avg.histograms[0].std == pytest.approx(hours.std / math.sqrt(2))


def test_a_usage_session_round_through_real_secure_aggregation() -> None:
    kind, ctx = get_kind("usage_statistics"), SessionContext()
    p = SessionParams.build(kind="usage_statistics")
    ids = [Identity.generate() for _ in range(10)]
    dim = kind.layout(ctx).dim
    sp = session_round_params("fed-x/s2", 0, 0, [i.instance_id for i in ids], dim, p)
    inputs = {i.instance_id: kind.local_vector(UsageInputs(events=_events()), ctx, p) for i in ids}
    res = simulate(sp, ids, inputs, Verifier(MemoryReplayGuard()))
    out = kind.postprocess(res.result.float_sum, res.result.noise_sigma, ctx, p)
    assert isinstance(out, UsageStatisticsResult)
    tools = next(h for h in out.histograms if h.signal == "tools")
    expected = 10 * usage_counts(_events())["tools"] / usage_counts(_events())["tools"].sum()
    assert np.all(np.abs(np.array(tools.noisy) - expected) < 6 * tools.std)
