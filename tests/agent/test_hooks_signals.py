"""State precedence: hook/contract > screen rule > title, with expiry (agent/hooks/signals.py)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio

from agent.config import SessionSpec
from agent.events.emitter import Emitter
from agent.events.origin import Origin
from agent.events.outbox import Outbox
from agent.events.publisher import Wakeup
from agent.events.runs import RunTracker
from agent.hooks.receiver import (
    HookReceiver,
    deliver_signals,
    hook_events,
    preparer,
    prompt_acks,
)
from agent.hooks.signals import (
    HOOK_TTL_S,
    IDLE_HOOK_HOLD_S,
    SETTLE_S,
    HookState,
    ScreenView,
    newer,
    resolve,
)
from agent.hooks.wiring import spool_path
from protocol.heartbeat import SessionState

W, IDLE, B, U = (
    SessionState.WORKING,
    SessionState.IDLE,
    SessionState.BLOCKED,
    SessionState.UNKNOWN,
)


def hook(state: SessionState, at: float = 100.0, seq: int = 1) -> HookState:
    return HookState(state, seq, at, "claude:X")


def test_no_hook_means_the_screen_or_the_title_decides() -> None:
    r = resolve(None, ScreenView(IDLE, 50.0, "title"), 100.0)
    assert (r.state, r.source, r.seq) == (IDLE, "title", None)


def test_a_fresh_hook_outranks_the_screen_and_reports_seq_and_age() -> None:
    # The screen still shows the old idle box: the hook knows the prompt was taken.
    r = resolve(hook(W, at=100.0, seq=7), ScreenView(IDLE, 90.0), 103.0)
    assert (r.state, r.source, r.seq, r.age_s) == (W, "hook", 7, 3.0)
    assert "#7" in r.reason


def test_a_stale_hook_expires_to_the_screen() -> None:
    ttl = HOOK_TTL_S[W]
    r = resolve(hook(W, at=100.0), ScreenView(IDLE, 90.0), 100.0 + ttl + 1)
    assert (r.state, r.source) == (IDLE, "screen") and "stale" in r.reason


def test_blocked_holds_while_the_operator_takes_their_time() -> None:
    r = resolve(hook(B, at=100.0), ScreenView(U, 95.0), 100.0 + HOOK_TTL_S[W] + 60)
    assert r.state is B and r.source == "hook"


def test_a_later_screen_change_overtakes_the_hook() -> None:
    # Claude fires no Stop on an interrupt: the screen going idle well after the hook wins.
    r = resolve(hook(W, at=100.0), ScreenView(IDLE, 100.0 + SETTLE_S[W] + 1), 104.0)
    assert (r.state, r.source) == (IDLE, "screen") and "after hook" in r.reason
    # ...but not a redraw that lands together with the hook (within the settle time).
    r = resolve(hook(B, at=100.0), ScreenView(IDLE, 100.5), 101.0)
    assert r.state is B
    # ...and an UNKNOWN screen never overtakes.
    assert resolve(hook(W, at=100.0), ScreenView(U, 110.0), 111.0).state is W


def test_newer_keeps_the_latest_by_sequence() -> None:
    a, b = hook(W, seq=2), hook(IDLE, seq=3)
    assert newer(None, a) is a and newer(a, b) is b and newer(b, a) is b


def test_receiver_drains_signals_into_states(tmp_path: Path) -> None:
    receiver = HookReceiver(tmp_path)
    spool = spool_path(tmp_path, "s1")
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_text(
        '{"at": 100, "runtime": "claude", "payload": {"hook_event_name": "UserPromptSubmit"}}\n'
        '{"at": 101, "runtime": "claude", "payload": {"hook_event_name": "Stop"}}\n'
    )
    got = receiver.drain()
    assert [m.event_type for _, m in got] == ["run.started", "run.completed"]
    state = receiver.state("s1")
    assert state is not None and (state.state, state.seq, state.event) == (IDLE, 2, "claude:Stop")
    assert receiver.resolve("s1", ScreenView(W, 99.0), 102.0).state is IDLE
    receiver.forget("s1")
    assert receiver.state("s1") is None


def test_hook_events_carry_one_run_id_and_drive_the_run_tracker(tmp_path: Path) -> None:
    receiver = HookReceiver(tmp_path)
    spool = spool_path(tmp_path, "s1")
    spool.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        (100, "UserPromptSubmit", {}),
        (101, "PreToolUse", {"tool_name": "Bash"}),
        (102, "Stop", {}),
    ]
    spool.write_text(
        "".join(
            json.dumps({"at": at, "runtime": "claude", "payload": {
                "hook_event_name": name, "prompt_id": "p-1", **extra}}) + "\n"
            for at, name, extra in lines
        )
    )  # fmt: skip
    runs = RunTracker()
    events = hook_events(receiver.drain(), Origin("t1", "h1", "b1"), runs)
    kinds = [(e.event_type, e.payload.get("state"), e.run_id) for e in events]
    assert kinds == [
        ("run.started", None, "p-1"),
        ("run.state", "start", "p-1"),
        ("tool_call", None, "p-1"),
        ("run.completed", None, "p-1"),
        ("run.state", "complete", "p-1"),
    ]
    assert runs.current("s1") is None


def test_receiver_is_the_session_tables_signal_source(tmp_path: Path) -> None:
    receiver = HookReceiver(tmp_path)
    spool = spool_path(tmp_path, "s1")
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_text(
        '{"at": 100, "runtime": "claude", "payload": {"hook_event_name": "UserPromptSubmit"}}\n'
    )
    drained = receiver.drain()
    assert prompt_acks(drained) == [("s1", 100.0)]
    # The screen still shows the idle box it showed before the prompt: the hook decides.
    assert receiver.decide("s1", IDLE, 100.5) is W
    assert receiver.decide("s1", IDLE, 101.0) is W
    explained = receiver.explain("s1")
    assert explained is not None and explained.source == "hook" and explained.seq == 1
    # An interrupt: no Stop, the screen settles on idle after working; it overtakes.
    assert receiver.decide("s1", W, 101.5) is W
    assert receiver.decide("s1", IDLE, 104.0) is IDLE
    assert receiver.decide("s2", B, 104.0) is B  # no hooks: the screen


def test_deliver_signals_acknowledges_prompts_and_fills_the_outbox(tmp_path: Path) -> None:
    receiver = HookReceiver(tmp_path)
    spool = spool_path(tmp_path, "s1")
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_text(
        '{"at": 100, "runtime": "pi", "payload": {"type": "agent_start"}}\n'
        '{"at": 101, "runtime": "pi", "payload": {"type": "agent_end"}}\n'
    )
    outbox = Outbox(tmp_path / "outbox.db", "b1")
    outbox.open()
    acks: list[tuple[str, float]] = []

    async def go() -> None:
        await deliver_signals(
            receiver.drain(),
            origin=Origin("t1", "h1", "b1"),
            runs=RunTracker(),
            emitter=Emitter(outbox, Wakeup()),
            acknowledge=lambda s, at: acks.append((s, at)),
        )

    anyio.run(go)
    subjects = [p.subject for p in outbox.peek()]
    outbox.close()
    assert acks == [("s1", 100.0), ("s1", 101.0)]  # the start, and the turn that ended
    # run.started, its run.state, run.completed, its run.state: as the runtime said them.
    kinds = [s.rsplit(".", 1)[-1] for s in subjects]
    assert kinds == ["run_started", "run_state", "run_completed", "run_state"], subjects
    assert all(".h1.s1." in s for s in subjects)


def test_preparer_wires_the_launch_and_forgets_the_old_word(tmp_path: Path) -> None:
    receiver = HookReceiver(tmp_path)
    receiver.states["w1"] = HookState(W, 1, 100.0, "claude:UserPromptSubmit")
    prepare = preparer(tmp_path, None, receiver)
    command, env = prepare(SessionSpec(name="w1", runtime="pi"), ["pi"], {"A": "1"})
    assert command[:2] == ["pi", "-e"] and env["A"] == "1" and "FLEET_HOOK_SPOOL" in env
    assert receiver.state("w1") is None


def test_a_busy_screen_after_an_idle_hook_is_new_activity() -> None:
    # Codex: notify said the turn ended; a new prompt (no start hook) shows busy on screen.
    assert resolve(hook(IDLE, at=100.0), ScreenView(W, 101.0), 101.5).state is W
    # ...but the last spinner frame of the turn that just ended does not.
    assert resolve(hook(IDLE, at=100.0), ScreenView(W, 95.0), 100.2).state is IDLE
    assert resolve(hook(IDLE, at=100.0), ScreenView(W, 100.3), 100.6).state is IDLE


def test_an_idle_hook_gives_way_to_a_screen_that_never_stopped_working() -> None:
    # Codex: turn N's notify arrives while the screen (debounced) still shows turn N; turn
    # N+1 began before the screen ever read idle. Briefly the hook wins (the screen may lag),
    # then the screen does.
    still = ScreenView(W, 90.0)
    assert resolve(hook(IDLE, at=100.0), still, 101.0).state is IDLE
    r = resolve(hook(IDLE, at=100.0), still, 100.0 + IDLE_HOOK_HOLD_S + 0.1)
    assert (r.state, r.source) == (W, "screen") and "still working" in r.reason
    # A working hook against an idle screen is not affected (the screen lags the prompt).
    assert resolve(hook(W, at=100.0), ScreenView(IDLE, 90.0), 104.0).state is W


def test_a_codex_turn_that_ended_acknowledges_the_prompt(tmp_path: Path) -> None:
    """Codex has no start signal and a quick answer ends between two screen polls: its
    notify is the proof the sent prompt was taken; its thread-title side turn is not."""
    receiver = HookReceiver(tmp_path)
    spool = spool_path(tmp_path, "cx")
    spool.parent.mkdir(parents=True, exist_ok=True)
    title = "Generate a concise, single-line task title for this"
    spool.write_text(
        '{"at": 50, "runtime": "codex", "payload": {"type": "agent-turn-complete", '
        f'"input-messages": ["{title}"]}}}}\n'
        '{"at": 60, "runtime": "codex", "payload": {"type": "agent-turn-complete", '
        '"turn-id": "t1", "input-messages": ["long-codex xxx"]}}\n'
    )
    assert prompt_acks(receiver.drain()) == [("cx", 60.0)]
