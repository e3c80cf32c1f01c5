"""Liveness as an operator sees it: suspect, down, ok again, stopped, and a controller
restart that never declares a live host down."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import nats

from agent.config import SessionSpec
from protocol import encode, subjects
from protocol.heartbeat import DOWN_AFTER_INTERVALS, SUSPECT_AFTER_INTERVALS, Heartbeat
from tests.support.fleet import Fleet, Proc, wait_for

INTERVAL = 0.5
ROSTER = [SessionSpec(name="s1", runtime="stub")]


def tenant_id() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def host_state(fleet: Fleet, tenant: str, host: str = "h1") -> str | None:
    """As `fleet ps` shows it, asked in-process: `suspect` lasts 1.5 s at INTERVAL 0.5, and
    a CLI process per poll (1-2 s to start on a loaded box) could miss it."""
    rows = [r for r in fleet.api_ps(tenant) if r["host"] == host]
    return rows[0]["host_state"] if rows else None


def transitions(data_dir: Path, tenant: str) -> list[tuple[str | None, str, float | None]]:
    with closing(sqlite3.connect(data_dir / "fleet.db")) as db:
        rows = db.execute(
            "SELECT old_state, new_state, silent_s FROM host_transitions"
            " WHERE tenant=? ORDER BY id",
            (tenant,),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def start(fleet: Fleet, tmux_socket: str, **ctl: Any) -> tuple[str, Proc, Proc]:
    tenant = tenant_id()
    controller = fleet.start_controller(fleet.controller_config([tenant], **ctl))
    agent = fleet.start_agent(
        fleet.agent_config(tenant, "h1", tmux_socket, ROSTER, heartbeat_interval_s=INTERVAL)
    )
    wait_for(lambda: host_state(fleet, tenant) == "ok", timeout=20, what="host ok")
    return tenant, controller, agent


def test_sigstop_suspect_then_down_then_sigcont_ok(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, agent = start(fleet, tmux_socket)
    agent.signal(signal.SIGSTOP)
    wait_for(
        lambda: host_state(fleet, tenant) == "suspect", timeout=10, interval=0.05, what="suspect"
    )
    wait_for(lambda: host_state(fleet, tenant) == "down", timeout=10, interval=0.05, what="down")
    agent.signal(signal.SIGCONT)
    wait_for(lambda: host_state(fleet, tenant) == "ok", timeout=10, what="ok again")

    # The controller's own record of why: silence measured on its clock, within the rules.
    wait_for(
        lambda: len(transitions(fleet.tmp / "controller", tenant)) >= 4,
        timeout=5,
        what="transitions persisted",
    )
    steps = transitions(fleet.tmp / "controller", tenant)
    assert [(old, new) for old, new, _ in steps] == [
        (None, "ok"),
        ("ok", "suspect"),
        ("suspect", "down"),
        ("down", "ok"),
    ]
    suspect_silence, down_silence = steps[1][2], steps[2][2]
    assert suspect_silence is not None and down_silence is not None
    tick = 0.1  # liveness_tick_s of the test controller
    assert (
        SUSPECT_AFTER_INTERVALS * INTERVAL
        < suspect_silence
        <= SUSPECT_AFTER_INTERVALS * INTERVAL + 2 * tick
    )
    assert (
        DOWN_AFTER_INTERVALS * INTERVAL < down_silence <= DOWN_AFTER_INTERVALS * INTERVAL + 2 * tick
    )


def test_graceful_stop_is_stopped_not_down(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, agent = start(fleet, tmux_socket)
    assert agent.stop() == 0
    wait_for(lambda: host_state(fleet, tenant) == "stopped", timeout=10, what="stopped")
    # Well past the down threshold it is still stopped: the clock never turns it into down.
    deadline = time.monotonic() + DOWN_AFTER_INTERVALS * INTERVAL * 2
    while time.monotonic() < deadline:
        assert host_state(fleet, tenant) == "stopped"
    assert "down" not in [new for _, new, _ in transitions(fleet.tmp / "controller", tenant)]


def test_controller_restart_never_reports_a_live_host_down(fleet: Fleet, tmux_socket: str) -> None:
    tenant, controller, _ = start(fleet, tmux_socket, restart_grace_s=3.0)
    controller.kill()  # crash, no goodbye
    time.sleep(DOWN_AFTER_INTERVALS * INTERVAL * 2)  # away far longer than the down threshold
    fleet.start_controller(fleet.controller_config([tenant], restart_grace_s=3.0))
    seen = []
    deadline = time.monotonic() + 3.0 + DOWN_AFTER_INTERVALS * INTERVAL * 2
    while time.monotonic() < deadline:
        seen.append(host_state(fleet, tenant))
    assert seen and set(seen) == {"ok"}, seen
    assert "down" not in [new for _, new, _ in transitions(fleet.tmp / "controller", tenant)]


def test_controller_restart_still_catches_a_dead_host(fleet: Fleet, tmux_socket: str) -> None:
    tenant, controller, agent = start(fleet, tmux_socket, restart_grace_s=3.0)
    controller.stop()
    agent.kill()  # dies while the controller is away: no shutdown notice
    fleet.start_controller(fleet.controller_config([tenant], restart_grace_s=3.0))
    assert host_state(fleet, tenant) == "ok"  # restored from the store, listed at once
    wait_for(lambda: host_state(fleet, tenant) == "down", timeout=15, what="down after grace")


def test_garbage_heartbeats_are_counted_and_survived(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = start(fleet, tmux_socket)
    good = Heartbeat(
        tenant=tenant, host="h9", boot_id="b", seq=1, sent_at=0.0, interval_s=5.0, agent_version="x"
    )
    bad = [
        b"\x00\xff\xfe not json",
        b"{}",
        b'{"msg":"heartbeat","tenant":"' + tenant.encode() + b'"}',
        b"[1,2,3]",
        encode(good).replace(b'"seq":1', b'"seq":"one"'),
        encode(good),  # well-formed, but says h9 on another host's subject: impersonation
        b"",
    ]

    async def publish() -> None:
        # One host subject each: heartbeats waiting on one subject supersede each other
        # unread (controller/latest.py), and each of these must be looked at and refused.
        nc = await nats.connect(fleet.nats.url)
        for i, payload in enumerate(bad):
            await nc.publish(subjects.heartbeat(tenant, f"g{i}"), payload)
        await nc.flush()
        await nc.close()

    anyio.run(publish)

    def counted() -> int:
        result = fleet.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["counters"].get("malformed_heartbeats", 0) >= len(bad)

    wait_for(counted, timeout=10, what="malformed heartbeats counted")
    status = json.loads(fleet.cli("status", "--json").stdout)
    assert status["counters"]["malformed_heartbeats"] == len(bad)
    assert host_state(fleet, tenant) == "ok"
    assert host_state(fleet, tenant, "h9") is None  # the impersonated host was not created
