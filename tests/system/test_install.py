"""`fleet install` / `fleet uninstall` (issue 16, build 4). systemd cannot run as PID 1 here, so
`systemctl` and `loginctl` are fake scripts first on PATH that record their argv; the units are
checked by content, by `systemd-analyze verify`, and by running their ExecStart lines the way
systemd would: the fleet they start answers `fleet ps`."""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, SessionSpec, dump
from agent.config import load as load_agent
from controller.config import load as load_controller
from controller.deploy.files import unit_text
from controller.natsserver.embedded import free_port, nats_server_binary
from tests.support.fleet import BIN, Proc, wait_for

pytestmark = pytest.mark.timeout(120)

FAKE = """#!/bin/sh
{{ printf '%s' "$(basename "$0")"; for a in "$@"; do printf '\\t%s' "$a"; done; echo; }} >> {log}
[ -n "$FAKE_FAIL" ] && {{ echo "Failed to connect to bus: No medium found" >&2; exit 1; }}
exit 0
"""
UNITS = ["fleet-nats.service", "fleet-controller.service", "fleet-agent@.service"]


class Box:
    """A throwaway home: config dir, data dir, fake systemd tools, and the calls they saw."""

    def __init__(self, tmp: Path, tmux_socket: str) -> None:
        self.tmp, self.cfg, self.data = tmp, tmp / "cfg", tmp / "data"
        self.log = tmp / "calls"
        fake = tmp / "fake-bin"
        fake.mkdir()
        for tool in ("systemctl", "loginctl"):
            (fake / tool).write_text(FAKE.format(log=shlex.quote(str(self.log))))
            (fake / tool).chmod(0o755)
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "FLEET_NATS_URL"},
            "PATH": f"{fake}:{os.environ['PATH']}",
            "XDG_CONFIG_HOME": str(self.cfg),
            "XDG_STATE_HOME": str(tmp / "state"),
            "XDG_DATA_HOME": str(tmp / "xdg-data"),
        }
        self.tenant = f"t{uuid.uuid4().hex[:6]}"
        self.port = free_port()
        self.roster = tmp / "agent.toml"
        spec = SessionSpec(name="coder", runtime="stub", env={"FLEET_STUB_WORK_SECONDS": "1"})
        config = AgentConfig(
            tenant=self.tenant, host="h1", tmux_socket=tmux_socket, allow_root=True, sessions=[spec]
        )
        self.roster.write_text(dump(config))

    @property
    def unit_dir(self) -> Path:
        return self.cfg / "systemd" / "user"

    def fleet(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "fleet"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
            env={**self.env, **env},
        )

    def install(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.fleet(
            "install", "--user", "--config", str(self.roster), "--data-dir", str(self.data),
            "--port", str(self.port), *args, **env,
        )  # fmt: skip

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split("\t") for line in self.log.read_text().splitlines()]


@pytest.fixture
def box(tmp_path: Path, tmux_socket: str) -> Box:
    return Box(tmp_path, tmux_socket)


def linger_expected() -> bool:
    return not (Path("/var/lib/systemd/linger") / getpass.getuser()).exists()


def exec_start(unit: str) -> str:
    lines = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    assert len(lines) == 1, unit
    return lines[0].removeprefix("ExecStart=")


def test_install_writes_units_and_configs_and_enables_them(box: Box) -> None:
    result = box.install()
    assert result.returncode == 0, result.stderr
    nats, controller, agent = (box.unit_dir / u for u in UNITS)
    nats_text, controller_text, agent_text = (p.read_text() for p in (nats, controller, agent))
    nats_conf = box.data / "nats" / "nats-server.conf"
    assert exec_start(nats_text) == f"{nats_server_binary()} -c {nats_conf}"
    assert f'listen: "127.0.0.1:{box.port}"' in nats_conf.read_text()
    assert "include" in nats_conf.read_text()  # the generated accounts: not an open server
    conf = box.data / "controller.toml"
    assert exec_start(controller_text) == f"{BIN / 'fleet'} controller run --config {conf}"
    assert load_controller(conf).tenants == [box.tenant]
    assert "After=network-online.target fleet-nats.service" in controller_text
    # The agent's unit is `fleet deploy`'s template, for a user manager (no User=).
    assert agent_text == unit_text(user_manager=True) and "User=" not in agent_text
    for text in (nats_text, controller_text, agent_text):
        assert "Restart=always" in text.splitlines()
        assert re.search(r"^WantedBy=.*\bdefault\.target\b", text, re.M), text
    env_file = box.cfg / "agentfleet" / f"agent-{box.tenant}.env"
    agent_dir = Path(env_file.read_text().split("FLEET_AGENT_DIR=")[1].strip())
    assert (agent_dir / "venv" / "bin" / "fleet-agent").exists()
    agent_cfg = load_agent(agent_dir / "agent.toml")
    assert agent_cfg.nats.servers == [f"nats://127.0.0.1:{box.port}"]
    assert agent_cfg.nats.nkey_seed and Path(agent_cfg.nats.nkey_seed).exists()
    assert [s.name for s in agent_cfg.sessions] == ["coder"]
    for secret in (agent_dir / "agent.toml", conf, nats_conf):
        assert secret.stat().st_mode & 0o077 == 0, secret
    units = ["fleet-nats.service", "fleet-controller.service", f"fleet-agent@{box.tenant}.service"]
    want = [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", *units],
    ]
    if linger_expected():
        want.append(["loginctl", "enable-linger", getpass.getuser()])
    assert box.calls() == want


def run_unit(box: Box, unit: Path, name: str, instance: str = "") -> Proc:
    """What systemd would start for this unit: its EnvironmentFile= read, %i and %E expanded,
    ${VAR} replaced, ExecStart= run."""
    text = unit.read_text().replace("%i", instance).replace("%E", str(box.cfg))
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("EnvironmentFile="):
            for row in Path(line.split("=", 1)[1].lstrip("-")).read_text().splitlines():
                if "=" in row and not row.startswith("#"):
                    key, value = row.split("=", 1)
                    env[key] = value
    command = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], exec_start(text))
    return Proc(shlex.split(command), box.tmp / f"{name}.log").start({**box.env, **env})


def test_the_units_start_a_fleet_that_answers(box: Box) -> None:
    assert box.install().returncode == 0
    procs = [
        run_unit(box, box.unit_dir / "fleet-nats.service", "nats"),
        run_unit(box, box.unit_dir / "fleet-controller.service", "controller"),
        run_unit(box, box.unit_dir / "fleet-agent@.service", "agent", box.tenant),
    ]
    try:

        def coder() -> dict[str, Any] | None:
            # The CLI finds the installed fleet by the context install wrote, as its admin.
            out = box.fleet("ps", "--json")
            rows = json.loads(out.stdout) if out.returncode == 0 else []
            return next((r for r in rows if (r["session"] or {}).get("name") == "coder"), None)

        row = wait_for(coder, timeout=60, what="the installed fleet's session in fleet ps")
        assert row["tenant"] == box.tenant and row["host"] == "h1"
        assert row["session"]["pane"] == "alive" and row["session"]["managed"] is True
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_uninstall_removes_what_install_wrote_and_keeps_the_data(box: Box) -> None:
    assert box.install().returncode == 0
    foreign = box.unit_dir / "someone-else.service"
    foreign.write_text("[Service]\nExecStart=/bin/true\n")
    box.log.unlink()
    result = box.fleet("uninstall", "--user")
    assert result.returncode == 0, result.stderr
    units = sorted(
        ["fleet-agent@" + box.tenant + ".service", "fleet-controller.service", "fleet-nats.service"]
    )
    want = [["systemctl", "--user", "disable", "--now", *units]]
    want.append(["systemctl", "--user", "daemon-reload"])
    if linger_expected():  # only lingering that install turned on is turned off
        want.append(["loginctl", "disable-linger", getpass.getuser()])
    assert box.calls() == want
    assert sorted(p.name for p in box.unit_dir.iterdir()) == ["someone-else.service"]
    assert not (box.cfg / "agentfleet" / f"agent-{box.tenant}.env").exists()
    assert (box.data / "controller.toml").exists()  # data, credentials: kept
    again = box.fleet("uninstall", "--user")
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert "nothing to uninstall" in again.stderr


def test_dry_run_writes_and_runs_nothing_and_the_units_verify(box: Box, tmp_path: Path) -> None:
    system_units = [Path("/etc/systemd/system") / u for u in UNITS]
    before = [p.exists() for p in system_units]
    result = box.fleet(
        "install", "--system", "--config", str(box.roster), "--data-dir", str(box.data),
        "--dry-run", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True and plan["system"] is True
    assert box.calls() == [] and not box.data.exists() and not box.cfg.exists()
    files = {Path(f["path"]).name: f for f in plan["files"]}
    assert {f["path"] for f in plan["files"]} >= {f"/etc/systemd/system/{u}" for u in UNITS}
    assert [p.exists() for p in system_units] == before
    assert re.search(r"^WantedBy=multi-user\.target$", files[UNITS[0]]["content"], re.M)
    assert plan["commands"][0] == ["systemctl", "daemon-reload"]  # system units: no --user
    assert not any(c[0] == "loginctl" for c in plan["commands"])
    human = box.fleet("install", "--user", "--config", str(box.roster), "--dry-run")
    assert human.returncode == 0 and "would run: systemctl --user enable --now" in human.stdout
    assert box.calls() == []
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    out = tmp_path / "verify"
    out.mkdir()
    for name, f in files.items():
        # A template is verified through an instance of it.
        (out / name.replace("@.", f"@{box.tenant}.")).write_text(f["content"])
    paths = sorted(str(p) for p in out.glob("*.service"))
    verify = subprocess.run(
        [analyze, "verify", *paths],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    assert verify.returncode == 0, verify.stderr
    # Only the backoff keys of systemd >= 254 may be unknown to an older systemd.
    problems = [
        line
        for line in verify.stderr.splitlines()
        if line.strip() and "RestartSteps" not in line and "RestartMaxDelaySec" not in line
    ]
    assert problems == [], problems


def test_systemctl_failure_is_one_line(box: Box) -> None:
    result = box.install(FAKE_FAIL="1")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "systemctl --user daemon-reload" in result.stderr
    assert "Failed to connect to bus" in result.stderr
    # What was written is in the manifest: uninstall can clean it up.
    assert (box.cfg / "agentfleet" / "installed.json").exists()


def test_a_unit_that_is_not_ours_is_not_overwritten(box: Box) -> None:
    box.unit_dir.mkdir(parents=True)
    theirs = box.unit_dir / "fleet-nats.service"
    theirs.write_text("[Service]\nExecStart=/usr/sbin/nats-server\n")
    # `fleet deploy`'s identical agent template: used, but left theirs at uninstall.
    deployed = box.unit_dir / "fleet-agent@.service"
    deployed.write_text(unit_text(user_manager=True))
    refused = box.install()
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert f"{theirs} exists and was not written by `fleet install`" in refused.stderr
    assert box.calls() == [] and "/usr/sbin/nats-server" in theirs.read_text()
    assert box.install("--force").returncode == 0
    assert box.fleet("uninstall", "--user").returncode == 0
    assert deployed.exists() and not theirs.exists()


def test_no_roster_is_one_line(box: Box, tmp_path: Path) -> None:
    result = box.fleet("install", "--user", "--config", str(tmp_path / "none.toml"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "run `fleet init` first" in result.stderr
