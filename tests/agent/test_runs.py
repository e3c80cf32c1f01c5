"""Run lifecycle: one run.state per transition, from the contract or the screen, never both."""

from __future__ import annotations

from agent.events.runs import END_GRACE_S, RunTracker
from protocol.heartbeat import SessionState as S


def states(out: list) -> list[tuple[str, str]]:
    return [(t.state, t.source) for t in out]


def test_contract_run_is_reported_once_even_when_the_screen_also_sees_it() -> None:
    runs = RunTracker()
    assert states(runs.on_contract("s", "run.started", "r1", 1.0)) == [("start", "contract")]
    assert runs.on_screen("s", S.IDLE, S.WORKING, 1.2) == []
    assert runs.on_screen("s", S.WORKING, S.IDLE, 2.0) == []
    assert states(runs.on_contract("s", "run.completed", "r1", 2.1)) == [("complete", "contract")]
    assert runs.tick(2.0 + END_GRACE_S + 1) == []  # the screen's idle is not a second end


def test_screen_only_run_starts_and_completes_after_the_grace() -> None:
    runs = RunTracker()
    [start] = runs.on_screen("s", S.IDLE, S.WORKING, 1.0)
    assert (start.state, start.source) == ("start", "screen")
    assert start.run_id.startswith("obs-")
    runs.on_screen("s", S.WORKING, S.IDLE, 5.0)
    assert runs.tick(5.0 + END_GRACE_S - 0.1) == []
    assert states(runs.tick(5.0 + END_GRACE_S)) == [("complete", "screen")]


def test_late_contract_start_adopts_the_observed_run() -> None:
    runs = RunTracker()
    [start] = runs.on_screen("s", S.IDLE, S.WORKING, 1.0)
    assert start.state == "start"
    assert runs.on_contract("s", "run.started", "r9", 1.5) == []
    assert runs.current("s") == "r9"


def test_cancel_command_then_the_runtimes_own_cancelled_is_one_transition() -> None:
    runs = RunTracker()
    runs.on_contract("s", "run.started", "r1", 1.0)
    assert states(runs.on_command("s", "cancel_requested", 2.0)) == [
        ("cancel_requested", "command")
    ]
    assert states(runs.on_command("s", "cancelled", 2.5)) == [("cancelled", "command")]
    assert runs.on_contract("s", "run.cancelled", "r1", 2.6) == []


def test_error_from_the_contract() -> None:
    runs = RunTracker()
    runs.on_contract("s", "run.started", "r1", 1.0)
    assert states(runs.on_contract("s", "run.error", "r1", 2.0)) == [("error", "contract")]
