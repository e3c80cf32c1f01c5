"""Heartbeats that cost what changed (issue 18): full snapshots when something changed and
every FULL_EVERY beats, keepalives otherwise; a controller that holds another digest asks
for a full snapshot; a bad keepalive is counted and the controller keeps serving."""

from __future__ import annotations

import json
import shutil
import uuid
from typing import Any

import anyio
import nats

from agent.config import SessionSpec
from agent.events.publisher import Wakeup
from agent.heartbeat import HeartbeatClock, Heartbeats
from controller.natsserver.embedded import EmbeddedNats
from protocol import decode, encode, subjects
from protocol.heartbeat import (
    FULL_EVERY,
    Heartbeat,
    HostBeat,
    Keepalive,
    SessionSnapshot,
    SessionState,
    SnapshotWanted,
)
from tests.support.fleet import Fleet, wait_for

ROSTER = [SessionSpec(name="s1", runtime="stub"), SessionSpec(name="s2", runtime="stub")]


def snap(name: str, state: SessionState = SessionState.IDLE) -> SessionSnapshot:
    return SessionSnapshot(
        name=name, runtime_configured="stub", runtime_observed="stub", state=state
    )


def counters(fleet: Fleet) -> dict[str, Any]:
    out = fleet.cli("status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["counters"]


def test_agent_sends_full_on_change_and_every_n(nats_server: EmbeddedNats) -> None:
    async def main() -> list[HostBeat]:
        nc = await nats.connect(nats_server.url)
        got: list[HostBeat] = []
        all_in = anyio.Event()

        async def take(msg: Any) -> None:
            got.append(decode(msg.data, HostBeat))  # type: ignore[arg-type]
            if len(got) == 3 + 1 + FULL_EVERY + 1:
                all_in.set()

        await nc.subscribe(subjects.heartbeat("t1", "h1"), cb=take)
        sessions = [snap("s1")]

        async def current(_forced: bool) -> list[SessionSnapshot]:
            return sessions

        beats = Heartbeats(
            HeartbeatClock("t1", "h1", 5.0, "test"),
            lambda: nc,
            current,
            Wakeup(),
            spread=lambda _n: 0,  # count from the forced full (the spread: tests/agent)
        )
        for _ in range(3):
            await beats.publish(await current(False))
        sessions = [snap("s1", SessionState.WORKING)]  # a session changed: full at once
        await beats.publish(sessions)
        for _ in range(FULL_EVERY):
            await beats.publish(sessions)
        # A controller asks: the next one is full although nothing changed.
        # (The command server hands it over; test_restarted_empty_controller_asks_for_snapshots
        # takes the wire path.)
        await beats.snapshot_wanted(encode(SnapshotWanted(tenant="t1", host="h1")))
        assert await beats.beat_now.wait(5), "the request did not wake the heartbeat loop"
        assert beats.full_next
        await beats.publish(sessions)
        await nc.flush()
        with anyio.fail_after(5):
            await all_in.wait()
        await nc.close()
        return got

    got = anyio.run(main)
    kinds = ["full" if isinstance(b, Heartbeat) else "ka" for b in got]
    # first full, two keepalives; the change full; then FULL_EVERY-1 keepalives and the
    # periodic full; then the asked-for full.
    assert kinds[:4] == ["full", "ka", "ka", "full"]
    assert kinds[4 : 4 + FULL_EVERY] == ["ka"] * (FULL_EVERY - 1) + ["full"]
    assert kinds[-1] == "full"
    assert [b.seq for b in got] == list(range(1, len(got) + 1))
    fulls = [b for b in got if isinstance(b, Heartbeat)]
    for ka in (b for b in got if isinstance(b, Keepalive)):
        last_full = max((f for f in fulls if f.seq < ka.seq), key=lambda f: f.seq)
        assert ka.digest == last_full.digest  # names the snapshot sent before it


def test_restarted_empty_controller_asks_for_snapshots(fleet: Fleet, tmux_socket: str) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    interval = 1.0  # a periodic full snapshot comes only every FULL_EVERY s
    config = fleet.controller_config([tenant])
    controller = fleet.start_controller(config)
    for host in ("h1", "h2"):
        fleet.start_agent(
            fleet.agent_config(
                tenant, host, f"{tmux_socket}-{host}", ROSTER, heartbeat_interval_s=interval
            )
        )
    wait_for(lambda: len(fleet.ps("--tenant", tenant)) == 4, timeout=30, what="4 sessions")
    # The steady state is keepalives (stub sessions do not change).
    wait_for(lambda: counters(fleet).get("keepalives", 0) >= 4, timeout=20, what="keepalives")

    controller.stop()
    shutil.rmtree(fleet.tmp / "controller")
    fleet.start_controller(config)
    # Every host's sessions again, well before a periodic full snapshot could have come:
    # the keepalives' digests matched nothing, and the controller asked.
    rows = wait_for(
        lambda: (r := fleet.ps("--tenant", tenant)) and len(r) == 4 and r,
        timeout=FULL_EVERY * interval / 2,
        interval=0.1,
        what="both hosts' sessions after an empty restart",
    )
    assert {(r["host"], r["session"]["name"]) for r in rows} == {
        (h, s) for h in ("h1", "h2") for s in ("s1", "s2")
    }
    seen = counters(fleet)
    assert seen.get("keepalives_mismatched", 0) >= 2
    assert seen.get("snapshots_asked", 0) >= 2


def test_malformed_and_mismatched_keepalives_are_counted(fleet: Fleet, tmux_socket: str) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    fleet.start_controller(fleet.controller_config([tenant]))
    fleet.start_agent(fleet.agent_config(tenant, "h1", tmux_socket, ROSTER))
    wait_for(lambda: len(fleet.ps("--tenant", tenant)) == 2, timeout=30, what="sessions")

    async def send() -> None:
        nc = await nats.connect(fleet.nats.url)
        # Each on its own host's subject: the intake keeps only the newest per subject.
        for host, bad in (
            ("h7", b'{"msg":"heartbeat.keepalive","tenant":"' + tenant.encode() + b'"}'),
            (
                "h8",
                b'{"msg":"heartbeat.keepalive","tenant":"' + tenant.encode() + b'","host":"h8",'
                b'"boot_id":"b","seq":1,"sent_at":1.0,"interval_s":5,"digest":"nothex"}',
            ),
        ):
            await nc.publish(subjects.heartbeat(tenant, host), bad)
        # Well-formed, from a host the controller never heard a full heartbeat from.
        ka = Keepalive(
            tenant=tenant,
            host="h9",
            boot_id="b9",
            seq=1,
            sent_at=1.0,
            interval_s=5.0,
            digest="0123456789abcdef",
        )
        await nc.publish(subjects.heartbeat(tenant, "h9"), encode(ka))
        await nc.flush()
        await nc.close()

    anyio.run(send)
    wait_for(
        lambda: (
            counters(fleet).get("keepalives_malformed", 0) >= 2
            and counters(fleet).get("keepalives_mismatched", 0) >= 1
        ),
        timeout=10,
        what="bad keepalives counted",
    )
    # Still serving, and the unknown host is not listed without a snapshot.
    rows = fleet.ps("--tenant", tenant)
    assert {r["host"] for r in rows} == {"h1"}


def test_a_keepalive_never_supersedes_a_waiting_full_heartbeat() -> None:
    """Parked per host, the newest wins, except that a keepalive does not replace a full
    heartbeat still waiting: it names that very snapshot, which would otherwise be lost."""
    from dataclasses import dataclass

    from controller.fleet.latest import Latest

    @dataclass
    class M:
        subject: str
        data: bytes

    def full(seq: int) -> bytes:
        return encode(
            Heartbeat(
                tenant="t1",
                host="h1",
                boot_id="b1",
                seq=seq,
                sent_at=0.0,
                interval_s=5.0,
                agent_version="t",
                sessions=[snap("s1")],
            )
        )

    ka = encode(
        Keepalive(
            tenant="t1",
            host="h1",
            boot_id="b1",
            seq=2,
            sent_at=0.0,
            interval_s=5.0,
            digest="0123456789abcdef",
        )
    )

    async def main() -> list[bytes]:
        latest = Latest()
        taken: list[bytes] = []
        both = anyio.Event()
        await latest.park(M("s", full(1)))  # type: ignore[arg-type]
        await latest.park(M("s", ka))  # type: ignore[arg-type]
        await latest.park(M("other", ka))  # type: ignore[arg-type]
        await latest.park(M("other", full(3)))  # type: ignore[arg-type]

        async def handle(m: Any) -> None:
            taken.append(m.data)
            if len(taken) == 2:
                both.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(latest.run, handle)
            with anyio.fail_after(5):
                await both.wait()
            tg.cancel_scope.cancel()
        return taken

    assert anyio.run(main) == [full(1), full(3)]
