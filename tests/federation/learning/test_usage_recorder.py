"""The local usage record: nothing without opt-in, everything (and only the safe signals) with it,
viewable, deletable, and the input of a usage-statistics session."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from continuum_mcp.app import Continuum
from continuum_mcp.config import Settings
from continuum_mcp.federation.learning import USAGE_DB, SessionContext, SessionParams, UsageInputs, get_kind


class OptIn:
    """Governance's answer, as the core sees it: a callable."""

    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


@pytest.fixture
def app(settings: Settings, embedder) -> Iterator[Continuum]:  # type: ignore[no-untyped-def]
    a = Continuum(settings, embedder)
    yield a
    a.close()


def _use(app: Continuum) -> None:
    m1 = app.remember("I deploy the billing service with Terraform").memory.id
    app.remember("My editor font is Iosevka")
    app.recall("how do I deploy billing?", k=2)
    app.update(m1, text="I deploy the billing service with Pulumi now")
    app.record_tool_call("recall")
    app.record_tool_call("federation_status")
    app.forget([m1])


def test_nothing_is_recorded_or_even_created_without_opt_in(app: Continuum, settings: Settings) -> None:
    _use(app)
    path = settings.data_dir / USAGE_DB
    assert not path.exists()
    rec = app.usage_record()
    assert rec.events == [] and rec.recording is False and "not recording" in rec.message
    assert not path.exists()  # viewing does not create it either


@pytest.mark.slow
def test_opted_in_operations_are_recorded_with_only_the_safe_signals(app: Continuum, settings: Settings) -> None:
    opt = OptIn()
    app.set_usage_opt_in(opt)
    app.remember("recorded before opting in? no")
    opt.value = True
    _use(app)
    rec = app.usage_record()
    assert rec.recording is True and (settings.data_dir / USAGE_DB).stat().st_mode & 0o777 == 0o600
    kinds = [e.kind for e in rec.events]
    assert kinds == ["remember", "remember", "recall", "update", "tool", "tool", "forget"]
    recall = rec.events[2]
    assert recall.result_count == 2 and len(recall.memory_ids) == 2 and recall.at.tzinfo is not None
    assert [e.tool for e in rec.events if e.kind == "tool"] == ["recall", "federation_status"]
    dumped = rec.model_dump_json()
    assert "Terraform" not in dumped and "billing" not in dumped  # no text, no query
    assert rec.counts["tools"]["recall"] == 1 and rec.counts["tools"]["federation"] == 1
    assert rec.counts["recalled_then"]["updated"] == 1  # the recalled billing memory was updated first
    assert sum(rec.counts["hour_of_day"].values()) == 5
    # opting out stops recording at once
    opt.value = False
    app.remember("after opting out")
    assert len(app.usage_record().events) == 7
    # the record is a usage-statistics session's local input
    kind, p = get_kind("usage_statistics"), SessionParams.build(kind="usage_statistics")
    vec = kind.local_vector(UsageInputs(events=rec.events), SessionContext(), p)
    assert np.linalg.norm(vec) <= p.clip + 1e-12


@pytest.mark.slow
def test_delete_empties_the_record_and_removes_the_file(app: Continuum, settings: Settings) -> None:
    app.set_usage_opt_in(lambda: True)
    _use(app)
    assert len(app.usage_record().events) == 7
    gone = app.delete_usage_record()
    assert gone.deleted == 7
    assert not any(settings.data_dir.glob(USAGE_DB + "*"))
    assert app.usage_record().events == []
    app.recall("editor font")
    assert [e.kind for e in app.usage_record().events] == ["recall"]  # still opted in: records afresh
