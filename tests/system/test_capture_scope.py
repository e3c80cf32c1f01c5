"""Capture only what you manage (issue 16, build 3): a session nobody put in the roster is
listed but its output never reaches the pane logs, unless `capture_unmanaged`; the logs that
are written are 0600. Real tmux, NATS, agent and CLI."""

from __future__ import annotations

import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from agent.config import SessionSpec
from tests.support.fleet import Fleet, rows_by_session, wait_for

pytestmark = pytest.mark.timeout(90)

SECRET = "sk-not-for-the-fleet-4242"


def by_hand(socket: str, name: str) -> None:
    # What an operator opens next to the fleet: it prints a secret, over and over.
    script = f"while :; do echo {SECRET}; sleep 0.2; done"
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-s", name, script], check=True)


def pane_piped(socket: str, name: str) -> str:
    out = subprocess.run(
        ["tmux", "-L", socket, "display", "-p", "-t", f"={name}:", "#{pane_pipe}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def start(fleet: Fleet, socket: str, **kw: bool) -> tuple[str, Path]:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    config = fleet.agent_config(tenant, "h1", socket, [SessionSpec(name="core1")], **kw)
    logs = Path(config.state_dir) / "logs"
    fleet.start_controller(fleet.controller_config([tenant]))
    fleet.start_agent(config)
    wait_for(lambda: rows_by_session(fleet.ps("--tenant", tenant)).get("core1"), timeout=30)
    return tenant, logs


def spawn_and_wait_for_log(fleet: Fleet, tenant: str, logs: Path) -> Path:
    """A managed session started after the by-hand one: once its log has its output, a
    discovery pass that saw both sessions has set up every pipe it was going to. (It prints
    in a loop: what a pane prints before it is piped is not in the log.)"""
    loop = "while :; do echo managed-out; sleep 0.2; done"
    spawned = fleet.cli("spawn", f"{tenant}/h1", "--name", "eph", "--", "sh", "-c", loop)
    assert spawned.returncode == 0, spawned.stderr
    log = logs / "eph.log"
    wait_for(
        lambda: log.exists() and b"managed-out" in log.read_bytes(),
        timeout=20,
        what="the managed session's output in its pane log",
    )
    return log


def test_unmanaged_output_never_reaches_the_logs(fleet: Fleet, tmux_socket: str) -> None:
    tenant, logs = start(fleet, tmux_socket)
    by_hand(tmux_socket, "byhand")
    row = wait_for(
        lambda: rows_by_session(fleet.ps("--tenant", tenant)).get("byhand"),
        timeout=20,
        what="the by-hand session listed",
    )
    # Listed: name, runtime, pane state.
    assert "UNMANAGED" in row["flags"] and row["session"]["managed"] is False
    assert row["session"]["pane"] == "alive" and row["session"]["runtime_observed"] == "shell"
    # A log an older agent left 0644 is made private when the pane is piped again.
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "eph.log").write_text("")
    (logs / "eph.log").chmod(0o644)
    managed = spawn_and_wait_for_log(fleet, tenant, logs)
    assert stat.S_IMODE(managed.stat().st_mode) == 0o600
    assert stat.S_IMODE((logs / "core1.log").stat().st_mode) == 0o600
    assert not (logs / "byhand.log").exists()
    assert pane_piped(tmux_socket, "byhand") == "0"
    for path in logs.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path


def test_capture_unmanaged_flag_captures_them(fleet: Fleet, tmux_socket: str) -> None:
    _, logs = start(fleet, tmux_socket, capture_unmanaged=True)
    by_hand(tmux_socket, "byhand")
    log = logs / "byhand.log"
    wait_for(
        lambda: log.exists() and SECRET.encode() in log.read_bytes(),
        timeout=20,
        what="the by-hand session captured when asked for",
    )
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert pane_piped(tmux_socket, "byhand") == "1"
