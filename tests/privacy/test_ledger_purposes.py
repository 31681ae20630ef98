"""The ledger's purposes: a release and a learning session each have their own window budget, the
one lifetime bound covers both, the composed total is exact (checked against dp-accounting), and a
ledger written by the schema-1 code is migrated with every spend kept."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from continuum_mcp.errors import InvalidInput, PrivacyBudgetExceeded
from continuum_mcp.federation.coordinator.store import LEDGER_DB_NAME, CoordinatorStore
from continuum_mcp.federation.governance import GovernanceRules
from continuum_mcp.federation.learning import SessionParams
from continuum_mcp.privacy.ledger import (
    LEDGER_SCHEMA, LEDGER_SCHEMA_VERSION, LedgerBudget, PrivacyLedger, PrivacySpend, migrate_ledger,
)
from continuum_mcp.privacy.modes import default_policy

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
V1_LEDGER = Path(__file__).parent / "data" / "ledger_v1.db"  # written by the schema-1 ledger (commit e918bed)
SESSION = SessionParams.build(kind="codebook_refinement")  # the card's defaults: 3 rounds at 1.1


def _mode_ledger(path: Path, mode_name: str = "high", **kw: object) -> PrivacyLedger:
    mode = default_policy().mode(mode_name)
    return PrivacyLedger(path, identity="m", budget_epsilon=mode.budget_epsilon, delta=mode.delta,
                         window=timedelta(days=mode.window_days), lifetime=mode.lifetime_budget(),
                         clock=lambda: T0, **kw)  # type: ignore[arg-type]


def _learning(ledger: PrivacyLedger, rules: GovernanceRules | None = None) -> PrivacyLedger:
    return ledger.for_purpose("learning", (rules or GovernanceRules()).learning_budget(ledger.window, ledger.delta))


def _dp_accounting_epsilon(spends: list[PrivacySpend], delta: float) -> float:
    """The same composition by dp-accounting's privacy-loss distributions (Gaussians only)."""
    from dp_accounting.pld import privacy_loss_distribution as pld

    dist = None
    for s in spends:
        assert s.noise_multiplier is not None
        part = pld.from_gaussian_mechanism(s.noise_multiplier, value_discretization_interval=1e-4)
        dist = part if dist is None else dist.compose(part)
    assert dist is not None
    return float(dist.get_epsilon_for_delta(delta - sum(s.extra_delta for s in spends)))


def test_a_release_contributor_can_still_take_part_in_a_learning_session(tmp_path: Path) -> None:
    mode = default_policy().mode("high")
    release = mode.window_spend()
    with _mode_ledger(tmp_path / "l.db") as ledger:
        ledger.spend(release, round_id="fed/r0/a0")  # the window's release spends its whole budget
        assert not ledger.check(release).allowed
        assert ledger.status().spent_epsilon == pytest.approx(mode.budget_epsilon, rel=1e-6)
    with _learning(_mode_ledger(tmp_path / "l.db")) as ledger:
        for r in range(1, SESSION.rounds + 1):  # ... and the session's three rounds still fit
            ledger.spend(SESSION.round_spend(), round_id=f"fed/prop-x/r{r}/a0")
        st = ledger.status()
        assert st.purpose == "learning" and st.budget_epsilon == GovernanceRules().max_session_epsilon
        assert st.by_purpose["release"] == pytest.approx(mode.budget_epsilon, rel=1e-6)
        # the total is the exact composition of everything the window released about the member
        spends = [release] + [SESSION.round_spend()] * SESSION.rounds
        assert st.total_epsilon == pytest.approx(_dp_accounting_epsilon(spends, ledger.delta), rel=1e-3)
        assert st.total_epsilon > st.by_purpose["release"] + 0.5 and "all purposes together" in st.message
        # the learning purpose has its own window: a fourth round at the cap is refused, saying so
        big = PrivacySpend.gaussian(0.5)
        with pytest.raises(PrivacyBudgetExceeded, match="learning privacy budget"):
            ledger.spend(big, round_id="fed/prop-y/r1/a0")
    with _mode_ledger(tmp_path / "l.db") as ledger:  # a release handle sees its own budget unchanged
        assert ledger.status().spent_epsilon == pytest.approx(mode.budget_epsilon, rel=1e-6)
        assert [e.purpose for e in ledger.history()] == ["release", "learning", "learning", "learning"]


def test_both_purposes_share_the_one_lifetime_bound(tmp_path: Path) -> None:
    mode = default_policy().mode("high")
    t = [T0]
    kw = dict(identity="m", budget_epsilon=mode.budget_epsilon, delta=mode.delta,
              window=timedelta(days=mode.window_days), lifetime=mode.lifetime_budget(), clock=lambda: t[0])
    # a member in every release window of a year, and in one default session in the first one
    with _learning(PrivacyLedger(tmp_path / "l.db", **kw)) as ledger:  # type: ignore[arg-type]
        for r in range(1, SESSION.rounds + 1):
            ledger.spend(SESSION.round_spend(), round_id=f"s/r{r}")
    refused = None
    with PrivacyLedger(tmp_path / "l.db", **kw) as ledger:  # type: ignore[arg-type]
        for w in range(mode.windows_per_year):
            t[0] = T0 + timedelta(days=mode.window_days * w, seconds=1)
            try:
                ledger.spend(mode.window_spend(), round_id=f"r{w}")
            except PrivacyBudgetExceeded as exc:
                refused = (w, exc.message)
                break
    assert refused is not None, "the session's lifetime cost must come out of the year's releases"
    assert refused[0] < mode.windows_per_year and "lifetime budget (all purposes)" in refused[1]


def test_purpose_is_checked_and_a_round_id_keeps_its_purpose(tmp_path: Path) -> None:
    with _mode_ledger(tmp_path / "l.db") as ledger:
        with pytest.raises(InvalidInput):
            ledger.for_purpose("marketing")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="needs its window budget"):
            ledger.for_purpose("learning")
        ledger.spend(SESSION.round_spend(), round_id="x")
        with pytest.raises(InvalidInput, match="purpose"):
            _learning(ledger).spend(SESSION.round_spend(), round_id="x")
    rules = GovernanceRules(max_session_epsilon=5.0, sessions_per_window=3)
    assert rules.learning_budget(timedelta(days=30), 1e-6) == LedgerBudget(window=timedelta(days=30), epsilon=15.0,
                                                                           delta=1e-6)
    assert GovernanceRules(sessions_per_window=3).at_least_as_strict(rules).sessions_per_window == 3
    assert GovernanceRules(sessions_per_window=1).at_least_as_strict(rules).sessions_per_window == 1


def _v1_spends() -> list[tuple[str, str, float, PrivacySpend]]:
    return [("member-a", "fed/r0/a0", 0.0, PrivacySpend.gaussian(0.9, extra_delta=1e-8)),
            ("member-a", "fed/prop-0123456789abcdef0123/r1/a0", 3.0, PrivacySpend.gaussian(2.5)),
            ("member-a", "fed/r1/a0", 40.0, PrivacySpend.approx_dp(0.5, 1e-9)),
            ("member-b", "fed/r1/a0", 40.0, PrivacySpend.gaussian(1.3, extra_delta=2e-8))]


def test_a_schema_1_ledger_is_migrated_keeping_every_spend(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    shutil.copy(V1_LEDGER, path)
    at = T0 + timedelta(days=41)
    for identity in ("member-a", "member-b"):
        with PrivacyLedger(path, identity=identity, budget_epsilon=100.0, clock=lambda: at) as ledger:
            got = [(e.round_id, (e.spent_at - T0).days, e.spend, e.purpose) for e in ledger.history()]
            assert got == [(r, d, s, "release") for i, r, d, s in _v1_spends() if i == identity]
    import sqlite3

    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == LEDGER_SCHEMA_VERSION == 2
    # the coordinator's copy goes through the store's component, with the same migration
    store_dir = tmp_path / "coord"
    store_dir.mkdir()
    store = CoordinatorStore(store_dir)  # a fresh store, then the v1 ledger file beside it
    try:
        shutil.copy(V1_LEDGER, store_dir / LEDGER_DB_NAME)
        db = store.component(LEDGER_DB_NAME, LEDGER_SCHEMA, version=LEDGER_SCHEMA_VERSION, what="privacy ledger",
                             migrate=migrate_ledger)
        with PrivacyLedger(db=db, identity="member-b", clock=lambda: at) as ledger:
            assert [e.round_id for e in ledger.history()] == ["fed/r1/a0"]
            assert ledger.status().spent_epsilon > 0
    finally:
        store.close()


#: the schema-1 ledger table exactly as the schema-1 code created it (commit e918bed)
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_spends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL,
    round_id TEXT NOT NULL,
    spent_at REAL NOT NULL,
    noise_multiplier REAL,
    epsilon REAL,
    delta REAL,
    extra_delta REAL NOT NULL DEFAULT 0,
    UNIQUE (identity, round_id)
);
CREATE INDEX IF NOT EXISTS privacy_spends_identity_time ON privacy_spends (identity, spent_at);
"""


def test_the_coordinator_s_schema_1_ledger_is_migrated_on_either_backend(tmp_path: Path, backend: str | None) -> None:
    store = CoordinatorStore(tmp_path, database=backend)
    try:
        old = store.component(LEDGER_DB_NAME, V1_SCHEMA, version=1, what="privacy ledger")
        with old.tx("member-a") as conn:  # the schema-1 code's insert
            for identity, round_id, days, s in _v1_spends():
                conn.execute("INSERT INTO privacy_spends (identity, round_id, spent_at, noise_multiplier, epsilon, "
                             "delta, extra_delta) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (identity, round_id, (T0 + timedelta(days=days)).timestamp(), s.noise_multiplier,
                              s.epsilon, s.delta, s.extra_delta))
    finally:
        store.close()
    store = CoordinatorStore(tmp_path, database=backend)
    try:
        db = store.component(LEDGER_DB_NAME, LEDGER_SCHEMA, version=LEDGER_SCHEMA_VERSION, what="privacy ledger",
                             migrate=migrate_ledger)
        at = T0 + timedelta(days=41)
        for identity in ("member-a", "member-b"):
            with PrivacyLedger(db=db, identity=identity, budget_epsilon=100.0, clock=lambda: at) as ledger:
                got = [(e.round_id, (e.spent_at - T0).days, e.spend, e.purpose) for e in ledger.history()]
                assert got == [(r, d, s, "release") for i, r, d, s in _v1_spends() if i == identity]
        with _learning(PrivacyLedger(db=db, identity="member-b", clock=lambda: at)) as ledger:
            ledger.spend(SESSION.round_spend(), round_id="fed/prop-z/r1/a0")  # the new column works there
            assert ledger.status().by_purpose.keys() == {"release", "learning"}
    finally:
        store.close()
