"""`fleet doctor` (issue 16, build 6) against real fleets: a stopped agent and its tmux server
gone, a healthy `fleet up`, and a roster session whose systemd unit is not enabled at boot
(`fleet ps` flags it BOOT-DISABLED). systemd cannot run as PID 1 here, so `systemctl` is a
fake script first on PATH, and the agent is told systemd runs (sd_booted() is the one thing
this machine cannot give it)."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.config import SessionSpec, dump
from tests.support.fleet import BIN, Fleet, Proc, rows_by_session, wait_for
from tests.system.test_up_trust import DEMO, demo_args, sock, start_up  # noqa: F401

pytestmark = pytest.mark.timeout(150)

STUB = SessionSpec(name="coder", runtime="stub", env={"FLEET_STUB_WORK_SECONDS": "1"})


def doctor(env: dict[str, str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """`fleet doctor --json` and its human form: exit code, findings, the lines it printed."""
    runs = [
        subprocess.run(
            [str(BIN / "fleet"), "doctor", *extra, *args],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
        for extra in (["--json"], [])
    ]
    assert runs[0].returncode == runs[1].returncode, (runs[0].stderr, runs[1].stderr)
    assert "Traceback" not in runs[0].stderr + runs[1].stderr, runs[1].stderr
    report = json.loads(runs[0].stdout)
    assert report["healthy"] == (runs[0].returncode == 0)
    return runs[0].returncode, report["findings"], runs[1].stdout


def problems(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f["level"] == "problem"]


def env_for(fleet: Fleet, tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FLEET_NATS_URL": fleet.nats.url,
        "XDG_CONFIG_HOME": str(tmp / "cfg"),  # no roster, context or installed units of ours
        "COLUMNS": "200",
    }


def test_doctor_names_a_stopped_agent_and_a_missing_tmux_socket(
    fleet: Fleet, tmux_socket: str, tmp_path: Path
) -> None:
    fleet.start_controller(fleet.controller_config(["doc"]))
    config = fleet.agent_config("doc", "h1", tmux_socket, [STUB])
    agent = fleet.start_agent(config)
    roster = tmp_path / "agent-doc-h1.toml"  # the file the agent runs from
    wait_for(lambda: [r for r in fleet.ps() if r["host_state"] == "ok"], timeout=30)
    env = env_for(fleet, tmp_path)
    code, findings, _ = doctor(env, "--config", str(roster))
    assert code == 0, problems(findings)

    agent.signal(signal.SIGSTOP)  # our own agent: silent, as a hung one would be
    try:
        wait_for(lambda: {r["host_state"] for r in fleet.ps()} & {"suspect", "down"}, timeout=30)
        code, findings, _ = doctor(env, "--config", str(roster))
    finally:
        agent.signal(signal.SIGCONT)
    assert code == 1
    [silent] = problems(findings)
    assert silent["check"] == "agent" and "(tenant doc) is " in silent["message"]
    assert "(silent): last heartbeat " in silent["message"], silent
    wait_for(lambda: {r["host_state"] for r in fleet.ps()} == {"ok"}, what="heartbeats again")

    assert agent.stop() == 0
    wait_for(lambda: {r["host_state"] for r in fleet.ps()} == {"stopped"}, what="host stopped")
    subprocess.run(["tmux", "-L", tmux_socket, "kill-server"], check=True)  # our own server
    code, findings, text = doctor(env, "--config", str(roster))
    assert code == 1
    found = {f["check"]: f for f in problems(findings)}
    assert set(found) == {"agent", "tmux"}, findings
    assert "agent of host h1 (tenant doc) is stopped" in found["agent"]["message"]
    assert found["agent"]["fix"] == f"fleet-agent run --config {roster}"
    assert f"tmux socket {tmux_socket} (roster {roster}" in found["tmux"]["message"]
    assert "is missing" in found["tmux"]["message"]
    lines = [line for line in text.splitlines() if line.startswith("PROBLEM")]
    assert len(lines) == 2 and all("-> fix: " in line for line in lines), text


def test_doctor_with_nothing_running_names_nats(tmp_path: Path) -> None:
    from controller.natsserver.embedded import free_port

    env = {**os.environ, "FLEET_NATS_URL": f"nats://127.0.0.1:{free_port()}"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
    code, findings, _ = doctor(env)
    assert code == 1
    [nats] = problems(findings)
    assert nats["check"] == "nats-server" and "cannot reach NATS" in nats["message"]
    assert nats["fix"] == "fleet up"


def test_doctor_with_nats_but_no_controller_names_the_controller(
    fleet: Fleet, tmp_path: Path
) -> None:
    code, findings, _ = doctor(env_for(fleet, tmp_path))
    assert code == 1
    [controller] = problems(findings)
    assert (
        controller["check"] == "controller" and "no controller is serving" in controller["message"]
    )
    assert ("nats-server", "ok") in {(f["check"], f["level"]) for f in findings}


def test_doctor_exits_0_on_a_healthy_fleet_up(start_up, sock) -> None:  # noqa: F811
    up = start_up(*demo_args(sock))
    up.wait_sessions(DEMO)
    code, findings, text = doctor(up.env)
    assert code == 0, problems(findings)
    assert text.splitlines()[-1] == "fleet doctor: healthy"
    ok = {f["check"] for f in findings if f["level"] == "ok"}
    assert {"tmux", "nats-server", "controller", "agent", "clock", "credentials"} <= ok
    context = Path(up.env["XDG_CONFIG_HOME"]) / "agentfleet" / "context.toml"
    assert any(str(context) in f["message"] for f in findings if f["check"] == "credentials")
    # What it cannot promise is said, but is not a problem: nothing was installed.
    assert [f["fix"] for f in findings if f["level"] == "note"] == ["fleet install"]

    context.chmod(0o644)  # a key others can read is a problem with its fix
    code, findings, _ = doctor(up.env)
    assert code == 1
    assert [f["fix"] for f in problems(findings)] == [f"chmod 600 {context}"]
    context.chmod(0o600)
    assert up.stop() == 0


FAKE_SYSTEMCTL = """#!/bin/sh
# `systemctl is-enabled UNIT` as systemd answers it: on.service is enabled, the rest not.
case "$2" in on.service) echo enabled ;; *) echo disabled; exit 1 ;; esac
"""
# The agent, with sd_booted() answering yes: systemd is not PID 1 in this container.
AGENT_WITH_SYSTEMD = (
    "import agent.discovery.bootunit as b; b.systemd_running = lambda *a: True; "
    "from agent.cli import main; main()"
)


def test_ps_flags_boot_disabled_and_doctor_names_the_unit(
    fleet: Fleet, tmux_socket: str, tmp_path: Path
) -> None:
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "systemctl").write_text(FAKE_SYSTEMCTL)
    (fake / "systemctl").chmod(0o755)
    sessions = [
        SessionSpec(name="on", runtime="stub", unit="on.service"),
        SessionSpec(name="off", runtime="stub", unit="off.service"),
        SessionSpec(name="plain", runtime="stub"),
    ]
    config = fleet.agent_config("boot", "h1", tmux_socket, sessions)
    roster = tmp_path / "boot.toml"
    roster.write_text(dump(config))
    fleet.start_controller(fleet.controller_config(["boot"]))
    agent = Proc(
        [sys.executable, "-c", AGENT_WITH_SYSTEMD, "run", "--config", str(roster)],
        tmp_path / "agent.log",
    ).start({"PATH": f"{fake}:{os.environ['PATH']}"})
    fleet.procs.append(agent)

    def seen() -> dict[str, dict[str, Any]] | None:
        rows = rows_by_session(fleet.ps())
        return rows if set(rows) == {"on", "off", "plain"} else None

    rows = wait_for(seen, timeout=30, what="the three sessions in fleet ps")
    assert rows is not None  # for the type checker: wait_for returns a truthy value
    assert {n: r["session"]["boot_enabled"] for n, r in rows.items()} == {
        "on": "yes",
        "off": "no",
        "plain": "unknown",
    }
    assert {n: r["flags"] for n, r in rows.items()} == {
        "on": [],
        "off": ["BOOT-DISABLED"],
        "plain": [],
    }
    table = fleet.cli("ps").stdout
    [off_line] = [line for line in table.splitlines() if " off " in f" {line} "]
    assert "BOOT-DISABLED" in off_line

    code, findings, _ = doctor(env_for(fleet, tmp_path), "--config", str(roster))
    assert code == 1
    [boot] = problems(findings)
    assert "session off (tenant boot, host h1): BOOT-DISABLED" in boot["message"]
    assert boot["fix"] == "systemctl enable off.service"


INSTALLED_SYSTEMCTL = """#!/bin/sh
# `systemctl --user is-enabled UNIT` after `fleet install`: someone disabled the controller.
case "$3" in fleet-controller.service) echo disabled; exit 1 ;; *) echo enabled ;; esac
"""


def test_doctor_checks_the_units_fleet_install_enabled(tmp_path: Path, tmux_socket: str) -> None:
    from tests.system.test_install import Box, linger_expected

    box = Box(tmp_path, tmux_socket)
    assert box.install().returncode == 0
    (tmp_path / "fake-bin" / "systemctl").write_text(INSTALLED_SYSTEMCTL)
    code, findings, text = doctor(box.env)
    assert code == 1
    found = {(f["check"], f["fix"]) for f in problems(findings)}
    want = {
        # Nothing runs the units here: NATS is not there, and the fix is its unit.
        ("nats-server", "systemctl --user start fleet-nats.service"),
        ("boot", "systemctl --user enable fleet-controller.service"),
    }
    if linger_expected():  # the fake loginctl did not turn lingering on
        want.add(("boot", f"loginctl enable-linger {getpass.getuser()}"))
    assert found == want, text
    enabled = {f["message"] for f in findings if f["check"] == "boot" and f["level"] == "ok"}
    assert enabled == {
        "fleet-nats.service is enabled",
        f"fleet-agent@{box.tenant}.service is enabled",
    }
    secrets = [f["message"] for f in findings if f["check"] == "credentials"]
    assert any(str(box.data / "controller.toml") in m for m in secrets), secrets
    assert "fleet install" not in [f["fix"] for f in findings if f["level"] == "note"]


def test_clock_findings() -> None:
    from controller.cli.doctor_fleet import clock_findings
    from protocol.api import StatusReply

    def reply(lag_ms: float) -> StatusReply:
        latencies = {"heartbeat_lag_p50": lag_ms}
        return StatusReply(controller_version="x", started_at=0, tenants=[], hosts=1,
                           latencies_ms=latencies)  # fmt: skip

    assert [f.level for f in clock_findings(reply(12.0), 0.3)] == ["ok"]
    [ahead] = clock_findings(reply(12.0), 5.0)
    assert ahead.level == "problem" and "5.0s ahead of this machine's" in ahead.message
    [behind] = clock_findings(reply(12.0), -3.0)
    assert "3.0s behind" in behind.message
    [host] = clock_findings(reply(-4000.0), 0.0)
    assert host.level == "problem" and "-4.0s after their sent_at" in host.message
