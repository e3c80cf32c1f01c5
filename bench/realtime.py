"""`python -m bench.realtime [--hosts N] [--changes K]`: state change -> visible through the API.

A real controller subprocess and nats-server; ``--hosts`` simulated hosts heartbeat every
``--interval`` seconds around it (bench/loadgen.py). One probe host of ours heartbeats too, and
flips its one session between idle and working by publishing `session.state` events into the
stream as the host agent does (same subject, same Nats-Msg-Id). Each sample is the time from
the publish to the first `ps --host probe` (polled every ``--poll-ms``) that shows the new
state; the probe's heartbeats keep coming meanwhile, with the snapshot of the time, so the
ordering rule (controller/fleet/realtime.py) is exercised too. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
import uuid

import nats

from agent.config import AgentConfig, SessionSpec
from agent.config import dump as dump_agent
from bench.common import machine, summary_ms, wait_until
from bench.harness import BIN, Bench, split_cpus
from bench.loadgen import Pool
from bench.scen_fleet import settle
from common.natsconn import NatsSettings
from controller.cli.client import ControllerClient
from protocol import encode, subjects
from protocol.api import CMD, PS, PsRequest
from protocol.commands import CommandRequest, Send
from protocol.events import Event, SourceKind
from protocol.heartbeat import Heartbeat, SessionSnapshot, SessionState

TENANT = "t0"
PROBE = "probe"


def _heartbeat(boot: str, seq: int, state: SessionState, since: float) -> Heartbeat:
    snap = SessionSnapshot(
        name="s0",
        runtime_configured="stub",
        runtime_observed="stub",
        state=state,
        state_since=since,
        last_output_at=since,
    )
    return Heartbeat(
        tenant=TENANT,
        host=PROBE,
        boot_id=boot,
        seq=seq,
        sent_at=time.time(),
        interval_s=5.0,
        agent_version="bench",
        sessions=[snap],
    )


def _event(boot: str, seq: int, old: SessionState, new: SessionState, ts: float) -> Event:
    return Event(
        tenant=TENANT,
        host=PROBE,
        session="s0",
        boot_id=boot,
        seq=seq,
        ts=ts,
        event_type="session.state",
        summary=f"s0: {old.value} -> {new.value}",
        source_kind=SourceKind.SYSTEM,
        provenance="screen",
        payload={"old": old.value, "new": new.value, "rule": "bench", "line": "bench"},
    )


async def _probe(url: str, changes: int, poll_s: float, gap_s: float) -> list[float]:
    nc = await nats.connect(servers=[url])
    js = nc.jetstream()
    boot = uuid.uuid4().hex[:12]
    hb_seq, evt_seq = 1, 0
    state, since = SessionState.IDLE, time.time()
    await nc.publish(subjects.heartbeat(TENANT, PROBE), encode(_heartbeat(boot, 1, state, since)))
    samples: list[float] = []
    async with ControllerClient(NatsSettings(servers=[url]), timeout=10) as client:

        async def shown() -> SessionState | None:
            reply = await client.call(PS, PsRequest(host=PROBE))
            snap = reply.rows[0].session if reply.rows else None
            return snap.state if snap else None

        async def until(want: SessionState, period: float, within: float = 30.0) -> None:
            deadline = time.monotonic() + within
            for _ in range(10**9):
                if await shown() is want:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the API never showed {want.value}")
                await asyncio.sleep(period)

        await until(state, 0.05)
        last_hb = time.monotonic()
        for _ in range(changes):
            new = SessionState.WORKING if state is SessionState.IDLE else SessionState.IDLE
            evt_seq += 1
            ts = time.time()
            event = _event(boot, evt_seq, state, new, ts)
            subject = subjects.event(TENANT, PROBE, "s0", "session.state")
            t0 = time.perf_counter()
            await js.publish(
                subject,
                encode(event),
                headers={"Nats-Msg-Id": subjects.msg_id(PROBE, boot, evt_seq)},
            )
            await until(new, poll_s)
            samples.append(time.perf_counter() - t0)
            state, since = new, ts
            if time.monotonic() - last_hb >= 5.0:  # the probe's own heartbeat, on time
                hb_seq += 1
                hb = _heartbeat(boot, hb_seq, state, since)
                await nc.publish(subjects.heartbeat(TENANT, PROBE), encode(hb))
                last_hb = time.monotonic()
            await asyncio.sleep(gap_s)
    await nc.close()
    return samples


async def _stub_runs(url: str, runs: int) -> list[float]:
    """A real stub session: for each change the agent decided (its event ts, which the snapshot
    carries as state_since), the time until `ps` shows it. Same machine, same clock."""
    samples: list[float] = []
    async with ControllerClient(NatsSettings(servers=[url]), timeout=10) as client:

        async def snap() -> SessionSnapshot | None:
            reply = await client.call(PS, PsRequest(tenant=TENANT, host=PROBE))
            return next((r.session for r in reply.rows if r.session), None)

        async def until(want: SessionState, within: float = 60.0) -> SessionSnapshot:
            deadline = time.monotonic() + within
            for _ in range(10**9):
                got = await snap()
                if got is not None and got.state is want:
                    return got
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the stub never showed {want.value}")
                await asyncio.sleep(0.005)
            raise AssertionError("unreachable")

        await until(SessionState.IDLE)
        for i in range(runs):
            # Verified (the runtime's default): a prompt typed before the stub reads its input
            # would be lost; the samples start at the agent's decision, not at the send.
            body = Send(session="s0", text=f"run {i}")
            result = await client.call(
                CMD, CommandRequest(target="s0", body=body, issued_by="bench")
            )
            if result.outcome.value not in ("delivered", "queued", "not_verified"):
                raise RuntimeError(f"send: {result.outcome.value}: {result.message}")
            for want in (SessionState.WORKING, SessionState.IDLE):
                got = await until(want)
                samples.append(max(0.0, time.time() - (got.state_since or time.time())))
    return samples


def _run_stub(b: Bench, runs: int) -> list[float]:
    socket = f"fleet-bench-{uuid.uuid4().hex[:8]}"
    session = SessionSpec(
        name="s0", runtime="stub", env={"FLEET_STUB_WORK_SECONDS": "2.0", "FLEET_STUB_STEPS": "2"}
    )
    config = AgentConfig(
        tenant=TENANT,
        host=PROBE,
        nats=NatsSettings(servers=[b.url]),
        tmux_socket=socket,
        state_dir=str(b.tmp / "agent"),
        heartbeat_interval_s=30.0,  # only the real-time path can show the changes
        poll_interval_s=0.25,  # as the tests: the screen is read 4 times a second
        allow_root=True,
        sessions=[session],
    )
    path = b.tmp / "agent.toml"
    path.write_text(dump_agent(config))
    log = (b.tmp / "agent.log").open("ab")
    agent = subprocess.Popen(
        [str(BIN / "fleet-agent"), "run", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        return asyncio.run(_stub_runs(b.url, runs))
    finally:
        agent.terminate()  # by the pid we started
        agent.wait(30)
        log.close()
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.realtime", description=__doc__)
    p.add_argument("--hosts", type=int, default=20, help="simulated hosts besides the probe")
    p.add_argument("--changes", type=int, default=200, help="state changes to time")
    p.add_argument("--interval", type=float, default=5.0, help="their heartbeat interval")
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--poll-ms", type=float, default=5.0, help="API poll period while waiting")
    p.add_argument("--gap-ms", type=float, default=50.0, help="pause between two changes")
    p.add_argument(
        "--stub-runs",
        type=int,
        default=0,
        help="instead: a real host agent and stub session doing this many runs (2 changes each)",
    )
    p.add_argument(
        "--full-every", type=int, default=12, help="the hosts' full snapshot every N beats"
    )
    p.add_argument("--pin", action="store_true", help="the controller on a CPU of its own")
    a = p.parse_args()
    out: dict[str, object] = {"machine": machine(), "hosts": a.hosts, "interval_s": a.interval}
    if a.pin:
        out["cpus"] = split_cpus()
    with Bench([TENANT], a.interval) as b:
        b.start_controller()
        if a.stub_runs:
            out["hosts"] = 1  # the agent's own, no simulated load
            out["mode"] = "stub: agent decided (event ts) -> visible through ps"
            out["state_change_to_api"] = summary_ms(_run_stub(b, a.stub_runs))
            print(json.dumps(out, indent=2))
            return
        pool = (
            Pool(b.url, [TENANT], a.hosts, a.interval, a.procs, full_every=a.full_every)
            if a.hosts
            else None
        )
        try:
            if pool:
                pool.wait_ready()
                # Probe a fleet in its steady state, not its ramp: every host heard first.
                started = time.monotonic()
                wait_until(
                    lambda: (st := b.try_status()) is not None and st.hosts >= a.hosts,
                    3 * a.interval + 120,
                    0.5,
                    f"{a.hosts} hosts heard",
                )
                out["ramp_s"] = round(time.monotonic() - started, 1)
                out["settle_s"] = settle(b, a.interval)  # and its backlog worked off
            samples = asyncio.run(_probe(b.url, a.changes, a.poll_ms / 1000, a.gap_ms / 1000))
            status = b.status()
        finally:
            if pool:
                pool.stop()
        out["state_change_to_api"] = summary_ms(samples)
        counters = status.counters
        out["state_events"] = {
            k: counters.get(k, 0)
            for k in ("state_events_applied", "state_events_stale", "state_events_ignored")
        }
        out["goal_p99_ms"] = 1000
        out["met"] = out["state_change_to_api"]["p99_ms"] <= 1000  # type: ignore[index]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
