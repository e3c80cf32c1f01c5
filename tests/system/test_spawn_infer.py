"""`fleet spawn` without `--runtime` infers it from the command (issue 16, build 5): a shell
command is a `shell` session, not a `stub` one flagged DRIFT. Real NATS, tmux, CLI."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import pytest

from agent.config import SessionSpec
from agent.control.spawn import infer_runtime
from agent.discovery.runtimes import load_runtimes
from tests.support.fleet import Fleet, rows_by_session, wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(
    ("command", "runtime"),
    [
        (["bash", "-c", "sleep 30"], "shell"),
        (["sh", "-c", "exec claude --resume"], "claude"),
        (["/usr/local/bin/codex", "--full-auto"], "codex"),
        (["node", "/opt/lib/node_modules/@mariozechner/pi-coding-agent/dist/cli.js"], "pi"),
        ([sys.executable, "-m", "agent", "stub"], "stub"),
        (["sleep", "30"], "shell"),  # nothing known: a plain command, never drift
        (None, "stub"),  # no command: the bundled stub, as before
    ],
)
def test_infer_runtime(command: list[str] | None, runtime: str) -> None:
    assert infer_runtime(command, load_runtimes()) == runtime


def test_spawn_shell_command_is_shell_without_drift(fleet: Fleet, tmux_socket: str) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    fleet.start_controller(fleet.controller_config([tenant]))
    fleet.start_agent(
        fleet.agent_config(tenant, "h1", tmux_socket, [SessionSpec(name="core1", runtime="stub")])
    )
    wait_for(lambda: rows_by_session(fleet.ps("--tenant", tenant)).get("core1"), timeout=30)
    spawned = fleet.cli(
        "spawn", f"{tenant}/h1", "--name", "job-1", "--json", "--", "bash", "-c", "sleep 30; true"
    )
    assert spawned.returncode == 0, spawned.stderr
    result = json.loads(spawned.stdout)
    assert "spawned ephemeral shell session job-1" in result["message"], result

    def observed() -> dict[str, Any] | None:
        row = rows_by_session(fleet.ps("--tenant", tenant)).get("job-1")
        # `sleep 30; true` keeps bash the pane's process, so the observed runtime is shell.
        return row if row and row["session"]["runtime_observed"] else None

    row = wait_for(observed, timeout=20, what="job-1 listed with an observed runtime")
    assert row["session"]["runtime_configured"] == "shell"
    assert row["session"]["runtime_observed"] == "shell"
    assert row["session"]["kind"] == "ephemeral"
    assert "DRIFT" not in row["flags"], row
    # An explicit --runtime is still taken as given (and its drift reported truthfully).
    spawned = fleet.cli(
        "spawn",
        f"{tenant}/h1",
        "--name",
        "job-2",
        "--runtime",
        "stub",
        "--",
        "bash",
        "-c",
        "sleep 30; true",
    )
    assert spawned.returncode == 0, spawned.stderr
    row = wait_for(
        lambda: (
            (r := rows_by_session(fleet.ps("--tenant", tenant)).get("job-2"))
            and r["session"]["runtime_observed"]
            and r
        ),
        timeout=20,
        what="job-2 listed with an observed runtime",
    )
    assert row["session"]["runtime_configured"] == "stub"
    assert row["flags"] == ["DRIFT"]
