"""Command round trip through the controller to a real `fleet-agent` with stub sessions in a
private tmux socket, and that agent's memory."""

from __future__ import annotations

import time
import uuid
from typing import Any

from agent.config import AgentConfig, SessionSpec
from bench.common import Result, goal, proc_status, summary_ms, wait_until
from bench.harness import Bench, api, start_agent, stop_agent
from common.natsconn import NatsSettings
from controller.cli.client import ControllerClient
from protocol.api import PsReply, PsRequest
from protocol.commands import CommandRequest, CommandResult, Send

TENANT = "bench"
HOST = "agent1"


def _idle_sessions(b: Bench) -> int:
    async def call(client: ControllerClient) -> int:
        reply = await client.call("ps", PsRequest(tenant=TENANT, host=HOST), PsReply)
        return sum(1 for r in reply.rows if r.session and r.session.state.value == "idle")

    try:
        return api(b.url, call, timeout=5.0)
    except Exception:
        return 0


def _send_many(b: Bench, sessions: int, count: int, verify: bool) -> tuple[list[float], Any]:
    async def run(client: ControllerClient) -> tuple[list[float], Any]:
        took: list[float] = []
        outcomes: dict[str, int] = {}
        controller_ms: list[float] = []
        for i in range(count):
            name = f"s{i % sessions:02d}"
            req = CommandRequest(
                target=f"{TENANT}/{HOST}/{name}",
                body=Send(session=name, text=f"ping {i} 0.05s", verify=verify, timeout_s=10),
                issued_by="bench",
            )
            start = time.perf_counter()
            result = await client.call("cmd", req, CommandResult)
            took.append(time.perf_counter() - start)
            outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
            if result.round_trip_ms is not None:
                controller_ms.append(result.round_trip_ms / 1000)
        return took, {"outcomes": outcomes, "controller_side": summary_ms(controller_ms)}

    return api(b.url, run, timeout=30.0)


def cmd(count: int, verify_count: int, sessions: int) -> Result:
    out: Result = {"scenario": "cmd", "sessions": sessions}
    socket = f"fleet-bench-{uuid.uuid4().hex[:8]}"
    with Bench([TENANT], 1.0) as b:
        b.start_controller()
        config = AgentConfig(
            tenant=TENANT,
            host=HOST,
            nats=NatsSettings(servers=[b.url]),
            tmux_socket=socket,
            state_dir=str(b.tmp / "agent"),
            heartbeat_interval_s=1.0,
            poll_interval_s=0.5,
            sessions=[
                SessionSpec(
                    name=f"s{k:02d}",
                    runtime="stub",
                    env={"FLEET_STUB_WORK_SECONDS": "0.05", "FLEET_STUB_STEPS": "1"},
                )
                for k in range(sessions)
            ],
        )
        agent = start_agent(b, config)
        try:
            wait_until(
                lambda: agent.poll() is not None or _idle_sessions(b) >= sessions,
                60,
                0.5,
                "stub sessions idle",
            )
            if agent.poll() is not None:
                raise RuntimeError(f"fleet-agent exited: {(b.tmp / 'agent.log').read_text()}")
            out["agent_rss_idle_mib"] = round(proc_status(agent.pid).get("VmRSS", 0) / 1024, 1)
            took, info = _send_many(b, sessions, count, verify=False)
            out["send"] = {**summary_ms(took), **info}
            if verify_count:
                wait_until(lambda: _idle_sessions(b) >= sessions, 60, 0.5, "sessions idle again")
                took, info = _send_many(b, sessions, verify_count, verify=True)
                out["send_verify"] = {**summary_ms(took), **info}
            status = proc_status(agent.pid)
            out["agent_rss_mib"] = round(status.get("VmRSS", 0) / 1024, 1)
            out["agent_hwm_mib"] = round(status.get("VmHWM", 0) / 1024, 1)
            out["controller_status_rtt_ms"] = b.status().latencies_ms
        finally:
            stop_agent(agent, socket)
    goal(out, "send_p99_ms", out["send"]["p99_ms"], 100)
    # A send that finds its stub still working on the previous one is `queued`: taken too.
    delivered = sum(out["send"]["outcomes"].get(k, 0) for k in ("delivered", "queued"))
    goal(out, "send_all_delivered", int(delivered == count), 1, below=False)
    goal(out, "agent_rss_mib", out["agent_hwm_mib"], 80)
    return out
