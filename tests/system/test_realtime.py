"""Session states in real time: a state change reaches `fleet ps` through its `session.state`
event, long before a heartbeat could carry it. Real NATS, real tmux, stub sessions."""

from __future__ import annotations

import json
import time
import uuid

from agent.config import SessionSpec
from controller.fleet.realtime import StateNews
from controller.fleet.state import FleetState
from protocol.heartbeat import Heartbeat, SessionSnapshot, SessionState
from tests.support.fleet import Fleet, rows_by_session, wait_for

# Long enough that no heartbeat comes between the first one and the end of the test: only
# the real-time path can explain a state change seen in `fleet ps`.
HEARTBEAT_S = 30.0


def _state(fleet: Fleet, tenant: str, session: str) -> str | None:
    rows = rows_by_session(fleet.ps("--tenant", tenant))
    row = rows.get(session)
    return row["session"]["state"] if row else None


def _heartbeats(fleet: Fleet) -> int:
    result = fleet.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["counters"].get("heartbeats", 0)


def test_working_then_idle_shows_before_the_next_heartbeat(fleet: Fleet, tmux_socket: str) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    fleet.start_controller(fleet.controller_config([tenant]))
    session = SessionSpec(
        name="coder",
        runtime="stub",
        env={"FLEET_STUB_WORK_SECONDS": "2.0", "FLEET_STUB_STEPS": "2"},
    )
    config = fleet.agent_config(
        tenant, "h1", tmux_socket, [session], heartbeat_interval_s=HEARTBEAT_S
    )
    fleet.start_agent(config)
    wait_for(lambda: _state(fleet, tenant, "coder") == "idle", timeout=30, what="coder idle")
    beats = _heartbeats(fleet)
    started = time.monotonic()

    sent = fleet.cli("send", "coder", "write the haiku", "--no-verify")
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: _state(fleet, tenant, "coder") == "working", timeout=10, what="working")
    wait_for(lambda: _state(fleet, tenant, "coder") == "idle", timeout=15, what="idle again")
    # Both changes came without a heartbeat: the agent sent none meanwhile (its next one is
    # due HEARTBEAT_S ±20% after the last), so it was the state events.
    assert time.monotonic() - started < HEARTBEAT_S * 0.8
    assert _heartbeats(fleet) == beats
    status = json.loads(fleet.cli("status", "--json").stdout)
    assert status["counters"].get("state_events_applied", 0) >= 2


# -- the ordering rule, in-process (controller/fleet/realtime.py) ---------------------------
def _hb(seq: int, state: SessionState, since: float, boot: str = "b1") -> Heartbeat:
    snap = SessionSnapshot(
        name="s", runtime_configured="stub", runtime_observed="stub", state=state, state_since=since
    )
    return Heartbeat(
        tenant="t",
        host="h",
        boot_id=boot,
        seq=seq,
        sent_at=since,
        interval_s=5.0,
        agent_version="x",
        sessions=[snap],
    )


def _news(state: SessionState, ts: float, boot: str = "b1", session: str = "s") -> StateNews:
    return StateNews("t", "h", session, boot, ts, state, "rule", "line")


def _shown(state: FleetState) -> tuple[SessionState, float | None]:
    snap = state.hosts[("t", "h")].sessions[0]
    return snap.state, snap.state_since


def test_an_older_heartbeat_does_not_undo_a_newer_state_event() -> None:
    state = FleetState()
    state.on_heartbeat(_hb(1, SessionState.IDLE, 100.0))
    assert state.on_session_state(_news(SessionState.WORKING, 110.0)) is not None
    assert _shown(state) == (SessionState.WORKING, 110.0)
    # Sampled before the change (its state_since is older), processed after it.
    state.on_heartbeat(_hb(2, SessionState.IDLE, 100.0))
    assert _shown(state) == (SessionState.WORKING, 110.0)
    # One sampled after it carries the same instant: it has caught up and rules again.
    state.on_heartbeat(_hb(3, SessionState.WORKING, 110.0))
    assert state.hosts[("t", "h")].live is None
    state.on_heartbeat(_hb(4, SessionState.IDLE, 120.0))
    assert _shown(state) == (SessionState.IDLE, 120.0)


def test_stale_foreign_and_unknown_news_change_nothing() -> None:
    state = FleetState()
    state.on_heartbeat(_hb(1, SessionState.IDLE, 100.0))
    assert state.on_session_state(_news(SessionState.WORKING, 90.0)) is None  # older
    assert state.on_session_state(_news(SessionState.WORKING, 110.0, boot="b0")) is None
    assert state.on_session_state(_news(SessionState.WORKING, 110.0, session="x")) is None
    assert _shown(state) == (SessionState.IDLE, 100.0)
    assert state.counters["state_events_stale"] == 1
    assert state.counters["state_events_ignored"] == 2
    # A new boot's heartbeat drops what the old boot's events said.
    state.on_session_state(_news(SessionState.WORKING, 110.0))
    state.on_heartbeat(_hb(1, SessionState.IDLE, 105.0, boot="b2"))
    assert _shown(state) == (SessionState.IDLE, 105.0)
    assert state.hosts[("t", "h")].live is None
