"""`fleet up` as a user runs it: everything comes up, `fleet ps` finds it, Ctrl-C leaves
nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from controller.natsserver.embedded import free_port
from tests.support.fleet import wait_for

BIN = Path(sys.executable).parent


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; it only waits for its parent to reap it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_fleet_up_then_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    socket = f"fleet-up-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "200"}
    env.pop("FLEET_NATS_URL", None)
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [
            str(BIN / "fleet"),
            "up",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(free_port()),
            "--tmux-socket",
            socket,
            "--heartbeat-interval",
            "0.5",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    log.close()
    try:

        def demo_sessions() -> list[dict] | None:
            # No --nats: the CLI finds the fleet through the context file `fleet up` wrote.
            result = subprocess.run(
                [str(BIN / "fleet"), "ps", "--json"],
                capture_output=True,
                text=True,
                env=env,
                check=False,
                timeout=20,
            )
            if result.returncode != 0:
                return None
            rows = [r for r in json.loads(result.stdout) if r["session"]]
            return rows if len(rows) == 3 else None

        rows = wait_for(demo_sessions, timeout=60, what="demo fleet in fleet ps")
        assert {r["session"]["name"] for r in rows} == {"coder", "reviewer", "worker-3"}
        assert {r["tenant"] for r in rows} == {"demo"}
        stub_pids = [r["session"]["pid"] for r in rows]
        nats_pid = int((tmp_path / "data" / "nats" / "nats-server.pid").read_text())
        tmux_pid = int(
            subprocess.run(
                ["tmux", "-L", socket, "display", "-p", "#{pid}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        table = subprocess.run(
            [str(BIN / "fleet"), "ps"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=20,
        )
        assert "coder" in table.stdout and "HOST-STATE" in table.stdout

        up.send_signal(signal.SIGINT)  # what Ctrl-C does
        assert up.wait(30) == 0, (tmp_path / "up.log").read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)

    output = (tmp_path / "up.log").read_text()
    assert "stopped" in output and "Traceback" not in output
    for pid in [nats_pid, tmux_pid, *stub_pids]:
        assert not alive(pid), f"pid {pid} outlived fleet up"
    assert (
        subprocess.run(["tmux", "-L", socket, "ls"], capture_output=True, check=False).returncode
        != 0
    )
