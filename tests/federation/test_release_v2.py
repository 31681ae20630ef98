"""Release v2 through the coordinator's real engine (real SQLite store, real ledgers, injected
clock): one release per window, sticky, integer counts, deletions at the next scheduled release,
and the differencing attack of the review bounded by DP over hundreds of trials.

Secure aggregation is replaced by the exact sum it would produce (here: zero embeddings, so no
centroid), handed to ``RoundEngine.release_aggregate`` as the benchmark does; the release itself
is the engine's own code.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from continuum_mcp.crypto.cipher import FederationCipher, generate_federation_key
from continuum_mcp.crypto.identity import Identity, MemoryReplayGuard, Verifier
from continuum_mcp.federation.coordinator import CoordinatorConfig, CoordinatorStore, RoundEngine, discrete_noise
from continuum_mcp.federation.coordinator import _release_sql as rsql
from continuum_mcp.federation.protocol import ContributionRequest, PatternSubmission, PhraseSubmission
from continuum_mcp.federation.submission import PlannedPattern, build_submission, choose_phrases
from continuum_mcp.privacy.modes import PrivacyPolicy, default_policy
from continuum_mcp.secagg import AggregateResult

#: every test runs on both coordinator backends (SQLite, PostgreSQL: tests/conftest.py)
pytestmark = pytest.mark.usefixtures("backend")

DAY = 86400.0
SLOTS, DIM = 8, 4


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """SQLite with synchronous=FULL on tmpfs where there is one (hundreds of windows are written)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else str(tmp_path)
    with tempfile.TemporaryDirectory(dir=base) as d:
        yield Path(d)


def policy_without_lifetime_cap() -> PrivacyPolicy:
    """The default modes, with the annual cap lifted so that one member can join many windows."""
    base = default_policy()
    for m in base.modes:
        base = base.with_mode(m.name, windows_per_year=10_000)
    return base


def make_engine(storage: Path, clock: Clock, mode: str = "open", seed: int | None = None,
                policy: PrivacyPolicy | None = None) -> RoundEngine:
    cfg = CoordinatorConfig(storage_path=storage, federation_id="fed-v2", privacy_mode=mode,  # type: ignore[arg-type]
                            min_contributors=3, slots=SLOTS, dim=DIM, round_interval_seconds=30 * DAY)
    store = CoordinatorStore.from_config(cfg)
    store.ensure_federation(cfg.federation_id)
    noise = discrete_noise(None if seed is None else np.random.default_rng(seed))
    engine = RoundEngine(store, cfg, Verifier(MemoryReplayGuard()), policy or policy_without_lifetime_cap(),
                         now=clock, noise=noise)
    engine.recover()
    return engine


def admit(engine: RoundEngine, n: int, mode: str = "open") -> list[str]:
    out = []
    for _ in range(n):
        ident = Identity.generate()
        engine.store.admit(ident.instance_id, ident.public_key, "minimal", mode, None, private=False, now=engine.now())
        out.append(ident.instance_id)
    return out


def tok(name: str) -> str:
    """A phrase token as members make them (64 hex digits); the coordinator only ever sees these."""
    return hashlib.sha256(name.encode()).hexdigest()


def submit(engine: RoundEngine, member: str, tokens: list[str], slot: int = 1) -> None:
    r = engine.state(None).round_id
    phrases = [PhraseSubmission(token=tok(t), ciphertext="Y3Q=") for t in tokens]
    patterns = [PatternSubmission(slot=slot, confidence=0.9, phrases=phrases[i:i + 4]) for i in range(0, len(phrases), 4)]
    patterns = [p.model_copy(update={"slot": (slot + k) % SLOTS}) for k, p in enumerate(patterns)] or [
        PatternSubmission(slot=slot, confidence=0.9, phrases=[])]
    engine.submit(member, ContributionRequest(round_id=r, patterns=patterns))


def release_window(engine: RoundEngine, clock: Clock) -> None:
    """Close the window on schedule and release it from the exact (zero-embedding) secure sum."""
    clock.t += 30 * DAY + 60
    engine.tick()
    params = engine.current_params()
    assert params is not None, "the window did not close"
    zeros = np.zeros(params.dim, dtype=np.int64)
    engine.release_aggregate(AggregateResult(
        int_sum=zeros, float_sum=zeros.astype(np.float64), contributors=list(params.roster), recovered_dropouts=[],
        noise_sigma=params.noise_sigma, norm=0.0, norm_bound=0.0))


def view(engine: RoundEngine, names: list[str]) -> dict[str, int]:
    """What every member sees of these phrases: released ones and their noisy counts."""
    with engine.store.reading() as conn:
        seen = {p["token"]: p["noisy_contributors"] for pat in rsql.released_patterns(conn, None) for p in pat["phrases"]}
    return {n: seen[tok(n)] for n in names if tok(n) in seen}


def test_release_is_sticky_integer_and_once_per_window(fast_dir: Path) -> None:
    clock = Clock()
    engine = make_engine(fast_dir / "c", clock, seed=3)
    ids = admit(engine, 14)
    for m in ids:
        submit(engine, m, ["popular", "rare-" + m])
    release_window(engine, clock)
    first = view(engine, ["popular"] + ["rare-" + m for m in ids])
    assert set(first) == {"popular"}  # 14 contributors pass tau = 7; one member's own phrase never does
    assert all(isinstance(v, int) for v in first.values())
    # next window: the same phrase again from fewer members, plus a new one; nothing is redrawn
    for m in ids:
        submit(engine, m, ["popular", "newcomer"])
    release_window(engine, clock)
    second = view(engine, ["popular", "newcomer"])
    assert second["popular"] == first["popular"]  # sticky: no fresh noise for a released phrase
    assert "newcomer" in second
    # every contributor was charged once per window, with the window's whole budget
    with engine.privacy.ledger(ids[0]) as ledger:  # the coordinator's own ledger of a member
        assert len(ledger.history()) == 2
        assert ledger.spent() == pytest.approx(engine.mode.budget_epsilon, rel=1e-6)


def test_a_member_takes_part_once_per_window(fast_dir: Path) -> None:
    """Under the real policy the ledger admits one window's release per window_days: a member who
    submits again before its window has passed waits (it is not in the roster)."""
    clock = Clock()
    engine = make_engine(fast_dir / "c", clock, policy=default_policy())
    ids = admit(engine, 4)
    for m in ids:
        submit(engine, m, ["a"])
    release_window(engine, clock)
    clock.t += 60  # an early close by the operator, minutes after the release
    for m in ids:
        submit(engine, m, ["b"])
    st = engine.close_round()
    assert st.phase == "collecting"  # nobody can afford a second release inside the window


def test_deletion_takes_effect_at_the_next_scheduled_release_only(fast_dir: Path) -> None:
    clock = Clock()
    engine = make_engine(fast_dir / "c", clock, seed=11)
    ids = admit(engine, 12)
    for m in ids:
        submit(engine, m, ["shared"])
    release_window(engine, clock)
    before = view(engine, ["shared"])
    assert "shared" in before
    for m in ids[:10]:  # 10 of 12 delete: 2 remain, under the floor of 3
        assert engine.withdraw(m) == (1, 0)
        assert view(engine, ["shared"]) == before  # nothing changes on request
    others = admit(engine, 3)
    for m in others:
        submit(engine, m, ["unrelated"])
    release_window(engine, clock)
    assert "shared" not in view(engine, ["shared"])  # withdrawn at the scheduled release


def test_the_same_phrase_in_different_slots_has_one_token() -> None:
    cipher = FederationCipher(generate_federation_key(), "fed-v2")
    a = PlannedPattern(slot=3, confidence=0.9, phrases=["Docker Compose"], statement="s", pattern_id="a",
                       source_memory_ids=[1], embedding=[1.0])
    b = a.model_copy(update={"slot": 7, "phrases": ["docker  compose"]})
    ta = build_submission(a, 0, cipher, send_statement=False).phrases[0].token
    tb = build_submission(b, 5, cipher, send_statement=False).phrases[0].token
    assert ta == tb == cipher.token("docker compose")


def test_a_user_sends_its_c_most_frequent_phrases() -> None:
    lists = [["x1", "a", "b"], ["a", "c", "b"], ["a", "c"], ["d"]]
    chosen = choose_phrases(lists, 3)
    assert chosen[0] == ["a", "b"] and chosen[1] == ["c"] and chosen[2] == [] and chosen[3] == []
    assert sum(len(ps) for ps in choose_phrases([[f"p{i}" for i in range(4)] for _ in range(30)], 20)) == 4
    # equally frequent phrases: every pattern's best phrase first, so no pattern goes unrepresented
    spread = choose_phrases([[f"{k}-{i}" for i in range(4)] for k in range(10)], 20)
    assert [len(ps) for ps in spread] == [2] * 10 and all(ps[0].endswith("-0") for ps in spread)


@pytest.mark.slow
def test_differencing_before_and_after_a_round_and_a_deletion_is_bounded_by_dp(fast_dir: Path) -> None:
    """The review's attack: compare the released view before and after the target's window, after
    its deletion, and after the next release. The attacker knows every other member's data (the
    background count of each phrase) and guesses, per phrase, whether the target holds it. By DP the
    accuracy of any such guess is at most Phi(mu_item / 2) + delta, where mu_item = 1 / sigma is
    the privacy of one count (sensitivity 1); v1 redrew or withdrew exactly the target's items on
    deletion, which the attacker read off in 200 of 200 trials."""
    trials, phrases, background = 200, 6, 9
    clock = Clock()
    engine = make_engine(fast_dir / "c", clock)
    cal = engine.mode.calibration
    crowd = admit(engine, background)
    rng = np.random.default_rng(2026)
    correct = total = 0
    pending: list[tuple[list[str], list[bool], dict[str, int]]] = []
    bg_of: dict[str, int] = {}
    for _ in range(trials):
        tokens = [secrets.token_hex(8) for _ in range(phrases)]
        counts = rng.integers(cal.tau - 2, cal.tau + 2, size=phrases)  # the hardest case: right at tau
        holds = [bool(b) for b in rng.integers(0, 2, size=phrases)]
        for j, m in enumerate(crowd):
            submit(engine, m, [t for t, c in zip(tokens, counts) if j < c])
        target = admit(engine, 1)[0]
        submit(engine, target, [t for t, h in zip(tokens, holds) if h])
        # the next release also settles the previous trial's deletion: judge that trial now
        release_window(engine, clock)
        after_next = view(engine, [t for toks, _, _ in pending for t in toks])
        for toks, truth, seen in pending:
            for t, h in zip(toks, truth):
                guess = seen.get(t) != after_next.get(t) or (t in seen and seen[t] > bg_of[t] + 0.5)
                correct += guess == h
                total += 1
        pending.clear()
        after_round = view(engine, tokens)
        assert all(isinstance(v, int) for v in after_round.values())
        engine.withdraw(target)
        assert view(engine, tokens) == after_round  # a deletion changes nothing until the next release
        bg_of.update({t: int(c) for t, c in zip(tokens, counts)})
        pending.append((tokens, holds, {t: after_round[t] for t in tokens if t in after_round}))
    accuracy = correct / total
    mu_item = 1.0 / cal.sigma
    from scipy.stats import norm

    bound = float(norm.cdf(mu_item / 2)) + engine.mode.delta
    se = math.sqrt(bound * (1 - bound) / total)
    assert total == (trials - 1) * phrases
    assert accuracy <= bound + 3 * se, (accuracy, bound)
    assert accuracy < 0.8  # far from v1's 1.0
