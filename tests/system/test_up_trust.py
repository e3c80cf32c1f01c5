"""`fleet up` on a user's machine: one per data dir, a broker that is watched (orphans
stopped, a killed server restarted or a loud exit), nothing of the user's killed in tmux,
the user's own roster run and left running, and bad input refused in one line.

Real `fleet up` processes, real nats-server and tmux; every wait is on a condition.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.natsserver.embedded import free_port, nats_server_binary
from tests.support.fleet import wait_for

BIN = Path(sys.executable).parent


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie only waits to be reaped


def tmux(sock: str, *args: str, check: bool = True) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    result = subprocess.run(
        ["tmux", "-L", sock, *args], capture_output=True, text=True, check=check, env=env
    )
    return result.stdout


def servers_on(config: Path) -> list[int]:
    """Every live nats-server whose command line names this config (so this store)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(os.fsdecode(argv[0])).name == "nats-server" and os.fsencode(config) in argv:
            if alive(int(proc.name)):
                pids.append(int(proc.name))
    return pids


@dataclass
class Up:
    """One `fleet up` process and the files it uses."""

    root: Path
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def nats_pid(self) -> int:
        return int((self.data / "nats" / "nats-server.pid").read_text())

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def fleet(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "fleet"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
            timeout=20,
        )

    def rows(self) -> list[dict]:
        result = self.fleet("ps", "--json")
        return json.loads(result.stdout) if result.returncode == 0 else []

    def wait_sessions(self, names: set[str], timeout: float = 60) -> list[dict]:
        def ready() -> list[dict] | None:
            rows = [r for r in self.rows() if r["session"] and r["host_state"] == "ok"]
            return rows if names <= {r["session"]["name"] for r in rows} else None

        try:
            return wait_for(ready, timeout=timeout, what=f"sessions {names} in fleet ps")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nfleet up said:\n{self.output()[-3000:]}") from None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        return self.proc.wait(30)


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator:
    started: list[Up] = []

    def start(*args: str, root: Path = tmp_path, name: str = "up") -> Up:
        env = {**os.environ, "XDG_CONFIG_HOME": str(root / "config"), "COLUMNS": "200"}
        env.pop("FLEET_NATS_URL", None)
        log = root / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(BIN / "fleet"), "up", "--data-dir", str(root / "data"), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        up = Up(root, proc, log, env)
        started.append(up)
        return up

    yield start
    for up in started:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()


@pytest.fixture
def sock() -> Iterator[str]:
    name = f"fleet-up-trust-{uuid.uuid4().hex[:8]}"
    yield name
    tmux(name, "kill-server", check=False)  # our own socket only
    base = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
    (base / name).unlink(missing_ok=True)  # tmux leaves the socket file behind


def demo_args(sock: str) -> list[str]:
    return ["--port", str(free_port()), "--tmux-socket", sock, "--heartbeat-interval", "0.5"]


DEMO = {"coder", "reviewer", "worker-3"}


def test_second_fleet_up_on_one_data_dir_is_refused_naming_the_holder(start_up, sock) -> None:
    first = start_up(*demo_args(sock))
    first.wait_sessions(DEMO)
    second = start_up(*demo_args(sock + "-b"), name="second")
    assert second.proc.wait(30) == 2
    lines = second.output().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in second.output(), lines
    assert "in use by another fleet up" in lines[0] and f"pid {first.proc.pid}," in lines[0]
    assert first.proc.poll() is None  # the holder runs on, untouched
    assert servers_on(first.data / "nats" / "nats-server.conf") == [first.nats_pid]
    assert first.stop() == 0


def test_orphaned_nats_server_is_stopped_never_doubled(start_up, sock, tmp_path) -> None:
    crashed = start_up(*demo_args(sock), name="crashed")
    crashed.wait_sessions(DEMO)
    config = crashed.data / "nats" / "nats-server.conf"
    first_server = crashed.nats_pid
    crashed.proc.kill()  # kill -9: no cleanup at all
    crashed.proc.wait()
    # The server dies with its parent (parent-death signal)…
    wait_for(lambda: not alive(first_server), timeout=15, what="nats-server to die with fleet up")
    # …and one left running anyway (a `fleet up` without that guard) is what we start by
    # hand, on the same config and store, as an orphan would be.
    orphan = subprocess.Popen(
        [str(nats_server_binary()), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: servers_on(config) == [orphan.pid], what="the orphan up")
        wait_for(lambda: crashed.nats_pid == orphan.pid, what="the orphan's pid file")
        again = start_up(*demo_args(sock), name="again")
        again.wait_sessions(DEMO)
        assert orphan.wait(15) is not None  # stopped by fleet up (SIGTERM), reaped here
        assert servers_on(config) == [again.nats_pid] != [orphan.pid]
        assert f"stopping nats-server pid {orphan.pid}" in again.output()
        assert again.stop() == 0
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    # The crashed run's demo sessions were inherited from its record and removed now.
    assert tmux(sock, "ls", check=False) == ""
    assert servers_on(config) == []


def test_nats_server_killed_is_restarted_and_the_fleet_reconnects(start_up, sock) -> None:
    up = start_up(*demo_args(sock))
    up.wait_sessions(DEMO)
    old = up.nats_pid
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: up.nats_pid != old and alive(up.nats_pid), timeout=30, what="a new server")
    config = up.data / "nats" / "nats-server.conf"
    assert servers_on(config) == [up.nats_pid]

    # Reconnected: the API answers, and the host heartbeats again (its age falls below one
    # interval after the restart, which only a reconnected agent and controller can do).
    def fresh() -> bool:
        rows = [r for r in up.rows() if r["session"]]
        return bool(rows) and all(
            r["host_state"] == "ok" and r["heartbeat_age_s"] < 0.5 for r in rows
        )

    wait_for(fresh, timeout=30, what="fresh heartbeats after the restart")
    assert "nats-server restarted" in up.output()
    assert up.stop() == 0
    assert "Traceback" not in up.output()


def hold_port_after_kill(pid: int, port: int) -> socket.socket:
    """SIGKILL the server and take its port before `fleet up` may restart it (it waits at
    least 0.5 s after it notices; we bind within a few ms of the death)."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    os.kill(pid, signal.SIGKILL)

    def bound() -> bool:
        try:
            held.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True

    wait_for(bound, timeout=5, interval=0.001, what="the dead server's port")
    held.listen()
    return held


def last_line(up: Up) -> str:
    out = up.output()
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("fleet: ")]
    assert len(errors) == 1, out
    return errors[0]


def test_ctrl_c_with_nats_dead_is_one_line_exit_2(start_up, sock) -> None:
    port = free_port()
    up = start_up("--port", str(port), "--tmux-socket", sock, "--heartbeat-interval", "0.5")
    up.wait_sessions(DEMO)
    dead = up.nats_pid
    held = hold_port_after_kill(dead, port)
    try:
        wait_for(lambda: "restart 1 of nats-server failed" in up.output(), timeout=15)
        assert up.stop() == 2
    finally:
        held.close()
    assert f"NATS down: nats-server (pid {dead}) died: killed by signal 9" in last_line(up)
    assert tmux(sock, "ls", check=False) == ""  # the demo's own sessions are still removed


def test_nats_server_that_cannot_come_back_ends_fleet_up_loudly(start_up, sock) -> None:
    port = free_port()
    up = start_up("--port", str(port), "--tmux-socket", sock, "--heartbeat-interval", "0.5")
    up.wait_sessions(DEMO)
    dead = up.nats_pid
    held = hold_port_after_kill(dead, port)
    try:
        assert up.proc.wait(90) == 2  # no signal: it ends by itself
    finally:
        held.close()
    line = last_line(up)
    assert f"nats-server (pid {dead}) died" in line and "restart(s) failed" in line, line
    assert "stopped the fleet" in line


def test_user_session_on_the_socket_survives_fleet_up(start_up, sock) -> None:
    tmux(sock, "new-session", "-d", "-s", "mine", "sleep 600")
    server = int(tmux(sock, "display-message", "-p", "#{pid}"))
    pane = int(tmux(sock, "list-panes", "-t", "=mine", "-F", "#{pane_pid}"))
    up = start_up(*demo_args(sock))
    rows = up.wait_sessions(DEMO | {"mine"})
    assert {r["session"]["name"] for r in rows if not r["session"]["managed"]} == {"mine"}
    assert up.stop() == 0
    assert tmux(sock, "list-sessions", "-F", "#{session_name}").split() == ["mine"]
    assert int(tmux(sock, "display-message", "-p", "#{pid}")) == server
    assert int(tmux(sock, "list-panes", "-t", "=mine", "-F", "#{pane_pid}")) == pane
    assert alive(pane) and alive(server)


def test_fleet_up_runs_the_users_roster_and_leaves_it_running(start_up, sock, tmp_path) -> None:
    tmux(sock, "new-session", "-d", "-s", "work", "sleep 600")
    pane = int(tmux(sock, "list-panes", "-t", "=work", "-F", "#{pane_pid}"))
    roster = tmp_path / "config" / "agentfleet" / "agent.toml"  # where `fleet init` writes
    roster.parent.mkdir(parents=True)
    roster.write_text(
        f'tenant = "mine"\ntmux_socket = "{sock}"\nheartbeat_interval_s = 0.5\n'
        f'state_dir = "{tmp_path / "agent-state"}"\n'
        f"allow_root = {'true' if os.geteuid() == 0 else 'false'}\n"  # as `fleet init` writes
        '[[sessions]]\nname = "work"\nruntime = "shell"\ncommand = "sleep 600"\n'
    )
    up = start_up("--port", str(free_port()))
    rows = up.wait_sessions({"work"})
    assert [(r["tenant"], r["session"]["managed"]) for r in rows] == [("mine", True)]
    assert rows[0]["session"]["pid"] == pane  # adopted, not restarted
    assert f"your roster {roster}" in up.output()
    assert up.stop() == 0
    assert tmux(sock, "list-sessions", "-F", "#{session_name}").split() == ["work"]
    assert int(tmux(sock, "list-panes", "-t", "=work", "-F", "#{pane_pid}")) == pane


def test_without_a_roster_it_says_it_runs_the_demo(start_up, sock) -> None:
    up = start_up(*demo_args(sock))
    up.wait_sessions(DEMO)
    assert "the demo fleet (no roster at" in up.output()
    assert up.stop() == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--tenants", "a.b"],
        ["--tenants", "ctl"],
        ["--tenants", "a,a"],
        ["--tenants", ""],
        ["--host", "bad.host"],
        ["--port", "99999"],
        ["--config", "/nonexistent/agent.toml"],
        ["--demo", "--config", "/nonexistent/agent.toml"],
        ["--data-dir", "/etc/hostname"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    result = subprocess.run(
        [str(BIN / "fleet"), "up", "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: "), lines
    assert not (tmp_path / "data" / "nats").exists()  # refused before anything started


def test_a_record_of_another_tmux_server_claims_nothing(tmp_path: Path, sock: str) -> None:
    """Session ids restart at $0 with every tmux server: a record a dead `fleet up` left for
    an earlier server on the socket must not make the user's new `$0` ours."""
    import anyio

    from agent.discovery.tmux import Tmux
    from controller.cli.upguard import ClaimRecord, SocketClaim

    tmux(sock, "new-session", "-d", "-s", "users", "sleep 600")
    server = int(tmux(sock, "display-message", "-p", "#{pid}"))
    [user_id] = tmux(sock, "list-sessions", "-F", "#{session_id}").split()
    record = ClaimRecord(tmp_path / "tmux-claims.json")
    record.put(
        sock, {"server_pid": server + 100_000, "started_server": True, "sessions": [user_id]}
    )

    async def start_and_stop() -> list[str]:
        claim = await SocketClaim.take(Tmux(sock), ClaimRecord(record.path), remove=True)
        assert claim.inherited == [] and claim.server_before
        return await claim.undo()

    assert anyio.run(start_and_stop) == []
    assert tmux(sock, "list-sessions", "-F", "#{session_id}").split() == [user_id]
    assert int(tmux(sock, "display-message", "-p", "#{pid}")) == server
