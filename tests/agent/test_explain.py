"""`fleet explain` shows the state precedence: which signal decided, and what each one says
(agent/control/explain.py over the real HookReceiver and the shipped stub spec)."""

from __future__ import annotations

from pathlib import Path

from agent.control.explain import explanation
from agent.discovery.detect import classify
from agent.discovery.runtimes import load_runtimes
from agent.hooks.receiver import HookReceiver
from agent.hooks.wiring import spool_path
from protocol.heartbeat import SessionState

SPEC = load_runtimes()["stub"]
SCREEN = ["stub: coder", "", "stub> "]  # the stub's idle prompt on its last row
TITLE = "stub:coder idle"


def receiver_with_prompt(tmp_path: Path) -> HookReceiver:
    receiver = HookReceiver(tmp_path)
    spool = spool_path(tmp_path, "s1")
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_text(
        '{"at": 100, "runtime": "claude", "payload": {"hook_event_name": "UserPromptSubmit"}}\n'
    )
    receiver.drain()
    return receiver


def explain(receiver: HookReceiver, now: float) -> dict[str, object]:
    match = classify(SCREEN, TITLE, SPEC.rules)
    out = explanation("s1", SPEC, match, SCREEN, TITLE, receiver.account("s1"), now)
    return {"message": out["message"], **out["details"]}


def test_a_hook_decided_state_is_explained_as_the_hooks(tmp_path: Path) -> None:
    receiver = receiver_with_prompt(tmp_path)
    # The screen still shows the idle prompt: the fresh hook outranks it.
    assert receiver.decide("s1", SessionState.IDLE, 100.5) is SessionState.WORKING
    got = explain(receiver, 103.0)
    assert got["state"] == "working" and got["decided_by"] == "hook"
    assert got["hook"] == {
        "state": "working",
        "seq": 1,
        "age_s": 3.0,
        "event": "hook:claude:UserPromptSubmit",
        "decides": True,
    }
    assert got["hook_expired"] is False
    # The screen and the title are still shown, with what they alone would say.
    assert got["screen_rule"] == {
        "state": "idle",
        "rule": "prompt",
        "source": "screen",
        "line_no": 3,
        "line": "stub>",
    }
    assert got["title"] == {"text": TITLE, "rule": "title-idle", "state": "idle"}
    message = str(got["message"])
    assert message.startswith("s1 is working, decided by hook:claude:UserPromptSubmit"), message
    assert "#1, 3.0s ago: working" in message and "'prompt'" in message, message


def test_a_stale_hook_expires_to_the_screen(tmp_path: Path) -> None:
    receiver = receiver_with_prompt(tmp_path)
    receiver.decide("s1", SessionState.IDLE, 100.5)
    # A minute without news from the runtime: the hook no longer decides, the screen does.
    assert receiver.decide("s1", SessionState.IDLE, 161.0) is SessionState.IDLE
    got = explain(receiver, 161.0)
    assert got["state"] == "idle" and got["decided_by"] == "screen"
    assert got["rule"] == "prompt" and got["line_no"] == 3
    assert got["hook_expired"] is True
    assert "stale" in str(got["reason"])
    hook = got["hook"]
    assert isinstance(hook, dict) and hook["decides"] is False and hook["seq"] == 1
    message = str(got["message"])
    assert message.startswith("s1 is idle, decided by screen rule 'prompt', row 3"), message
    assert "expired to the screen" in message, message


def test_without_hooks_the_screen_decides_and_the_hook_is_none(tmp_path: Path) -> None:
    receiver = HookReceiver(tmp_path)
    assert receiver.decide("s1", SessionState.IDLE, 100.0) is SessionState.IDLE
    got = explain(receiver, 100.0)
    assert got["state"] == "idle" and got["decided_by"] == "screen"
    assert got["hook"] is None and got["hook_expired"] is False
    assert "hook:   none" in str(got["message"])
