"""Controller replicas, active-active, on a 3-node NATS cluster (issue 18): kill -9 one while
a host agent streams events and the API keeps answering, nothing is lost or stored twice in
either store, the restarted one catches up; the leader dies or is paused and the work only a
leader does still happens exactly once."""

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
import msgspec
import nats

from common.natsconn import NatsSettings
from controller.cli.client import ControllerClient
from controller.config import ControllerConfig
from controller.events.streams import StreamSettings
from controller.events.system import system_event
from protocol import encode, subjects
from protocol.api import PS, PsRequest
from tests.support.fleet import Fleet, Proc, wait_for
from tests.system.test_cluster import Cluster, _cli_with, cluster  # noqa: F401 (the fixture)
from tests.system.test_events_delivery import EVENTS_PER_RUN, emitted_keys, send_prompts, stub
from tests.system.test_reactions import Receiver, receiver  # noqa: F401 (the fixture)

TTL_S = 3.0


class Replicas:
    """Two controller replicas of one tenant, each its own Fleet dir (config, log, data)."""

    def __init__(self, nodes: Cluster, tmp: Path, tenant: str) -> None:
        self.cluster, self.tenant = nodes, tenant
        self.settings = NatsSettings(servers=nodes.urls)
        self.dirs: dict[str, Fleet] = {}
        self.procs: dict[str, Proc] = {}
        for name in ("r1", "r2"):
            (tmp / name).mkdir(parents=True)
            f = Fleet(nodes.servers[0], tmp / name)
            f.cli = _cli_with(",".join(nodes.urls))  # type: ignore[method-assign]
            self.dirs[name] = f

    @property
    def any(self) -> Fleet:
        return self.dirs["r1"]

    def config(self, name: str) -> ControllerConfig:
        ctl = self.dirs[name].controller_config(
            [self.tenant], streams=StreamSettings(replicas=3), replica=name, leader_ttl_s=TTL_S
        )
        return msgspec.structs.replace(ctl, nats=self.settings)

    def start(self, name: str) -> Proc:
        self.procs[name] = self.dirs[name].start_controller(self.config(name))
        return self.procs[name]

    def status(self) -> dict[str, Any] | None:
        out = self.any.cli("status", "--json", timeout=10)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def status_from(self, name: str) -> dict[str, Any] | None:
        """A status answered by replica ``name`` (the queue group picks one at random)."""
        for _ in range(20):
            got = self.status()
            if got is not None and got["replica"] == name:
                return got
        return None

    def stored(self, name: str) -> list[str]:
        """The idempotency keys in replica ``name``'s own store, in id order."""
        path = self.dirs[name].tmp / "controller" / "events.db"
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            rows = db.execute(
                "SELECT idempotency_key FROM events WHERE tenant=? ORDER BY id", (self.tenant,)
            ).fetchall()
        return [r[0] for r in rows]

    def stop_all(self) -> None:
        for f in self.dirs.values():
            f.stop_all()


def test_kill9_a_replica_midstream(cluster: Cluster, tmp_path: Path, tmux_socket: str) -> None:  # noqa: F811
    tenant = f"t{uuid.uuid4().hex[:8]}"
    reps = Replicas(cluster, tmp_path, tenant)
    try:
        reps.start("r1")
        reps.start("r2")
        agent_fleet = reps.any
        config = msgspec.structs.replace(
            agent_fleet.agent_config(tenant, "h1", tmux_socket, [stub("coder", "0.1")]),
            nats=reps.settings,
        )
        agent_fleet.start_agent(config)
        wait_for(lambda: len(agent_fleet.ps("--tenant", tenant)) == 1, timeout=30, what="host")
        wait_for(lambda: (config.state_path / "logs" / "coder.log").exists(), what="capture")
        runs = 10
        send_prompts(tmux_socket, "coder", [f"task {i}" for i in range(runs)])
        wait_for(lambda: len(reps.stored("r1")) >= 4, what="some events in r1's store")

        async def ps_after_kill() -> float:
            """Kill r1, ask ps at once over a client already connected (what a CLI starting
            on a loaded box adds is its own start, not the failover): seconds to the answer."""
            async with ControllerClient(reps.settings, timeout=10.0) as client:
                reps.procs["r1"].kill()  # mid-stream: the runs are still printing
                killed = time.monotonic()
                reply = await client.call(PS, PsRequest(tenant=tenant))
                assert reply.rows, reply
                return time.monotonic() - killed

        first_ok = anyio.run(ps_after_kill)
        assert first_ok < 2.0, first_ok
        killed = time.monotonic()
        while time.monotonic() - killed < 6.0:
            out = agent_fleet.cli("ps", "--json", "--tenant", tenant, timeout=10)
            assert out.returncode == 0, out.stderr  # every ps answered, none failed
        sent = agent_fleet.cli("send", "coder", "after the kill", "--json")
        assert sent.returncode == 0, sent.stdout + sent.stderr

        reps.start("r1")  # from its own store and its own durable consumer
        total = (runs + 1) * EVENTS_PER_RUN

        def caught_up() -> bool:
            keys = emitted_keys(config, "coder")
            a, b = reps.stored("r1"), reps.stored("r2")
            return len(keys) >= total and set(keys) <= set(b) and sorted(a) == sorted(b)

        wait_for(caught_up, timeout=60, interval=0.5, what="both stores hold every event")
        for name in ("r1", "r2"):
            keys = reps.stored(name)
            assert len(keys) == len(set(keys)), f"{name} stored an event twice"
        assert reps.stored("r1") == reps.stored("r2")  # the same events in the same order
        print(f"\nreplicas: first ps {first_ok:.2f}s after kill -9")
    finally:
        reps.stop_all()


RULES = """
[sinks.recv]
url = "{url}/ok"

[[rules]]
name = "ping"
event_type = ["probe.ping"]
action = "notify"
sink = "recv"
"""


def _publish(url: str, tenant: str, n: int) -> None:
    async def main() -> None:
        nc = await nats.connect(url)
        event = system_event(
            tenant,
            "h1",
            "probe",
            f"probe:{n}",
            ts=time.time(),
            event_type="probe.ping",
            summary=f"probe {n}",
            provenance="test",
            payload={},
            tags=["probe"],
        )
        subject = subjects.event(tenant, "h1", "probe", "probe.ping")
        await nc.jetstream().publish(
            subject, encode(event), headers={"Nats-Msg-Id": event.idempotency_key or ""}
        )
        await nc.close()

    anyio.run(main)


def test_leader_failover_and_fencing(
    cluster: Cluster,  # noqa: F811
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    reps = Replicas(cluster, tmp_path, tenant)
    try:
        for name in ("r1", "r2"):
            (reps.dirs[name].tmp / "controller").mkdir(parents=True)
            (reps.dirs[name].tmp / "controller" / "reactions.toml").write_text(
                RULES.format(url=receiver.url)
            )
            reps.start(name)
        st = wait_for(
            lambda: (s := reps.status()) and s["leader"] and len(s["replicas"]) == 2 and s,
            timeout=20,
            what="a leader among two replicas",
        )
        leader = st["leader"]
        other = "r2" if leader == "r1" else "r1"

        # Kill the leader: the other leads once the key's TTL has run out.
        reps.procs[leader].kill()
        killed = time.monotonic()
        wait_for(
            lambda: (s := reps.status()) and s["leader"] == other,
            timeout=TTL_S * 3,
            interval=0.1,
            what=f"{other} leading",
        )
        failover_s = time.monotonic() - killed
        # Expiry at most a TTL after the last renewal, then one campaign step (a sixth of
        # it); the slack is the CLI's own start per poll.
        assert failover_s < TTL_S + TTL_S / 6 + 2.0, failover_s
        reps.start(leader)  # back, as a follower
        assert reps.status_from(leader)["leader"] == other  # type: ignore[index]

        # Pause the leader past its TTL; the other takes over; a leader-only action (a
        # reaction's webhook) happens while it is paused; it resumes: fenced, it does not act.
        paused, new = other, leader
        reps.procs[paused].signal(signal.SIGSTOP)
        try:
            wait_for(
                lambda: (s := reps.status_from(new)) and s["leader"] == new,
                timeout=TTL_S * 4,
                what=f"{new} leading while {paused} is paused",
            )
            _publish(cluster.urls[0], tenant, 1)
            wait_for(lambda: len(receiver.hits["/ok"]) >= 1, timeout=20, what="one POST")
            # The paused replica still holds its share of the API's queue group: reads are
            # asked again after its silence (hedged), so every one is answered. Unhedged,
            # about half of them timed out.
            for _ in range(8):
                out = reps.any.cli("ps", "--json", "--tenant", tenant, timeout=15)
                assert out.returncode == 0, out.stderr
        finally:
            reps.procs[paused].signal(signal.SIGCONT)
        # The resumed replica stores the event and its reaction decides to act: the fence
        # stops it (counted), so the webhook saw one POST.
        wait_for(
            lambda: (
                (s := reps.status_from(paused))
                and s["counters"].get("reaction_actions_not_leader", 0) >= 1
            ),
            timeout=30,
            what=f"{paused} fenced off the action",
        )
        assert "probe:1" in reps.stored(paused)
        assert len(receiver.hits["/ok"]) == 1, receiver.hits
        assert reps.status_from(paused)["leader"] == new  # type: ignore[index]
        print(f"\nreplicas: leader failover {failover_s:.2f}s (TTL {TTL_S}s)")
    finally:
        reps.stop_all()
