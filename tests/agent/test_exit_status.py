"""A dead pane's exit status when tmux has none: tmux 3.3a sometimes closes a pane (pty EOF)
and never reaps its process, leaving `pane_dead_signal` empty until the pane is respawned;
the agent reads the zombie's wait status from /proc instead."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.discovery.procs import zombie_wait_status
from agent.discovery.sessions import exit_of
from agent.discovery.tmux import Pane


def pane(
    pid: int | None, dead: bool = True, status: int | None = None, sig: int | None = None
) -> Pane:
    return Pane("s", 0, 0, "%1", pid, dead, status, sig, None, "", 80, 24, False)


Zombie = Callable[[list[str], bool], "subprocess.Popen[bytes]"]


@pytest.fixture
def zombie() -> Iterator[Zombie]:
    """A child that has ended and that nobody reaped yet (we wait for it only at the end)."""
    procs: list[subprocess.Popen[bytes]] = []

    def make(argv: list[str], kill: bool) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv)
        procs.append(proc)
        if kill:
            proc.send_signal(signal.SIGKILL)
        stat = Path(f"/proc/{proc.pid}/stat")
        deadline = time.monotonic() + 10
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        return proc

    yield make
    for proc in procs:
        proc.wait()


def test_a_killed_unreaped_pane_process_says_its_signal(zombie: Zombie) -> None:
    proc = zombie(["sleep", "100"], True)
    assert zombie_wait_status(proc.pid) == signal.SIGKILL
    assert exit_of(pane(proc.pid)) == (None, 9)


def test_an_exited_unreaped_pane_process_says_its_status(zombie: Zombie) -> None:
    proc = zombie(["sh", "-c", "exit 3"], False)
    assert exit_of(pane(proc.pid)) == (3, None)


def test_tmux_status_wins_and_live_or_reaped_panes_say_nothing() -> None:
    assert exit_of(pane(123, status=0)) == (0, None)
    assert exit_of(pane(123, sig=15)) == (None, 15)
    assert exit_of(pane(123, dead=False)) == (None, None)
    assert exit_of(None) == (None, None)
    reaped = subprocess.Popen(["true"])
    reaped.wait()  # reaped: the kernel holds no status for it any more
    assert zombie_wait_status(reaped.pid) is None
    assert zombie_wait_status(2**22 + 7) is None  # no such pid
    assert exit_of(pane(None)) == (None, None)
