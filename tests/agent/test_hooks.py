"""The hook path without the CLIs: sender → spool → inbox → meaning; the launch wiring."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent.hooks import send
from agent.hooks.inbox import ROTATE_BYTES, HookInbox, HookSignal
from agent.hooks.translate import meaning, to_event
from agent.hooks.wiring import (
    CLAUDE_EVENTS,
    PI_EXTENSION,
    hook_launch_args,
    spool_path,
    wire,
    with_args,
)
from protocol.heartbeat import SessionState
from tests.support.fleet import wait_for


def sig(runtime: str, event: str, seq: int = 1, **payload: object) -> HookSignal:
    key = "hook_event_name" if runtime == "claude" else "type"
    return HookSignal("s1", runtime, event, 100.0, seq, {key: event, **payload})


# -- sender -------------------------------------------------------------------------------------


def test_sender_appends_one_line_from_stdin(tmp_path: Path) -> None:
    spool = tmp_path / "s1.jsonl"
    argv = ["--spool", str(spool), "--runtime", "claude", "--session", "s1"]
    assert send.deliver(argv, io.StringIO('{"hook_event_name": "Stop"}')) == 0
    assert send.deliver(argv, io.StringIO("not json")) == 0
    lines = [json.loads(x) for x in spool.read_text().splitlines()]
    assert lines[0]["payload"] == {"hook_event_name": "Stop"} and lines[0]["runtime"] == "claude"
    assert lines[1]["payload"] == {"raw": "not json"}


def test_sender_takes_the_payload_from_argv_like_codex_notify(tmp_path: Path) -> None:
    spool = tmp_path / "c.jsonl"
    rc = send.deliver(["--spool", str(spool), "--runtime", "codex", '{"type": "x"}'])
    assert rc == 0 and json.loads(spool.read_text())["payload"] == {"type": "x"}


def test_sender_exits_0_fast_and_silent_when_the_agent_is_gone(tmp_path: Path) -> None:
    spool = tmp_path / "no-such-dir" / "s.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "agent.hooks.send", "--spool", str(spool), "--runtime", "claude"],
        input=b'{"hook_event_name": "Stop"}',
        capture_output=True,
        timeout=10,
        check=False,
    )
    # Claude adds a hook's stdout to the model's context: nothing may be printed.
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_sender_cuts_huge_payloads_but_keeps_the_line(tmp_path: Path) -> None:
    spool = tmp_path / "s.jsonl"
    big = json.dumps({"hook_event_name": "PostToolUse", "tool_response": "x" * 500_000})
    send.deliver(["--spool", str(spool), "--runtime", "claude"], io.StringIO(big))
    line = json.loads(spool.read_text())
    assert line["truncated"] and line["payload"]["hook_event_name"] == "PostToolUse"
    assert len(spool.read_bytes()) <= send.MAX_LINE + 1


def test_sender_chains_the_users_own_notify(tmp_path: Path) -> None:
    out = tmp_path / "theirs"
    then = json.dumps(["/bin/sh", "-c", f'printf %s "$1" > {out}', "sh"])
    argv = ["--spool", str(tmp_path / "s.jsonl"), "--then", then, '{"type": "t"}']
    # As codex runs it: its own process, which exits without waiting for the chained one.
    subprocess.run([sys.executable, "-m", "agent.hooks.send", *argv], timeout=10, check=True)
    wait_for(lambda: out.exists() and out.read_text(), 10, what="the chained notify")
    assert json.loads(out.read_text()) == {"type": "t"}


# -- inbox --------------------------------------------------------------------------------------


def write(path: Path, *lines: str) -> None:
    with path.open("a") as f:
        f.write("".join(lines))


def test_inbox_reads_new_lines_in_order_and_numbers_them(tmp_path: Path) -> None:
    old = tmp_path / "old.jsonl"
    write(old, '{"at": 1, "runtime": "pi", "payload": {"type": "agent_end"}}\n')
    inbox = HookInbox(tmp_path)  # what was there before the agent started is history
    new = tmp_path / "s1.jsonl"
    write(new, '{"at": 2, "runtime": "pi", "payload": {"type": "agent_start"}}\n', '{"at": 3,')
    got = inbox.drain()
    assert [(s.session, s.event, s.seq) for s in got] == [("s1", "agent_start", 1)]
    write(new, ' "runtime": "pi", "payload": {"type": "agent_end"}}\n', "garbage\n")
    write(old, '{"at": 4, "runtime": "pi", "payload": {"type": "turn_end"}}\n')
    got = inbox.drain()
    assert [(s.session, s.event, s.seq) for s in got] == [
        ("old", "turn_end", 1),
        ("s1", "agent_end", 2),
    ]
    assert inbox.bad_lines == 1 and inbox.drain() == []


def test_inbox_rotates_a_big_spool_once_read(tmp_path: Path) -> None:
    inbox = HookInbox(tmp_path)
    path = tmp_path / "s1.jsonl"
    line = json.dumps({"at": 1, "runtime": "pi", "payload": {"type": "turn_end", "x": "y" * 1000}})
    count = ROTATE_BYTES // len(line) + 2
    write(path, *([line + "\n"] * count))
    assert len(inbox.drain()) == count
    assert not path.exists()
    write(path, '{"at": 5, "runtime": "pi", "payload": {"type": "agent_end"}}\n')
    assert [s.event for s in inbox.drain()] == ["agent_end"]


def test_inbox_ignores_a_spool_named_like_no_session(tmp_path: Path) -> None:
    inbox = HookInbox(tmp_path)
    write(tmp_path / "bad name!.jsonl", '{"at": 1, "payload": {}}\n')
    assert inbox.drain() == [] and inbox.bad_lines == 1


# -- meaning ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runtime", "event", "extra", "state", "event_type"),
    [
        ("claude", "SessionStart", {}, SessionState.IDLE, None),
        ("claude", "UserPromptSubmit", {"prompt": "hi"}, SessionState.WORKING, "run.started"),
        ("claude", "PreToolUse", {"tool_name": "Bash"}, SessionState.WORKING, "tool_call"),
        ("claude", "PostToolUse", {"tool_name": "Bash"}, SessionState.WORKING, "tool_result"),
        ("claude", "Notification", {"notification_type": "permission_prompt"},
         SessionState.BLOCKED, "blocked"),
        ("claude", "Notification", {"notification_type": "elicitation_dialog"},
         SessionState.BLOCKED, "blocked"),
        ("claude", "Notification", {"notification_type": "idle_prompt"}, SessionState.IDLE, None),
        ("claude", "Stop", {}, SessionState.IDLE, "run.completed"),
        ("claude", "SubagentStop", {}, SessionState.WORKING, "tool_result"),
        ("codex", "agent-turn-complete", {"turn-id": "t1"}, SessionState.IDLE, "run.completed"),
        ("pi", "agent_start", {}, SessionState.WORKING, "run.started"),
        ("pi", "turn_end", {}, None, None),
        ("pi", "agent_end", {}, SessionState.IDLE, "run.completed"),
        ("pi", "agent_end", {"stopReason": "stop"}, SessionState.IDLE, "run.completed"),
        ("pi", "agent_end", {"stopReason": "aborted"}, SessionState.IDLE, None),
        ("pi", "agent_end", {"stopReason": "error"}, SessionState.IDLE, "run.error"),
        ("pi", "tool_execution_start", {"toolName": "bash"}, SessionState.WORKING, "tool_call"),
        ("stub", "whatever", {}, None, None),
    ],
)  # fmt: skip
def test_each_signal_means_a_state_and_an_event(
    runtime: str, event: str, extra: dict[str, object], state: SessionState | None,
    event_type: str | None,
) -> None:  # fmt: skip
    m = meaning(sig(runtime, event, **extra))
    assert (m.state, m.event_type) == (state, event_type)
    ev = to_event(sig(runtime, event, **extra), m, tenant="t", host="h", boot_id="b", run_id="r")
    assert (ev.event_type if ev else None) == event_type
    if ev is not None:
        assert ev.provenance == f"hook:{runtime}:{event}" and ev.session == "s1"
        assert ev.operator_action_required is (event_type == "blocked")


def test_claude_prompt_id_is_the_run_id_and_codex_title_turns_are_no_run() -> None:
    assert meaning(sig("claude", "Stop", prompt_id="p-1")).run_id == "p-1"
    title = sig(
        "codex",
        "agent-turn-complete",
        **{"input-messages": ["Generate a concise, single-line task title"]},
    )
    assert meaning(title).event_type is None
    assert meaning(sig("codex", "agent-turn-complete", **{"turn-id": "t9"})).run_id == "t9"


# -- wiring -------------------------------------------------------------------------------------


def test_claude_settings_hook_every_event_into_the_spool(tmp_path: Path) -> None:
    wiring = hook_launch_args("claude", "s1", tmp_path)
    assert wiring.argv[0] == "--settings"
    wiring.write_files()
    settings = json.loads(Path(wiring.argv[1]).read_text())
    assert set(settings["hooks"]) == set(CLAUDE_EVENTS)
    assert "permission_prompt" in settings["hooks"]["Notification"][0]["matcher"]
    command = settings["hooks"]["Stop"][0]["hooks"][0]["command"]
    spool = spool_path(tmp_path, "s1")
    spool.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(command, shell=True, input=b'{"hook_event_name":"Stop"}', check=True)
    assert json.loads(spool.read_text())["payload"]["hook_event_name"] == "Stop"


def test_codex_notify_is_toml_and_keeps_the_users(tmp_path: Path) -> None:
    home = tmp_path / "codex"
    home.mkdir()
    (home / "config.toml").write_text('notify = ["my-notifier", "--x"]\n')
    wiring = hook_launch_args("codex", "s1", tmp_path, env={"CODEX_HOME": str(home)})
    assert wiring.argv[0] == "-c"
    notify = tomllib.loads(wiring.argv[1])["notify"]
    assert notify[1:3] == ["-m", "agent.hooks.send"]
    assert json.loads(notify[notify.index("--then") + 1]) == ["my-notifier", "--x"]
    assert (
        hook_launch_args("codex", "s1", tmp_path, env={"HOME": str(tmp_path)})
        .argv[1]
        .count("--then")
        == 0
    )


def test_pi_loads_the_shipped_extension(tmp_path: Path) -> None:
    wiring = hook_launch_args("pi", "s1", tmp_path)
    assert wiring.argv == ["-e", str(PI_EXTENSION)] and PI_EXTENSION.exists()
    assert wiring.env["FLEET_HOOK_SPOOL"] == str(spool_path(tmp_path, "s1"))
    assert hook_launch_args("stub", "s1", tmp_path).argv == []


def test_with_args_appends_to_argv_or_shell_string() -> None:
    assert with_args(["claude"], ["--settings", "/a b"]) == ["claude", "--settings", "/a b"]
    assert shlex.split(str(with_args("claude --x", ["--settings", "/a b"]))) == [
        "claude", "--x", "--settings", "/a b",
    ]  # fmt: skip
    assert with_args("claude", []) == "claude"


def test_hook_subcommand_of_fleet_agent(tmp_path: Path) -> None:
    spool = tmp_path / "s.jsonl"
    env = {**os.environ, "FLEET_HOOK_SPOOL": str(spool), "FLEET_HOOK_RUNTIME": "pi"}
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "hook", '{"type": "agent_end"}'],
        env=env, capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(spool.read_text())["payload"] == {"type": "agent_end"}


def test_wire_adds_args_env_and_files_unless_the_roster_opts_out(tmp_path: Path) -> None:
    command, env = wire("claude", "s1", tmp_path, ["claude"], {"PATH": "/x"})
    assert command[:2] == ["claude", "--settings"] and Path(command[2]).exists()
    assert env["PATH"] == "/x" and env["FLEET_HOOK_RUNTIME"] == "claude"
    off = {"FLEET_HOOKS": "off"}
    assert wire("claude", "s2", tmp_path, "claude", off) == ("claude", off)
    # Not the runtime's own CLI (a stub, a wrapper): no arguments it would not know...
    stub = [sys.executable, "-m", "agent", "stub"]
    assert wire("claude", "s3", tmp_path, stub, {}) == (stub, {})
    assert wire("codex", "s3", tmp_path, "my-wrapper --x", {})[0] == "my-wrapper --x"
    # ...unless the roster says the wrapper passes them on.
    command, _ = wire("pi", "s4", tmp_path, "my-wrapper", {"FLEET_HOOKS": "on"})
    assert str(command).startswith("my-wrapper -e ")
    assert wire("codex", "s5", tmp_path, "/opt/x/.bin/codex --no-daemon", {})[0] != (
        "/opt/x/.bin/codex --no-daemon"
    )
