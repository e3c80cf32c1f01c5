"""What a heartbeat costs the controller's intake, full snapshot vs keepalive (issue 18).

In this process, no NATS: the message bytes the agent would send, handed to the
controller's own intake (`Keepalives.intake`: size check, decode, subject check, digest)
and `FleetState.on_heartbeat` (a keepalive: `on_keepalive`), per host in turn, as the intake
task does. Measures CPU per message and bytes on the wire per host per minute, before (every
heartbeat full) and after (a full one every FULL_EVERY beats when nothing changed)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.common import Result
from controller.fleet.keepalive import Keepalives
from controller.fleet.rejects import Rejects
from controller.fleet.state import FleetState
from protocol import encode, subjects
from protocol.heartbeat import (
    FULL_EVERY,
    Heartbeat,
    Keepalive,
    SessionSnapshot,
    SessionState,
    snapshot_digest,
)

TENANT = "acme"


@dataclass
class FakeMsg:
    subject: str
    data: bytes


def _sessions(n: int) -> list[SessionSnapshot]:
    now = time.time()
    return [
        SessionSnapshot(
            name=f"session-{i:02d}",
            runtime_configured="claude",
            runtime_observed="claude",
            pid=10_000 + i,
            state=SessionState.IDLE,
            state_since=now - 600,
            last_output_at=now - 300,
        )
        for i in range(n)
    ]


def _messages(hosts: int, snaps: list[SessionSnapshot], seq: int, full: bool) -> list[FakeMsg]:
    digest = snapshot_digest(snaps)
    out = []
    for h in range(hosts):
        host = f"host-{h:06d}"
        boot = "b" + host[-6:]
        beat: Heartbeat | Keepalive
        if full:
            beat = Heartbeat(
                tenant=TENANT,
                host=host,
                boot_id=boot,
                seq=seq,
                sent_at=0.0,
                interval_s=5.0,
                agent_version="1",
                sessions=snaps,
                digest=digest,
            )
        else:
            beat = Keepalive(
                tenant=TENANT,
                host=host,
                boot_id=boot,
                seq=seq,
                sent_at=0.0,
                interval_s=5.0,
                digest=digest,
            )
        out.append(FakeMsg(subjects.heartbeat(TENANT, host), encode(beat)))
    return out


async def _no_publish(*_a: object) -> None:
    return None


async def _run(hosts: int, sessions: int, rounds: int) -> Result:
    state = FleetState()
    rejects = Rejects(state.counters, _no_publish)  # type: ignore[arg-type]
    keep = Keepalives(state, rejects, _no_publish)  # type: ignore[arg-type]
    seq, snaps = 1, _sessions(sessions)  # the same snapshot throughout: nothing changes
    for m in _messages(hosts, snaps, seq, True):  # every host known, digest held
        hb = await keep.intake(m)  # type: ignore[arg-type]
        assert isinstance(hb, Heartbeat)
        state.on_heartbeat(hb)
    out: Result = {"scenario": "keepalive", "hosts": hosts, "sessions_per_host": sessions}
    for kind in ("full", "keepalive"):
        spent = 0.0
        size = 0
        for _ in range(rounds):
            seq += 1
            msgs = _messages(hosts, snaps, seq, kind == "full")
            size = len(msgs[0].data)
            start = time.process_time()
            for m in msgs:
                beat = await keep.intake(m)  # type: ignore[arg-type]
                if isinstance(beat, Keepalive):  # as controller/hearing.py dispatches
                    state.on_keepalive(beat)
                elif beat is not None:
                    state.on_heartbeat(beat)
            spent += time.process_time() - start
        out[f"{kind}_bytes"] = size
        out[f"{kind}_us_per_heartbeat"] = round(spent / (hosts * rounds) * 1e6, 2)
    assert state.counters.get("keepalives_mismatched", 0) == 0, state.counters
    per_min = 60 / 5.0  # heartbeats per host per minute at the default 5 s
    before = per_min * out["full_bytes"]
    after = per_min * (out["full_bytes"] + (FULL_EVERY - 1) * out["keepalive_bytes"]) / FULL_EVERY
    out["bytes_per_host_min_before"] = round(before)
    out["bytes_per_host_min_after_unchanged"] = round(after)
    steady = out["full_us_per_heartbeat"] + (FULL_EVERY - 1) * out["keepalive_us_per_heartbeat"]
    out["us_per_heartbeat_unchanged_fleet"] = round(steady / FULL_EVERY, 2)
    return out


def keepalive(hosts: int, sessions: int = 10, rounds: int = 5) -> Result:
    return asyncio.run(_run(hosts, sessions, rounds))


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(keepalive(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000), indent=2))
