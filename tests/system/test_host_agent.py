"""The host agent against real tmux and a real nats-server, observed through `fleet ps`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from agent.config import SessionSpec
from controller.natsserver.embedded import EmbeddedNats, free_port
from protocol.heartbeat import SessionKind
from tests.support.fleet import Fleet, rows_by_session, wait_for

STUB = [sys.executable, "-m", "agent", "stub"]


def tenant_id() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def sessions_in(fleet: Fleet, tenant: str, want: int) -> dict[str, dict[str, Any]] | None:
    rows = rows_by_session(fleet.ps("--tenant", tenant))
    return rows if len(rows) >= want else None


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_roster_sessions_launch_and_appear_in_ps(fleet: Fleet, tmux_socket: str) -> None:
    tenant = tenant_id()
    roster = [
        SessionSpec(name="coder", runtime="stub", env={"PROJECT": "alpha"}),
        SessionSpec(name="reviewer", runtime="stub", kind=SessionKind.CORE),
        SessionSpec(name="worker-3", runtime="stub", command=[*STUB, "--work-seconds", "1"]),
    ]
    fleet.start_controller(fleet.controller_config([tenant]))
    fleet.start_agent(fleet.agent_config(tenant, "h1", tmux_socket, roster))

    def all_idle() -> dict[str, dict[str, Any]] | None:
        rows = sessions_in(fleet, tenant, 3)
        if rows and all(r["session"]["state"] == "idle" for r in rows.values()):
            return rows
        return None

    rows = wait_for(all_idle, timeout=30, what="three idle stub sessions in fleet ps")
    assert set(rows) == {"coder", "reviewer", "worker-3"}
    for row in rows.values():
        snap = row["session"]
        assert row["tenant"] == tenant and row["host"] == "h1"
        assert row["host_state"] == "ok"
        assert row["flags"] == []
        assert snap["runtime_configured"] == snap["runtime_observed"] == "stub"
        assert snap["pane"] == "alive" and snap["managed"] is True
        assert snap["kind"] == "core"
        assert snap["boot_enabled"] == "unknown"  # no systemd as PID 1 here
        assert snap["pid"] > 0 and snap["state_since"] is not None
    # Env reaches the session through `new-session -e`, alongside the fleet's own ids.
    env = environ_of(rows["coder"]["session"]["pid"])
    assert env["PROJECT"] == "alpha"
    assert env["FLEET_SESSION"] == "coder" and env["FLEET_TENANT"] == tenant
    # Sane window size, and remain-on-exit set so a dead pane stays visible.
    size = subprocess.run(
        [
            "tmux",
            "-L",
            tmux_socket,
            "display",
            "-p",
            "-t",
            "=coder:",
            "#{window_width}x#{window_height} #{remain-on-exit}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert size == ["200x50", "on"]

    # The human table shows the same sessions.
    table = fleet.cli("ps", "--tenant", tenant)
    assert table.returncode == 0
    for name in ("coder", "reviewer", "worker-3"):
        assert name in table.stdout


def test_dead_missing_drift_and_unmanaged_are_flagged(fleet: Fleet, tmux_socket: str) -> None:
    tenant = tenant_id()
    roster = [
        SessionSpec(name="victim", runtime="stub"),
        SessionSpec(name="liar", runtime="claude", command=STUB),  # roster says claude
        SessionSpec(name="vanish", runtime="stub"),
    ]
    fleet.start_controller(fleet.controller_config([tenant]))
    fleet.start_agent(fleet.agent_config(tenant, "h1", tmux_socket, roster))
    rows = wait_for(
        lambda: (
            (r := sessions_in(fleet, tenant, 3))
            and all(x["session"]["runtime_observed"] for x in r.values())
            and r
        ),
        timeout=30,
        what="roster up with observed runtimes",
    )
    assert rows["liar"]["flags"] == ["DRIFT"]
    assert rows["liar"]["session"]["runtime_observed"] == "stub"
    assert rows["victim"]["flags"] == []

    os.kill(rows["victim"]["session"]["pid"], signal.SIGKILL)
    subprocess.run(["tmux", "-L", tmux_socket, "kill-session", "-t", "=vanish"], check=True)
    subprocess.run(
        ["tmux", "-L", tmux_socket, "new-session", "-d", "-s", "byhand", "sleep 600"], check=True
    )

    def flagged() -> dict[str, dict[str, Any]] | None:
        r = rows_by_session(fleet.ps("--tenant", tenant))
        ok = (
            r.get("victim", {}).get("flags") == ["DEAD"]
            and r.get("vanish", {}).get("flags") == ["MISSING"]
            and "UNMANAGED" in r.get("byhand", {}).get("flags", [])
        )
        return r if ok else None

    rows = wait_for(flagged, timeout=15, what="DEAD, MISSING and UNMANAGED flags")
    assert rows["victim"]["session"]["pane"] == "dead"
    assert rows["victim"]["session"]["state"] == "exited"
    assert rows["victim"]["session"]["exit_signal"] == signal.SIGKILL
    assert rows["vanish"]["session"]["pane"] == "missing"
    assert rows["byhand"]["session"]["runtime_configured"] is None
    assert rows["byhand"]["session"]["managed"] is False
    problems = {r["session"]["name"] for r in fleet.ps("--tenant", tenant, "--problems")}
    assert problems == {"victim", "vanish", "byhand", "liar"}


def test_a_session_whose_name_cannot_be_an_id_is_reported_once(
    fleet: Fleet, tmux_socket: str
) -> None:
    tenant = tenant_id()
    fleet.start_controller(fleet.controller_config([tenant]))
    fleet.start_agent(fleet.agent_config(tenant, "h1", tmux_socket, [SessionSpec(name="coder")]))
    wait_for(lambda: sessions_in(fleet, tenant, 1), timeout=30, what="the roster up")
    for name in ("_holder", "later"):  # `later` is a valid name: it comes after, as a marker
        subprocess.run(
            ["tmux", "-L", tmux_socket, "new-session", "-d", "-s", name, "sleep 600"], check=True
        )
    wait_for(
        lambda: "later" in rows_by_session(fleet.ps("--tenant", tenant)),
        timeout=15,
        what="the marker session listed",
    )

    def reported() -> list[dict[str, Any]]:
        result = fleet.cli(
            "events", "search", "--tenant", tenant, "--type", "session.unrepresentable", "--json"
        )
        return [json.loads(line) for line in result.stdout.splitlines()]

    [event] = wait_for(reported, timeout=15, what="the unrepresentable session reported")
    assert event["payload"]["name"] == "_holder" and event["session"].startswith("unnamed-")
    # Many discovery passes later (the marker was listed after it), still exactly one.
    assert len(reported()) == 1
    assert "_holder" not in rows_by_session(fleet.ps("--tenant", tenant))


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('tenant = "acme"\nhost = "bad.host"\n')
    result = subprocess.run(
        [str(Path(sys.executable).parent / "fleet-agent"), "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid host id 'bad.host'" in result.stderr
    assert "Traceback" not in result.stderr


def test_agent_started_before_nats_connects_when_it_appears(
    tmp_path: Path, tmux_socket: str
) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    server.port = free_port()  # chosen now, listened on later
    fleet = Fleet(server, tmp_path)
    try:
        tenant = tenant_id()
        agent = fleet.start_agent(
            fleet.agent_config(tenant, "h1", tmux_socket, [SessionSpec(name="s", runtime="stub")])
        )
        wait_for(lambda: "cannot connect to NATS" in agent.log(), what="agent retrying")
        assert agent.popen is not None and agent.popen.poll() is None
        server.start()
        fleet.start_controller(fleet.controller_config([tenant]))
        wait_for(lambda: sessions_in(fleet, tenant, 1), timeout=20, what="host joins")
    finally:
        fleet.stop_all()
        server.stop()
