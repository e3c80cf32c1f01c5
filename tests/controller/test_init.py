"""`fleet init` as a user runs it, on real tmux servers in a socket dir of the test's own
($TMUX_TMPDIR), so it never sees the machine's other tmux servers: what it proposes, that the
host agent reads the written roster back and sees no drift, and that it touched nothing."""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from agent.cli import session_identity_for
from agent.config import SessionSpec, load
from agent.discovery.procs import ProcessTable
from agent.discovery.roster import Roster
from agent.discovery.runtimes import load_runtimes
from agent.discovery.sessions import SessionTable
from agent.discovery.supervisor import Launcher
from agent.discovery.tmux import Tmux
from controller.cli.discover import roster_command, split_start
from tests.support.fleet import wait_for

FLEET = str(Path(sys.executable).parent / "fleet")
STUB = f"{sys.executable} -m agent.stub"
COMPOUND = """sh -c 'sleep 605; echo "$HOME"'"""  # tmux shows it as "sh -c 'sleep 605; …\\$HOME…'"


@dataclass
class TmuxHome:
    """A tmux socket dir of our own and the servers we started in it."""

    root: Path
    sockets: set[str] = field(default_factory=set)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
        return {
            **env,
            "TMUX_TMPDIR": str(self.root),
            "XDG_CONFIG_HOME": str(self.root / "cfg"),
            "COLUMNS": "200",
        }

    @property
    def roster_path(self) -> Path:
        return self.root / "cfg" / "agentfleet" / "agent.toml"

    def tmux(self, socket: str, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", socket, *args], env=self.env, capture_output=True, text=True, timeout=10
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def start(self, socket: str, name: str, command: str | None, cwd: Path) -> None:
        """A session like a user makes one; returns once its process is what will run."""
        self.sockets.add(socket)
        cwd.mkdir(parents=True, exist_ok=True)
        self.tmux(socket, "new-session", "-d", "-s", name, "-c", str(cwd), *filter(None, [command]))
        word = "agent.stub" if command == STUB else command.split()[0] if command else ""

        def running() -> bool:
            # Until the pane's process has exec'd, it shows tmux's cmdline, then maybe a shell.
            pid = int(self.tmux(socket, "display", "-p", "-t", f"={name}:", "#{pane_pid}"))
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
            return bool(cmdline) and not cmdline.startswith("tmux") and word in cmdline

        wait_for(running, timeout=15, what=f"{command} running in {name}")

    def panes(self, socket: str) -> dict[str, int]:
        out = self.tmux(socket, "list-panes", "-a", "-F", "#{session_name} #{pane_pid}")
        return {name: int(pid) for name, pid in (line.split() for line in out.splitlines())}

    def fleet(
        self, *args: str, stdin: int | None = subprocess.DEVNULL
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [FLEET, "init", *args],
            env=self.env,
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def home() -> Iterator[TmuxHome]:
    # Short: a unix socket path must fit in 108 bytes, and pytest's tmp_path may not.
    found = TmuxHome(Path(tempfile.mkdtemp(prefix="afi-", dir="/tmp")))
    yield found
    for socket in found.sockets:  # only the servers this test started, by their socket
        subprocess.run(["tmux", "-L", socket, "kill-server"], env=found.env, capture_output=True)
    shutil.rmtree(found.root, ignore_errors=True)


def user_fleet(home: TmuxHome) -> None:
    """What a user has running: a sleep, a shell, the stub, and a name that cannot be an id."""
    work = home.root / "work"
    home.start("work", "sleeper", "sleep 600", work / "a")
    home.start("work", "shell", None, work / "b")
    home.start("work", "stub", STUB, work / "c")
    home.start("work", "_holder", "sleep 601", work / "d")
    home.start("work", "loop", COMPOUND, work / "e")


def dead_server(home: TmuxHome) -> None:
    """A server that died without cleaning up: its socket file stays."""
    home.start("gone", "x", "sleep 602", home.root)
    pid = int(home.tmux("gone", "display", "-p", "#{pid}"))
    os.kill(pid, signal.SIGKILL)  # our own server, started above
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), what="tmux server gone")
    home.sockets.discard("gone")
    assert (home.root / f"tmux-{os.getuid()}" / "gone").exists()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_print_proposes_runtimes_cwds_and_commands(home: TmuxHome) -> None:
    user_fleet(home)
    dead_server(home)
    result = home.fleet("--print", "--yes")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    roster = tomllib.loads(result.stdout)
    assert (roster["tenant"], roster["tmux_socket"]) == ("work", "work")
    sessions = {s["name"]: s for s in roster["sessions"]}
    assert set(sessions) == {"sleeper", "shell", "stub", "loop"}
    assert (sessions["loop"]["runtime"], sessions["loop"]["command"]) == ("shell", COMPOUND)
    work = home.root / "work"
    assert sessions["sleeper"]["runtime"] == "sleep"
    assert sessions["sleeper"]["command"] == "sleep 600"
    assert sessions["shell"]["runtime"] == "shell"
    assert "command" not in sessions["shell"]  # a plain shell: the roster's default
    assert sessions["stub"]["runtime"] == "stub"
    assert sessions["stub"]["command"] == STUB
    for name, sub in (("sleeper", "a"), ("shell", "b"), ("stub", "c")):
        assert sessions[name]["cwd"] == str(work / sub)
    # The table (stderr under --print) says what was left out and why.
    assert "_holder" in result.stderr and "skip" in result.stderr
    assert "stale tmux socket" in result.stderr and "gone" in result.stderr


def test_written_roster_is_what_the_agent_loads_and_nothing_was_touched(
    home: TmuxHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_fleet(home)
    before = home.panes("work")
    server_pid = home.tmux("work", "display", "-p", "#{pid}")
    result = home.fleet("--yes")
    assert result.returncode == 0, result.stderr
    assert str(home.roster_path) in result.stdout

    cfg = load(home.roster_path)  # the loader `fleet-agent run --config` uses
    session_identity_for(cfg, cfg.allow_root)  # and its check of who the sessions run as
    assert {s.name for s in cfg.sessions} == {"sleeper", "shell", "stub", "loop"}

    # The agent's own discovery, on that roster: every session managed, none drifting.
    monkeypatch.setenv("TMUX_TMPDIR", str(home.root))
    panes = anyio.run(Tmux(cfg.socket_name).list_panes)
    table = SessionTable(Roster(cfg.sessions), load_runtimes())
    snaps, _ = table.update(panes, ProcessTable.snapshot(), {}, {}, time.time())
    by_name = {s.name: s for s in snaps if s.managed}
    assert set(by_name) == {"sleeper", "shell", "stub", "loop"}
    assert not [s.name for s in snaps if s.drift]
    assert by_name["stub"].runtime_observed == "stub"
    assert by_name["shell"].runtime_observed == "shell"

    # Untouched: the same server, the same sessions, the same pane processes, all alive.
    assert home.panes("work") == before
    assert home.tmux("work", "display", "-p", "#{pid}") == server_pid
    assert all(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in before.values())

    again = home.fleet("--yes")
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        f"fleet: {home.roster_path} exists: pass --force to overwrite it"
    ]
    assert home.fleet("--yes", "--force").returncode == 0


def test_no_tty_and_no_yes_is_one_line_and_exit_2(home: TmuxHome) -> None:
    user_fleet(home)
    result = home.fleet()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--yes" in lines[0], result.stderr
    assert not home.roster_path.exists()


def test_on_a_terminal_it_asks_first(home: TmuxHome) -> None:
    user_fleet(home)
    for answer, code in ((b"n\n", 1), (b"y\n", 0)):
        master, slave = pty.openpty()
        try:
            os.write(master, answer)  # typed ahead: the terminal holds it until read
            result = home.fleet(stdin=slave)
        finally:
            os.close(slave)
            os.close(master)
        assert "Write this roster (4 sessions)" in result.stdout
        assert result.returncode == code, result.stderr
        assert home.roster_path.exists() == (code == 0)


def test_several_servers_need_a_choice(home: TmuxHome) -> None:
    home.start("alpha", "one", "sleep 603", home.root)
    home.start("fleet-beta", "two", "sleep 604", home.root)
    result = home.fleet("--print")
    assert result.returncode == 2
    assert "alpha, fleet-beta" in result.stderr and "--socket" in result.stderr

    chosen = home.fleet("--print", "--socket", "fleet-beta")
    assert chosen.returncode == 0, chosen.stderr
    roster = tomllib.loads(chosen.stdout)
    assert roster["tenant"] == "beta"  # the agent's default socket for tenant beta
    assert [s["name"] for s in roster["sessions"]] == ["two"]

    found = home.fleet("--json")
    assert found.returncode == 0, found.stderr
    assert '"socket":"alpha"' in found.stdout and '"name":"two"' in found.stdout

    missing = home.fleet("--print", "--socket", "nope")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"fleet: no tmux socket 'nope' in {home.root / f'tmux-{os.getuid()}'}"
    ]


def test_sessions_the_agent_launched_are_adopted_without_its_wrapper(
    home: TmuxHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMUX_TMPDIR", str(home.root))
    home.sockets.add("fleet-x")
    launcher = Launcher(Tmux("fleet-x"), "x", "vm", 80, 24)
    specs = [
        SessionSpec(name="coder", runtime="stub", env={"FLEET_STUB_WORK_SECONDS": "8"}),
        SessionSpec(name="tool", runtime="shell", command='sleep 606; echo "done it"'),
    ]

    async def launch() -> None:
        for spec in specs:
            await launcher.launch(spec)

    anyio.run(launch)
    result = home.fleet("--print")
    assert result.returncode == 0, result.stderr
    roster = tomllib.loads(result.stdout)
    assert roster["tenant"] == "x"
    coder, tool = sorted(roster["sessions"], key=lambda s: s["name"])
    # The agent's own `env FLEET_…=… [sh -c] CMD` is undone: its FLEET_* values would be stale.
    assert coder["command"] == [sys.executable, "-m", "agent", "stub"]
    assert coder["env"] == {"FLEET_STUB_WORK_SECONDS": "8"}
    assert (tool["command"], tool["env"]) == (specs[1].command, {})


# Start commands as tmux 3.3a shows them (`#{pane_start_command}`) for the argv on the right.
QUOTED = [
    ("", []),
    ('"sleep 600"', ["sleep 600"]),
    ("sleep 600", ["sleep", "600"]),
    (
        r"""sh -c "sleep 100" "a b" "it's" "x\$y" tab\there nl\nx back\\slash '' \~home """
        r"""ünï 'q"q' "#c" "{b}" """ + '''"a'b c"''',
        [
            "sh",
            "-c",
            "sleep 100",
            "a b",
            "it's",
            "x$y",
            "tab\there",
            "nl\nx",
            "back\\slash",
            "",
            "~home",
            "ünï",
            'q"q',
            "#c",
            "{b}",
            "a'b c",
        ],
    ),
]


@pytest.mark.parametrize(("shown", "argv"), QUOTED)
def test_tmux_quoting_is_undone(shown: str, argv: list[str]) -> None:
    assert split_start(shown) == argv


@pytest.mark.parametrize(
    ("start", "runtime", "command", "env"),
    [
        ("", "shell", None, {}),
        ("-bash -l", "shell", None, {}),
        ('"bash -c \\"x \\$y\\""', "shell", 'bash -c "x $y"', {}),
        ("bash script.sh", "shell", ["bash", "script.sh"], {}),
        ("env FLEET_TENANT=x PATH=/bin /bin/bash", "shell", None, {"PATH": "/bin"}),
        (
            '/usr/bin/env FLEET_TENANT=x FLEET_SESSION=sl /bin/sh -c "sleep 1; echo \\"a b\\""',
            "shell",
            'sleep 1; echo "a b"',
            {},
        ),
        ("env A=1 claude --resume", "claude", ["claude", "--resume"], {"A": "1"}),
        ("env -i FLEET_HOST=vm A=1 /bin/sh -c 'x $y'", "shell", "x $y", {"A": "1"}),
        ("env -u A claude", "claude", ["env", "-u", "A", "claude"], {}),
    ],
)
def test_roster_command(start: str, runtime: str, command: object, env: dict[str, str]) -> None:
    assert roster_command(start, runtime, load_runtimes()["shell"]) == (command, env)


def test_a_server_that_does_not_answer_is_skipped(home: TmuxHome) -> None:
    home.start("stuck", "one", "sleep 607", home.root)
    home.start("work", "two", "sleep 608", home.root)
    pid = int(home.tmux("stuck", "display", "-p", "#{pid}"))
    os.kill(pid, signal.SIGSTOP)  # our own server: it stops answering, as a hung one would
    try:
        result = home.fleet("--print")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert result.returncode == 0, result.stderr
    assert "no answer within 5s" in result.stderr
    assert [s["name"] for s in tomllib.loads(result.stdout)["sessions"]] == ["two"]
