"""The stub agent, driven as an operator would: in a real tmux pane, and through pipes."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.discovery.detect import classify
from agent.discovery.runtimes import load_runtimes, observed_runtime
from agent.stub.app import EVENTS_BEGIN, EVENTS_END, parse_task
from protocol.emission import EmissionParser, Emitted
from protocol.heartbeat import SessionState

REPO = Path(__file__).resolve().parents[2]
SPECS = load_runtimes()
RULES = SPECS["stub"].rules
DEADLINE_S = 15.0


class StubPane:
    """One stub in its own tmux server (private socket), seen through capture-pane."""

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self.socket_path: str | None = None

    def tmux(self, *args: str) -> str:
        cmd = ["tmux", "-L", self.socket, "-f", "/dev/null", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout

    def screen(self) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", "stub").splitlines()

    def history(self) -> str:
        # -J joins the rows a long JSON line was wrapped into.
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "stub")

    def pipe_to(self, path: Path) -> None:
        """Raw pane output (escapes and all) to ``path``, as the host agent reads it."""
        self.tmux("pipe-pane", "-o", "-t", "stub", f"cat >> {shlex.quote(str(path))}")

    def fmt(self, spec: str) -> str:
        return self.tmux("display-message", "-p", "-t", "stub", spec).strip()

    def state(self) -> SessionState:
        return classify(self.screen(), self.fmt("#{pane_title}"), RULES).state

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "stub", "-l", text)
        self.tmux("send-keys", "-t", "stub", "Enter")

    def key(self, key: str) -> None:
        self.tmux("send-keys", "-t", "stub", key)

    def wait(self, what: str, cond: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.05)
        screen = "\n".join(self.screen())
        raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")

    def wait_text(self, text: str) -> None:
        self.wait(repr(text), lambda: any(text in row for row in self.screen()))

    def wait_state(self, state: SessionState) -> None:
        self.wait(f"state {state.value}", lambda: self.state() is state)


@pytest.fixture
def stub_pane() -> Iterator[Callable[..., StubPane]]:
    panes: list[StubPane] = []

    def start(*args: str, launch: tuple[str, ...] = ("-m", "agent.stub")) -> StubPane:
        pane = StubPane(f"afstub-{os.getpid()}-{secrets.token_hex(4)}")
        panes.append(pane)
        pane.tmux(
            "new-session",
            "-d",
            "-s",
            "stub",
            "-x",
            "100",
            "-y",
            "40",
            "-e",
            f"PYTHONPATH={REPO}",
            sys.executable,
            *launch,
            *args,
        )
        pane.socket_path = pane.fmt("#{socket_path}")
        # Keep the pane after the stub exits, to read its exit status.
        pane.tmux("set-option", "-t", "stub", "remain-on-exit", "on")
        pane.wait("the prompt", lambda: pane.state() is SessionState.IDLE)
        return pane

    yield start
    for pane in panes:
        subprocess.run(["tmux", "-L", pane.socket, "kill-server"], capture_output=True)
        if pane.socket_path:  # kill-server leaves the socket file behind
            Path(pane.socket_path).unlink(missing_ok=True)


def blocks(text: str) -> list[dict]:
    """The JSON objects of the emission blocks in ``text``, in order."""
    out: list[dict] = []
    body: list[str] | None = None
    for line in text.splitlines():
        if line.strip() == EVENTS_BEGIN:
            body = []
        elif line.strip() == EVENTS_END and body is not None:
            out.append(json.loads("".join(body)))
            body = None
        elif body is not None:
            body.append(line.strip())
    return out


def test_a_run_in_tmux_shows_progress_result_and_emissions(stub_pane) -> None:
    pane = stub_pane("--work-seconds", "1.5", "--steps", "3", "--name", "t1")
    assert [row for row in pane.screen() if row.strip()][-1] == "stub>"
    pane.wait("idle title", lambda: pane.fmt("#{pane_title}") == "stub:t1 idle")

    pane.type("hello world")
    pane.wait_text("run r-")
    pane.wait_text("working: step 1/3 ...")
    pane.wait_state(SessionState.WORKING)
    assert classify(pane.screen(), "", RULES).rule == "cancel-hint"  # the screen alone says so
    assert pane.fmt("#{pane_title}") == "stub:t1 working"
    pane.wait_text("result: done: hello world (3 steps,")
    pane.wait_state(SessionState.IDLE)
    assert not any("ctrl-c to cancel" in row for row in pane.screen())

    events = blocks(pane.history())
    assert [e["event_type"] for e in events] == [
        "run.started",
        "tool_call",
        "tool_result",
        "run.completed",
    ]
    run_id = events[0]["payload"]["run_id"]
    assert events[0]["payload"]["prompt"] == "hello world"
    assert [e["idempotency_key"] for e in events] == [f"{run_id}:{n}" for n in (1, 2, 3, 4)]
    assert all(e["payload"]["run_id"] == run_id for e in events)
    assert events[1]["payload"]["tool"] == "lookup"
    assert events[2]["links"] == [{"type": "caused_by", "target": events[1]["idempotency_key"]}]
    done = events[3]
    assert done["operator_action_required"] is False
    assert done["risk_detected"] is False
    assert done["artifact_refs"] == [f"stub://t1/{run_id}/result.txt"]
    assert 0 < done["confidence"] <= 1


def test_the_raw_pane_stream_parses_as_the_emission_contract(stub_pane, tmp_path) -> None:
    pane = stub_pane("--work-seconds", "1", "--steps", "2")
    raw = tmp_path / "pane.log"
    pane.pipe_to(raw)
    pane.type("first")
    pane.wait_text("result: done: first")
    pane.type("/sleep 30 second")
    pane.wait_state(SessionState.WORKING)
    pane.key("C-c")
    pane.wait_text("cancelled: run r-")
    pane.wait("the raw log", lambda: "run.cancelled" in raw.read_text(errors="replace"))
    parser = EmissionParser(SPECS["stub"].events_begin, SPECS["stub"].events_end)
    results = parser.feed(raw.read_text(), 0.0) + parser.close()
    assert all(isinstance(r, Emitted) and "_notes" not in r.payload for r in results), results
    assert [r.event_type for r in results if isinstance(r, Emitted)] == [
        "run.started",
        "tool_call",
        "tool_result",
        "run.completed",
        "run.started",
        "tool_call",
        "run.cancelled",
    ]


def test_ctrl_c_during_a_run_cancels_it(stub_pane) -> None:
    pane = stub_pane()
    pane.type("/sleep 30 long job")
    pane.wait_state(SessionState.WORKING)
    pane.key("C-c")
    pane.wait_text("cancelled: run r-")
    pane.wait_state(SessionState.IDLE)
    assert not any("ctrl-c to cancel" in row for row in pane.screen())
    events = blocks(pane.history())
    assert [e["event_type"] for e in events][-1] == "run.cancelled"
    assert events[-1]["payload"]["reason"] == "interrupted"
    assert events[-1]["payload"]["run_id"] == events[0]["payload"]["run_id"]


def test_confirm_blocks_until_answered(stub_pane) -> None:
    pane = stub_pane("--work-seconds", "0.5")
    pane.type("/confirm deploy")
    pane.wait_state(SessionState.BLOCKED)
    match = classify(pane.screen(), pane.fmt("#{pane_title}"), RULES)
    assert (match.rule, match.source) == ("confirm-question", "screen")
    assert match.line == "Proceed? [y/N]"
    assert pane.fmt("#{pane_title}") == "stub:stub blocked"
    pane.type("y")
    pane.wait_text("result: done: deploy")
    pane.wait_state(SessionState.IDLE)
    assert not any("Proceed?" in row for row in pane.screen())  # erased once answered
    assert any(row == "  confirm: yes" for row in pane.screen())


def test_ctrl_c_while_asking_cancels_and_clears_the_question(stub_pane) -> None:
    pane = stub_pane()
    pane.type("/confirm deploy")
    pane.wait_state(SessionState.BLOCKED)
    pane.key("C-c")
    pane.wait_text("cancelled: run r-")
    pane.wait_state(SessionState.IDLE)
    assert not any("Proceed?" in row for row in pane.screen())


def test_prompt_typed_during_a_run_runs_next_without_stale_lines(stub_pane) -> None:
    pane = stub_pane("--work-seconds", "1", "--steps", "2")
    pane.type("first")
    pane.wait_state(SessionState.WORKING)
    pane.type("second")  # typed ahead: not echoed into the status line, run after "first"
    pane.wait_text("result: done: second")
    pane.wait_state(SessionState.IDLE)
    assert not any("ctrl-c to cancel" in row for row in pane.screen())
    assert [e["event_type"] for e in blocks(pane.history())].count("run.completed") == 2


def test_ctrl_c_at_the_prompt_redraws_it(stub_pane) -> None:
    pane = stub_pane()
    pane.key("C-c")
    pane.wait("a second prompt", lambda: sum(r.startswith("stub>") for r in pane.screen()) == 2)
    assert pane.state() is SessionState.IDLE
    pane.type("still alive")  # and the prompt still takes input
    pane.wait_text("result: done: still alive")


def exit_status(pid: int) -> int | None:
    """A zombie's wait status from /proc (field 52); None while it runs or once reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return int(fields[-1]) if fields[0] == "Z" else None


def test_ctrl_d_at_the_prompt_exits_0(stub_pane) -> None:
    pane = stub_pane()
    pid = int(pane.fmt("#{pane_pid}"))
    pane.key("C-d")
    # tmux 3.3a sometimes never reaps a pane's exited process (pane_dead=1, empty
    # pane_dead_status), so the stub's exit is judged by its own status when tmux has none.
    codes: list[int] = []

    def exited() -> bool:
        status = pane.fmt("#{pane_dead_status}")
        code = int(status) if status else exit_status(pid)
        if code is not None:
            codes.append(code)
        return bool(codes)

    pane.wait("the stub to exit", exited)
    assert codes[0] == 0
    assert "bye" in pane.screen()


@pytest.mark.parametrize("launch", [("-m", "agent.stub"), ("-m", "agent", "stub")])
def test_the_pane_process_is_observed_as_the_stub_runtime(stub_pane, launch) -> None:
    pane = stub_pane(launch=launch)
    pid = int(pane.fmt("#{pane_pid}"))
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ")
    assert observed_runtime([cmdline.decode()], SPECS) == "stub"


def run_piped(*args: str, stdin: str, env: dict[str, str] | None = None) -> str:
    """The stub with pipes for stdin/stdout: no TTY, so plain text and no status line."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "agent.stub", "--work-seconds", "0", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env=full_env,
        check=True,
    )
    assert "\x1b" not in done.stdout
    return done.stdout


@pytest.mark.parametrize(
    ("mode", "types"),
    [
        ("all", ["run.started", "tool_call", "tool_result", "run.completed"]),
        ("partial", ["run.started", "tool_call"]),
        ("none", []),
    ],
)
def test_emit_modes(mode: str, types: list[str]) -> None:
    out = run_piped("--emit", mode, stdin="hello\n")
    assert "result: done: hello" in out
    assert [e["event_type"] for e in blocks(out)] == types


def test_emit_malformed_prints_one_broken_block_per_run() -> None:
    out = run_piped("--emit", "malformed", stdin="one\ntwo\n")
    assert out.count(EVENTS_BEGIN) == out.count(EVENTS_END) == 2
    with pytest.raises(json.JSONDecodeError):
        blocks(out)


def test_fail_directive_ends_in_run_error() -> None:
    out = run_piped(stdin="/fail boom\n")
    assert "result: error: simulated failure (boom)" in out
    last = blocks(out)[-1]
    assert last["event_type"] == "run.error"
    assert (last["severity"], last["operator_action_required"]) == ("error", True)


def test_confirm_declined_completes_without_work() -> None:
    out = run_piped(stdin="/confirm drop tables\nn\n")
    assert "Proceed? [y/N] n" in out
    assert "result: declined: drop tables" in out
    assert "working: step" not in out
    events = blocks(out)
    assert [e["event_type"] for e in events] == ["run.started", "run.completed"]
    assert events[-1]["payload"]["status"] == "declined"


def test_input_ending_while_asking_cancels_the_run_and_exits_0() -> None:
    out = run_piped(stdin="/confirm x\n")
    assert [e["event_type"] for e in blocks(out)] == ["run.started", "run.cancelled"]
    assert out.rstrip().endswith("bye")


def test_ignore_input_never_runs() -> None:
    out = run_piped("--ignore-input", stdin="hello\nworld\n")
    assert "run r-" not in out and EVENTS_BEGIN not in out
    assert out.count("stub> ") == 3


def test_environment_configures_the_stub_and_flags_win() -> None:
    env = {"FLEET_STUB_STEPS": "2", "FLEET_STUB_NAME": "env-name", "FLEET_STUB_EMIT": "none"}
    out = run_piped(stdin="x\n", env=env)
    assert "'env-name'" in out and "working: step 2/2 ..." in out
    assert EVENTS_BEGIN not in out
    out = run_piped("--steps", "4", stdin="x\n", env=env)
    assert "working: step 4/4 ..." in out


@pytest.mark.parametrize("args", [["--steps", "0"], ["--emit", "bogus"], ["--work-seconds", "x"]])
def test_bad_options_exit_2(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent.stub", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "error: argument" in done.stderr


def test_directives() -> None:
    assert parse_task("/confirm ship it").confirm
    assert parse_task("/fail x").fail
    assert parse_task("/sleep 2.5 nap").seconds == 2.5
    assert parse_task("/sleep 2.5 nap").text == "nap"
    assert parse_task("/sleep soon").seconds is None  # not a number: an ordinary prompt
    assert parse_task("/other x").text == "/other x"
