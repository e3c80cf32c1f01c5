"""Roster `env` reaches the session's process, PATH included, and a bare command name is found
on that PATH (issue 14, build 5): real tmux, the pane process's /proc/<pid>/environ."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio
import pytest

from agent.discovery.launch import session_argv
from agent.discovery.tmux import TMUX_CONF, Tmux
from tests.support.fleet import wait_for

pytestmark = pytest.mark.timeout(30)


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def make_agent(bin_dir: Path, marker: Path) -> None:
    bin_dir.mkdir()
    script = bin_dir / "my-fake-agent"
    # Writes where it ran from, then becomes a long sleep (same pid) for /proc to read.
    script.write_text(f'#!/bin/sh\necho "$0" > {marker}\nexec sleep 300\n')
    script.chmod(0o755)


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for kid in map(int, kids):
        out += [kid, *descendants(kid)]
    return out


def pane_pid(tmux: Tmux, name: str) -> int | None:
    panes = anyio.run(tmux.list_panes)
    pane = next((p for p in panes if p.session == name), None)
    return pane.pid if pane and not pane.dead else None


@pytest.mark.parametrize("form", ["string", "list"])
def test_roster_path_and_env_reach_the_pane_process(
    form: str, tmp_path: Path, tmux_socket: str
) -> None:
    bin_dir, marker = tmp_path / "bin", tmp_path / "ran-from"
    make_agent(bin_dir, marker)
    assert "my-fake-agent" not in os.environ.get("PATH", "")
    conf = tmp_path / "tmux.conf"
    conf.write_text(TMUX_CONF)
    tmux = Tmux(tmux_socket, conf)
    path = f"{bin_dir}:/usr/bin:/bin"
    env = {"PATH": path, "FLEET_SESSION": "s1", "ROSTER_FOO": "bar baz"}
    command: str | list[str] = "my-fake-agent" if form == "string" else ["my-fake-agent"]

    async def start() -> None:
        await tmux.new_session("s1", command, cwd=str(tmp_path), env=env, width=80, height=24)

    anyio.run(start)
    wait_for(marker.exists, 10, what="the script found on the roster PATH to run")
    assert marker.read_text().strip() == str(bin_dir / "my-fake-agent")

    def sleeping() -> int | None:
        pid = pane_pid(tmux, "s1")
        # The pane process or, under `sh -c`, its child: the script's process either way.
        for p in [pid, *descendants(pid)] if pid else []:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0]
            if cmd.endswith(b"sleep"):
                return p
        return None

    pid = wait_for(sleeping, 10, what="the pane process to be the script's sleep")
    seen = environ(pid)
    assert seen["PATH"] == path
    assert seen["ROSTER_FOO"] == "bar baz"
    assert seen["FLEET_SESSION"] == "s1"


def test_bare_name_resolved_on_the_session_path(tmp_path: Path) -> None:
    make_agent(tmp_path / "bin", tmp_path / "m")
    argv = session_argv(["my-fake-agent", "--flag"], {"PATH": str(tmp_path / "bin"), "A": "1"})
    assert argv is not None
    assert argv[0].endswith("/env") and argv[1:3] == [f"PATH={tmp_path / 'bin'}", "A=1"]
    assert argv[3:] == [str(tmp_path / "bin" / "my-fake-agent"), "--flag"]


def test_missing_command_logs_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        argv = session_argv("no-such-agent-x", {"PATH": str(tmp_path)}, session="s9")
    assert argv is not None and argv[-3:] == ["/bin/sh", "-c", "no-such-agent-x"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "s9" in lines[0] and "no-such-agent-x" in lines[0]


def test_env_names_that_env1_would_misread_are_dropped() -> None:
    argv = session_argv(["/bin/true"], {"GOOD": "1", "-i": "x", "A=B": "c"})
    assert argv is not None and argv[1:] == ["GOOD=1", "/bin/true"]


def test_shell_session_without_path_keeps_tmux_default() -> None:
    assert session_argv(None, {"FLEET_SESSION": "s"}) is None
    argv = session_argv(None, {"PATH": "/x"})
    assert argv is not None and argv[1] == "PATH=/x"
