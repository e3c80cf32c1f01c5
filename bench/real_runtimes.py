"""The real agent CLIs under the fleet: send → verified, state change → visible through the
API, and cancel latency, per runtime (issue 14's benchmark; docs/benchmarks.md "Real runtimes").

    .venv/bin/python -m bench.real_runtimes [--runtimes claude codex pi] [--rounds 10] [--json F]

One nats-server, one controller, one host agent whose roster runs each pinned CLI (installed by
`./dev.sh setup`) against the tests' fake model (tests/support/fake_model.py), in a private
tmux socket; everything is stopped by the pid or socket this script started.

- send: `Send(verify=True)` through the controller, to an idle session, until `delivered`.
- visible: a prompt typed straight into the pane (paste, then Enter, as an operator would);
  from the Enter to the first API `ps` (polled every 50 ms) that shows `working`, and from the
  fake model's last byte to the first `ps` that shows `idle` again.
- cancel: `Cancel` during a streamed answer; the agent's own `latency_ms` (interrupt key to
  idle screen) and the round trip through the controller.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

from agent.config import AgentConfig, SessionSpec
from bench.common import Result, machine, summary_ms, wait_until
from bench.harness import Bench, api, start_agent, stop_agent
from common.natsconn import NatsSettings
from controller.cli.client import ControllerClient
from protocol.api import PsReply, PsRequest
from protocol.commands import Cancel, CommandRequest, CommandResult, Send
from tests.support import realcli, runtime_home
from tests.support.fake_model import FakeModel, Script, stream, text

TENANT = "bench"
HOST = "real"
LONG = " ".join(f"tok{i}" for i in range(400))


def _script(runtimes: list[str], rounds: int) -> Script:
    """Prompts unique per runtime and round: the fake model hands back the first request that
    names a marker, and with one marker for all three runtimes the second and third were
    timed against the first one's long-finished request (their done -> idle read 5-6 s)."""
    script = Script()
    for rt in runtimes:
        for i in range(rounds):
            script.on(f"{rt}-send{i}-", text(f"answer {i}"))
            script.on(f"{rt}-vis{i}-", stream(f"visible answer {i} " + "in a few words " * 8, 6))
            script.on(f"{rt}-cancel{i}-", stream(LONG, 60))
    return script


def _states(url: str) -> dict[str, str]:
    async def call(client: ControllerClient) -> dict[str, str]:
        reply = await client.call("ps", PsRequest(tenant=TENANT, host=HOST), PsReply)
        return {r.session.name: r.session.state.value for r in reply.rows if r.session}

    try:
        return api(url, call, timeout=5.0)
    except Exception:
        return {}


def _command(url: str, session: str, body: Send | Cancel) -> tuple[float, CommandResult]:
    async def call(client: ControllerClient) -> tuple[float, CommandResult]:
        req = CommandRequest(target=f"{TENANT}/{HOST}/{session}", body=body, issued_by="bench")
        start = time.perf_counter()
        result = await client.call("cmd", req, CommandResult)
        return time.perf_counter() - start, result

    return api(url, call, timeout=60.0)


def _until_state(url: str, session: str, state: str, timeout: float = 60.0) -> float:
    """Poll `ps` every 50 ms; the monotonic time it first showed ``state``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _states(url).get(session) == state:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"{session} not {state} within {timeout:.0f}s")


def _measure(url: str, rt: str, pane: realcli.Pane, model: FakeModel, rounds: int) -> Result:
    send: list[float] = []
    to_working: list[float] = []
    to_idle: list[float] = []
    cancel_agent: list[float] = []
    cancel_rtt: list[float] = []
    outcomes: dict[str, int] = {}
    for i in range(rounds):
        _until_state(url, rt, "idle")
        send_body = Send(session=rt, text=f"{rt}-send{i}- please", verify=True)
        took, result = _command(url, rt, send_body)
        outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
        if result.outcome.value == "delivered":
            send.append(took)
        model.wait_for_prompt(f"{rt}-send{i}-", 20)

        _until_state(url, rt, "idle")
        pane.paste(f"{rt}-vis{i}- please")
        pane.wait_for(f"{rt}-vis{i}-", 10, what="the pasted prompt")
        pane.send_keys("Enter")
        entered = time.monotonic()
        request = model.wait_for_prompt(f"{rt}-vis{i}-", 20)
        try:
            to_working.append(_until_state(url, rt, "working", timeout=8) - entered)
        except TimeoutError:  # a 6 s answer never seen working: counted
            outcomes["visible:never_working"] = outcomes.get("visible:never_working", 0) + 1
        request.done.wait(30)
        finished = time.monotonic()
        to_idle.append(_until_state(url, rt, "idle") - finished)

        realcli.submit(pane, f"{rt}-cancel{i}- please")
        request = model.wait_for_prompt(f"{rt}-cancel{i}-", 20)
        try:
            _until_state(url, rt, "working", timeout=20)
        except TimeoutError:  # counted, not fatal: the figure says how often it happens
            outcomes["cancel:never_working"] = outcomes.get("cancel:never_working", 0) + 1
            pane.send_keys("Escape")
            request.done.wait(30)
            continue
        took, result = _command(url, rt, Cancel(session=rt))
        outcomes[f"cancel:{result.outcome.value}"] = (
            outcomes.get(f"cancel:{result.outcome.value}", 0) + 1
        )
        if result.outcome.value == "cancelled" and result.details:
            cancel_agent.append(float(result.details["latency_ms"]) / 1000)
            cancel_rtt.append(took)
    return {
        "send_verified": summary_ms(send),
        "state_to_working": summary_ms(to_working),
        "state_to_idle": summary_ms(to_idle),
        "cancel_agent": summary_ms(cancel_agent),
        "cancel_round_trip": summary_ms(cancel_rtt),
        "outcomes": outcomes,
    }


def run(runtimes: list[str], rounds: int) -> Result:
    out: Result = {"scenario": "real_runtimes", "rounds": rounds, "machine": machine()}
    out["versions"] = {rt: realcli.PINNED[rt] for rt in runtimes}
    socket = f"fleet-bench-real-{uuid.uuid4().hex[:8]}"
    with Bench([TENANT], 1.0) as b, FakeModel(_script(runtimes, rounds)) as model:
        b.start_controller()
        sessions = []
        for rt in runtimes:
            root = b.tmp / rt
            binary = realcli.cli_path(rt)
            if binary is None:
                raise SystemExit(f"{rt} is not installed: run ./dev.sh setup")
            launch = runtime_home.seed(rt, root, root / "project", model.url, binary=str(binary))
            env = realcli.node_path_env(launch.env)
            sessions.append(
                SessionSpec(name=rt, runtime=rt, command=launch.argv, cwd=str(launch.cwd), env=env)
            )
        config = AgentConfig(
            tenant=TENANT,
            host=HOST,
            nats=NatsSettings(servers=[b.url]),
            tmux_socket=socket,
            state_dir=str(b.tmp / "agent"),
            # Production defaults: the figures are what an operator would see.
            heartbeat_interval_s=5.0,
            poll_interval_s=1.0,
            window_width=120,
            window_height=40,
            allow_root=os.geteuid() == 0,
            sessions=sessions,
        )
        agent = start_agent(b, config)
        try:
            wait_until(
                lambda: (
                    agent.poll() is not None
                    or all(_states(b.url).get(rt) == "idle" for rt in runtimes)
                ),
                90,
                0.5,
                "every runtime idle",
            )
            tmux = realcli.Tmux.existing(socket)
            for rt in runtimes:
                pane = realcli.Pane(tmux, f"={rt}:")
                out[rt] = _measure(b.url, rt, pane, model, rounds)
        finally:
            stop_agent(agent, socket)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.real_runtimes", description=__doc__)
    p.add_argument("--runtimes", nargs="+", default=["claude", "codex", "pi"])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--json", type=Path, help="write the result here as JSON")
    a = p.parse_args(argv)
    result = run(a.runtimes, a.rounds)
    text_out = json.dumps(result, indent=2)
    if a.json:
        a.json.write_text(text_out + "\n")
    print(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
