"""`fleet top`: one plain frame when not a terminal, and the live view in a real tmux pane
(80x24) that follows a session working -> idle without a key press and quits on `q`."""

from __future__ import annotations

import os
import shlex
import subprocess

from tests.support.fleet import BIN, Fleet, wait_for
from tests.system.test_steering import cli_json, stub, up


def test_once_prints_a_table_of_the_sessions(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder"), stub("reviewer")])
    result = fleet.cli("top", "--once", "--tenant", tenant)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b[" not in out  # not a terminal: plain text, no escapes
    header = next(line for line in out.splitlines() if "SESSION" in line)
    assert header.split()[:4] == ["HOST", "SESSION", "STATE", "IN-STATE"]
    for name in ("coder", "reviewer"):
        line = next(line for line in out.splitlines() if f" {name} " in f" {line} ")
        assert f"{tenant}/h1" in line and "idle" in line, out
    narrowed = fleet.cli("top", "--once", "--tenant", tenant, "--state", "working")
    assert narrowed.returncode == 0 and "coder" not in narrowed.stdout


def keys(socket: str, *names: str) -> None:
    for name in names:
        subprocess.run(["tmux", "-L", socket, "send-keys", "-t", "top", name], check=True)


def _command(socket: str) -> str:
    return subprocess.run(
        ["tmux", "-L", socket, "display", "-p", "-t", "top", "#{pane_current_command}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def _pane(socket: str, target: str, history: int = 0) -> str:
    """The visible pane, and ``history`` rows of scrollback above it."""
    return subprocess.run(
        ["tmux", "-L", socket, "capture-pane", "-p", "-S", str(-history), "-t", target],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


def test_live_view_follows_the_fleet_and_quits_on_q(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "2.0")], heartbeat_interval_s=30.0)
    # The viewer runs in its own tmux server (a socket of ours), an 80x24 terminal.
    viewer = f"{tmux_socket}-top"
    command = shlex.join([str(BIN / "fleet"), "top", "--tenant", tenant])
    env = f"FLEET_NATS_URL={shlex.quote(fleet.nats.url)}"
    try:
        subprocess.run(
            [
                *("tmux", "-L", viewer, "-f", os.devnull, "new-session", "-d", "-s", "top"),
                *("-x", "80", "-y", "24", f"{env} {command}; sleep 30"),
            ],
            check=True,
        )
        wait_for(
            lambda: "coder" in _pane(viewer, "top") and "idle" in _pane(viewer, "top"),
            what="the live view shows coder idle",
        )
        code, result = cli_json(fleet, "send", "coder", "the long one", "--no-verify")
        assert code == 0, result
        # Pushed, not polled: no key is pressed and no heartbeat comes (30 s interval).
        wait_for(lambda: "working" in _pane(viewer, "top"), what="working shown")
        wait_for(
            lambda: "working" not in _pane(viewer, "top").split("events")[0],
            timeout=20,
            what="idle again",
        )
        assert all(len(line) <= 80 for line in _pane(viewer, "top").splitlines())
        # `e` on the selected session runs `fleet explain` in the terminal; Enter comes back.
        keys(viewer, "j", "e")
        wait_for(lambda: "back to fleet top" in _pane(viewer, "top"), what="explain shown")
        shown = _pane(viewer, "top", history=200)  # explain's output is longer than the pane
        assert f"fleet explain {tenant}/h1/coder" in shown and "prompt" in shown, shown
        keys(viewer, "Enter")
        wait_for(lambda: "fleet top" in _pane(viewer, "top").splitlines()[0], what="view back")
        keys(viewer, "q")
        # The view's screen is gone (the terminal shows what was there before it, explain's
        # output), and the process has ended: the shell runs the `sleep` after it.
        wait_for(lambda: "need attention" not in _pane(viewer, "top"), what="top quit")
        wait_for(lambda: _command(viewer) == "sleep", what="fleet top exited")
    finally:
        subprocess.run(["tmux", "-L", viewer, "kill-server"], capture_output=True, check=False)
