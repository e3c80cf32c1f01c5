"""`fleet init` then `fleet up --config` (issue 16): on a tmux server of the user's with a stub,
a shell and a `claude` (a script of that name on the session's PATH: the claude spec matches
`claude` as the process), init proposes the right roster, and `fleet up` runs it, shows the
sessions in `fleet ps` without restarting them (the same pane pids) and leaves them running
when it stops. Real tmux in a socket dir of the test's own, real `fleet` subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.natsserver.embedded import free_port
from tests.support.fleet import BIN, wait_for

pytestmark = pytest.mark.timeout(180)

STUB = f"{sys.executable} -m agent.stub"
# exec -a: the process is then `claude` itself, as the native binary would be.
FAKE_CLAUDE = '#!/bin/bash\necho "fake claude: type anything"\nexec -a claude cat\n'
SOCKET = "work"


class Home:
    """A socket dir, config dir and PATH of the test's own; the tmux server on it is ours."""

    def __init__(self, root: Path) -> None:
        self.root = root
        fake = root / "bin"
        fake.mkdir()
        (fake / "claude").write_text(FAKE_CLAUDE)
        (fake / "claude").chmod(0o755)
        base = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
        base.pop("FLEET_NATS_URL", None)
        self.env = {
            **base,
            "PATH": f"{fake}:{os.environ['PATH']}",
            "TMUX_TMPDIR": str(root),
            "XDG_CONFIG_HOME": str(root / "cfg"),
            "XDG_STATE_HOME": str(root / "state"),
            "COLUMNS": "200",
        }

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", SOCKET, *args], env=self.env, capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def fleet(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "fleet"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )

    def panes(self) -> dict[str, int]:
        out = self.tmux("list-panes", "-a", "-F", "#{session_name} #{pane_pid}")
        return {name: int(pid) for name, pid in (line.split() for line in out.splitlines())}

    def tree(self, pid: int) -> str:
        """The pane's process and its children's command lines, as the agent reads them."""
        from agent.discovery.procs import ProcessTable

        return " | ".join(ProcessTable.snapshot().tree_cmdlines(pid))


@pytest.fixture
def home() -> Iterator[Home]:
    # Short: a unix socket path must fit in 108 bytes, and pytest's tmp_path may not.
    found = Home(Path(tempfile.mkdtemp(prefix="afu-", dir="/tmp")))
    yield found
    subprocess.run(["tmux", "-L", SOCKET, "kill-server"], env=found.env, capture_output=True)
    shutil.rmtree(found.root, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_sessions(home: Home) -> dict[str, int]:
    for name, command, word in (
        ("stub", STUB, "agent.stub"),
        ("shell", None, "sh"),
        ("claude", "claude", "claude"),
    ):
        cwd = home.root / "work" / name
        cwd.mkdir(parents=True)
        home.tmux("new-session", "-d", "-s", name, "-c", str(cwd), *filter(None, [command]))

        def running(name: str = name, word: str = word) -> bool:
            tree = home.tree(home.panes()[name])
            return bool(tree) and not tree.startswith("tmux") and word in tree

        wait_for(running, timeout=15, what=f"{name}'s process")
    return home.panes()


def test_init_proposes_the_roster_and_fleet_up_adopts_it_without_restarts(home: Home) -> None:
    before = start_sessions(home)
    assert home.tree(before["claude"]).split(" | ")[-1] == "claude"
    printed = home.fleet("init", "--socket", SOCKET, "--print")
    assert printed.returncode == 0, printed.stderr
    roster = tomllib.loads(printed.stdout)
    assert (roster["tenant"], roster["tmux_socket"]) == (SOCKET, SOCKET)
    sessions = {s["name"]: s for s in roster["sessions"]}
    assert {n: s["runtime"] for n, s in sessions.items()} == {
        "stub": "stub",
        "shell": "shell",
        "claude": "claude",
    }
    assert sessions["stub"]["command"] == STUB and sessions["claude"]["command"] == "claude"
    assert "command" not in sessions["shell"]  # a plain shell: the roster's default
    for name, spec in sessions.items():
        assert spec["cwd"] == str(home.root / "work" / name)

    written = home.fleet("init", "--socket", SOCKET, "--yes")
    assert written.returncode == 0, written.stderr
    path = home.root / "cfg" / "agentfleet" / "agent.toml"
    assert tomllib.loads(path.read_text()) == roster

    log = home.root / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [str(BIN / "fleet"), "up", "--config", str(path), "--data-dir", str(home.root / "d"),
             "--port", str(free_port()), "--heartbeat-interval", "0.5"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=home.env,
        )  # fmt: skip
    try:

        def adopted() -> dict[str, dict] | None:
            ps = home.fleet("ps", "--json")
            rows = json.loads(ps.stdout) if ps.returncode == 0 else []
            found = {r["session"]["name"]: r for r in rows if r["session"]}
            return found if set(found) == set(before) else None

        rows = wait_for(adopted, timeout=60, what=f"the sessions in fleet ps; {log.read_text()}")
        assert rows is not None  # for the type checker: wait_for returns a truthy value
        assert {n: r["session"]["pid"] for n, r in rows.items()} == before  # not restarted
        for name, row in rows.items():
            assert (row["tenant"], row["host_state"]) == (SOCKET, "ok")
            assert row["session"]["managed"] is True and row["flags"] == [], row
            assert row["session"]["runtime_observed"] == sessions[name]["runtime"]
        assert home.panes() == before
        health = home.fleet("doctor", "--config", str(path))
        assert health.returncode == 0, health.stdout
        assert f"tmux socket {SOCKET} (roster {path}, tenant {SOCKET}): 3 session(s)" in (
            health.stdout
        )
    finally:
        up.send_signal(signal.SIGINT)  # what Ctrl-C does
        code = up.wait(30)
    assert code == 0, log.read_text()
    assert "your sessions keep running" in log.read_text()
    assert home.panes() == before  # the same sessions, the same pane processes
    assert all(alive(pid) for pid in before.values())
