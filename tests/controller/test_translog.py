"""Host changes reach the log once per tick: line by line while few, summed when many."""

from __future__ import annotations

import logging

import pytest

from controller.fleet.state import Transition
from controller.fleet.translog import HostChangeLog
from protocol.api import HostState
from protocol.lifecycle import Lifecycle, LifecycleKind


def _t(i: int, new: HostState, old: HostState | None = HostState.OK) -> Transition:
    return Transition("acme", f"h{i}", old, new, 0.0, "test", None)


def test_few_changes_are_logged_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    changes = HostChangeLog(logging.getLogger("t.few"), each_up_to=3)
    caplog.set_level(logging.INFO, "t.few")
    changes.transition(_t(1, HostState.SUSPECT))
    changes.notice(
        Lifecycle(
            tenant="acme",
            host="h2",
            boot_id="b",
            event=LifecycleKind.STARTUP,
            sent_at=0,
            agent_version="t",
        )
    )
    assert caplog.messages == []  # nothing before the tick
    changes.flush()
    assert caplog.messages == [
        "host acme/h1: ok -> suspect (test)",
        "host acme/h2: startup (boot b)",
    ]
    changes.flush()
    assert len(caplog.messages) == 2  # written once


def test_many_changes_become_one_summary_line(caplog: pytest.LogCaptureFixture) -> None:
    changes = HostChangeLog(logging.getLogger("t.many"), each_up_to=3)
    caplog.set_level(logging.INFO, "t.many")
    for i in range(5000):
        changes.transition(_t(i, HostState.OK, old=None))
    for i in range(7):
        changes.transition(_t(i, HostState.DOWN, old=HostState.SUSPECT))
    changes.flush()
    [record] = caplog.records
    assert record.getMessage() == "5007 host changes in one tick: 5000 new -> ok, 7 suspect -> down"
    assert record.levelno == logging.WARNING  # hosts went down among them
    changes.flush()
    assert len(caplog.records) == 1
