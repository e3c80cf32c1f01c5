"""A roster session's `env_file` (systemd EnvironmentFile format) and `env` reach the pane
process (issue 16, build 4: the seed's MOSAIC_AGENT_NAME set in a unit's EnvironmentFile never
reached its tmux sessions). Real tmux; the proof is /proc/<pid>/environ of the pane process."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio
import pytest

from agent.config import AgentConfig, SessionSpec, dump, load
from agent.discovery.envfile import parse_env
from agent.discovery.launch import session_env
from agent.discovery.supervisor import Launcher
from agent.discovery.tmux import TMUX_CONF, Tmux
from common.config import ConfigError
from tests.agent.test_launch_env import environ
from tests.support.fleet import wait_for

pytestmark = pytest.mark.timeout(30)

ENV_FILE = """\
# written for systemd: mosaic-agent@dogfood-coder.service reads it too
MOSAIC_AGENT_NAME=dogfood-coder
; another comment style
  SPACED =  two words{pad}
QUOTED="say \\"hi\\" \\$HOME"
LITERAL='a $b \\ c'
CONTINUED=one\\
two
OVERRIDDEN=from-file
PATH={path}
not an assignment
"""


def fake_agent(bin_dir: Path) -> None:
    bin_dir.mkdir()
    script = bin_dir / "mosaic-agent"
    script.write_text("#!/bin/sh\nexec sleep 300\n")  # same pid: the pane process is sleep
    script.chmod(0o755)


def test_env_file_and_env_reach_the_pane_process(
    tmp_path: Path, tmux_socket: str, caplog: pytest.LogCaptureFixture
) -> None:
    bin_dir = tmp_path / "bin"
    fake_agent(bin_dir)
    env_file = tmp_path / "mosaic.env"
    env_file.write_text(ENV_FILE.format(path=f"{bin_dir}:/usr/bin:/bin", pad="  "))
    assert str(bin_dir) not in os.environ.get("PATH", "")
    conf = tmp_path / "tmux.conf"
    conf.write_text(TMUX_CONF)
    tmux = Tmux(tmux_socket, conf)
    spec = SessionSpec(
        name="dogfood-coder",
        runtime="shell",
        command=["mosaic-agent"],  # bare: found on the env_file's PATH, not the agent's
        env_file=str(env_file),
        env={"OVERRIDDEN": "from-roster", "ROSTER_ONLY": "yes"},
    )
    launcher = Launcher(tmux, "t1", "h1", 80, 24)
    with caplog.at_level(logging.WARNING):
        anyio.run(launcher.launch, spec)

    def pane_process() -> int | None:
        pane = next((p for p in anyio.run(tmux.list_panes) if p.session == spec.name), None)
        if pane is None or pane.dead or pane.pid is None:
            return None
        cmd = Path(f"/proc/{pane.pid}/cmdline").read_bytes().split(b"\0")[0]
        return pane.pid if cmd.endswith(b"sleep") else None

    seen = environ(wait_for(pane_process, 10, what="the pane process to be the agent's sleep"))
    assert seen["MOSAIC_AGENT_NAME"] == "dogfood-coder"
    assert seen["SPACED"] == "two words"
    assert seen["QUOTED"] == 'say "hi" $HOME'
    assert seen["LITERAL"] == "a $b \\ c"
    assert seen["CONTINUED"] == "onetwo"
    assert seen["OVERRIDDEN"] == "from-roster"  # the roster's `env` is the more specific
    assert seen["ROSTER_ONLY"] == "yes"
    assert seen["PATH"] == f"{bin_dir}:/usr/bin:/bin"
    assert seen["FLEET_SESSION"] == "dogfood-coder" and seen["FLEET_TENANT"] == "t1"
    # The line that is not an assignment: one warning naming the file and line, not fatal.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"env_file {env_file}: line 11: not KEY=VALUE, skipped"]


def config_file(tmp_path: Path, env_file: str) -> Path:
    path = tmp_path / "agent.toml"
    spec = SessionSpec(name="s1", runtime="shell", env_file=env_file)
    path.write_text(dump(AgentConfig(tenant="t1", host="h1", sessions=[spec])))
    return path


def test_missing_env_file_is_one_line_at_config_load(tmp_path: Path) -> None:
    path = config_file(tmp_path, str(tmp_path / "nope.env"))
    with pytest.raises(ConfigError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message
    assert message == f"{path}: session 's1': env_file {tmp_path / 'nope.env'}: no such file"


def test_unreadable_env_file_is_one_line_at_config_load(tmp_path: Path) -> None:
    target = tmp_path / "a-directory.env"
    target.mkdir()  # unreadable as a file even for root, who reads any mode
    with pytest.raises(ConfigError, match=r"session 's1': env_file .*: cannot read: "):
        load(config_file(tmp_path, str(target)))


def test_optional_env_file_may_be_missing(tmp_path: Path) -> None:
    config = load(config_file(tmp_path, f"-{tmp_path / 'nope.env'}"))
    spec = config.sessions[0]
    assert session_env({"FLEET_SESSION": "s1"}, spec.env_file, {"A": "1"}) == {
        "FLEET_SESSION": "s1",
        "A": "1",
    }


def test_env_file_gone_at_launch_launches_without_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        env = session_env({"F": "1"}, str(tmp_path / "gone.env"), {"A": "2"}, session="s1")
    assert env == {"F": "1", "A": "2"}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "s1" in lines[0] and "gone.env" in lines[0]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("A=1\nA=2\n", {"A": "2"}),  # the later line wins, as in systemd
        ('A="multi\nline"\n', {"A": "multi\nline"}),
        ('A="x\\ny"\n', {"A": "x\\ny"}),  # \n is not an escape in double quotes
        ("export A=1\n", {"A": "1"}),
        ("A=\n", {"A": ""}),
        ("A=b # not a comment\n", {"A": "b # not a comment"}),
    ],
)
def test_parse_env(text: str, want: dict[str, str]) -> None:
    assert parse_env(text) == (want, [])


def test_parse_env_reports_unclosed_quote() -> None:
    assert parse_env('A=1\nB="open\nC=3\n') == ({"A": "1"}, ["line 2: unterminated quote, skipped"])
