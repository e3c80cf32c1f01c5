"""What an operator sees when the controller is not there."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from controller.natsserver.embedded import EmbeddedNats, free_port

FLEET = str(Path(sys.executable).parent / "fleet")


def run_fleet(*args: str, url: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = subprocess.run(
        [FLEET, *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "FLEET_NATS_URL": url},
        check=False,
    )
    return result, time.monotonic() - start


def test_unreachable_nats_is_one_line_exit_2_within_3s() -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["ps"], ["ps", "--json"], ["status"]):
        result, took = run_fleet(*args, url=url)
        assert result.returncode == 2
        assert took < 3.0 + 1.5  # the 3 s bound plus interpreter start-up
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert url in lines[0] and "cannot reach NATS" in lines[0]
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_nats_up_but_no_controller(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path) as server:
        result, took = run_fleet("ps", url=server.url)
    assert result.returncode == 2
    assert took < 3.0 + 1.5
    assert "no controller is serving fleet.ctl.ps" in result.stderr
    assert server.url in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_start_up_does_not_load_the_ssh_stack() -> None:
    """Every `fleet` command would pay asyncssh's import (a third of a second here) if the
    CLI loaded the deploy modules up front; only `fleet deploy` needs them."""
    code = "import sys, controller.cli.app; sys.exit('asyncssh' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert done.returncode == 0
