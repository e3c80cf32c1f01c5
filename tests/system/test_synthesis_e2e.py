"""Synthesis with a real stub: it fires when the agent stays silent, and not when it emits."""

from __future__ import annotations

import json
import uuid
from typing import Any

from agent.config import SessionSpec
from controller.events.synthesis.engine import SynthesisConfig
from tests.support.fleet import Fleet, wait_for
from tests.system.test_events_delivery import send_prompts

GRACE = 1.0


def search(fleet: Fleet, tenant: str, *args: str) -> list[dict[str, Any]]:
    result = fleet.cli("events", "search", "--tenant", tenant, "--limit", "500", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def start(fleet: Fleet, tmux_socket: str, emit: str) -> str:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    fleet.start_controller(
        fleet.controller_config([tenant], synthesis=SynthesisConfig(completion_grace_s=GRACE))
    )
    spec = SessionSpec(
        name="w",
        runtime="stub",
        env={"FLEET_STUB_WORK_SECONDS": "1.5", "FLEET_STUB_STEPS": "2", "FLEET_STUB_EMIT": emit},
    )
    config = fleet.agent_config(tenant, "h1", tmux_socket, [spec])
    fleet.start_agent(config)
    wait_for(lambda: (config.state_path / "logs" / "w.log").exists(), what="capture on")
    wait_for(
        lambda: any(
            e["payload"].get("new") == "idle"
            for e in search(fleet, tenant, "--type", "session.state")
        ),
        what="stub idle",
    )
    return tenant


def test_silent_agent_gets_run_completed_and_tool_result_synthesized(
    fleet: Fleet, tmux_socket: str
) -> None:
    tenant = start(fleet, tmux_socket, "partial")
    send_prompts(tmux_socket, "w", ["quietly do it"])

    def synthesized() -> dict[str, dict[str, Any]] | None:
        found = {e["event_type"]: e for e in search(fleet, tenant, "synthesized")}
        return found if {"run.completed", "tool_result"} <= set(found) else None

    found = wait_for(synthesized, timeout=30, what="synthesized run.completed and tool_result")
    done = found["run.completed"]
    assert done["source_kind"] == "system"
    assert done["provenance"] == "screen:working->idle"
    assert done["idempotency_key"].startswith("synth:run.completed:")
    assert found["tool_result"]["provenance"].startswith("tool_call without tool_result")
    # The agent really did stay silent about both.
    agent_types = {e["event_type"] for e in search(fleet, tenant) if e["source_kind"] == "agent"}
    assert agent_types == {"run.started", "tool_call"}
    status = json.loads(fleet.cli("status", "--json").stdout)
    assert status["counters"]["sequence_gaps"] == 0


def test_agent_that_emits_gets_nothing_synthesized(fleet: Fleet, tmux_socket: str) -> None:
    tenant = start(fleet, tmux_socket, "all")
    send_prompts(tmux_socket, "w", ["first"])
    first = wait_for(
        lambda: [
            e
            for e in search(fleet, tenant, "--type", "session.state")
            if e["payload"].get("old") == "working"
        ],
        timeout=30,
        what="first run back to idle",
    )
    idle_at = first[0]["ts"]
    # A later run that ends after the first one's grace period expired: had synthesis fired
    # for the first run, its event would be ahead of this one in the stream, so stored.
    send_prompts(tmux_socket, "w", ["second"])
    wait_for(
        lambda: any(
            e["ts"] > idle_at + GRACE + 0.3
            for e in search(fleet, tenant, "--type", "run.completed")
        ),
        timeout=30,
        what="second run completed",
    )
    assert search(fleet, tenant, "synthesized") == []
    assert {e["event_type"] for e in search(fleet, tenant, "--type", "run.completed")} == {
        "run.completed"
    }
    assert all(
        e["source_kind"] == "agent" for e in search(fleet, tenant, "--type", "run.completed")
    )
