"""The attention queue across controller replicas (issue 18): two replicas on one real
nats-server, two stub sessions blocked on a dialog; `fleet attention ack` and `snooze` answered
by either replica are seen by both (asked many times, so the queue group routes the requests to
both), and still after one replica restarts (from its own store). Real NATS, tmux, stubs."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio

from common.natsconn import NatsSettings
from controller.cli.client import ControllerClient
from controller.natsserver.embedded import EmbeddedNats
from protocol import api
from protocol.api import StatusRequest
from protocol.attention import AttentionItem, AttentionListRequest
from tests.support.fleet import Fleet, Proc, rows_by_session, wait_for
from tests.system.test_attention import block, items
from tests.system.test_steering import cli_json, stub

SESSIONS = ("coder", "other")
ASKS = 30  # requests per look: each replica answers some (both: all but 2 in 2**30 times)


class Pair:
    """Two replicas of one tenant, each its own Fleet dir (config, log, data dir)."""

    def __init__(self, nats: EmbeddedNats, tmp: Path, tenant: str) -> None:
        self.tenant = tenant
        self.settings = NatsSettings(servers=[nats.url])
        self.dirs = {name: Fleet(nats, tmp / name) for name in ("r1", "r2")}
        for f in self.dirs.values():
            f.tmp.mkdir(parents=True)
        self.procs: dict[str, Proc] = {}

    def start(self, name: str) -> None:
        config = self.dirs[name].controller_config([self.tenant], replica=name, leader_ttl_s=3.0)
        self.procs[name] = self.dirs[name].start_controller(config)
        # Up: the API answers as this replica (the start above is satisfied by either).
        wait_for(lambda: name in self.answering(), timeout=20, what=f"{name} answering")

    def answering(self) -> set[str]:
        async def main() -> set[str]:
            async with ControllerClient(self.settings) as client:
                replies = [await client.call(api.STATUS, StatusRequest()) for _ in range(ASKS)]
            return {r.replica for r in replies}

        return anyio.run(main)

    def listings(self, include_all: bool = False) -> list[list[AttentionItem]]:
        """``ASKS`` answers to `fleet attention`, from whichever replica the group picks."""
        request = AttentionListRequest(tenant=self.tenant, include_all=include_all)

        async def main() -> list[list[AttentionItem]]:
            async with ControllerClient(self.settings) as client:
                return [(await client.call(api.ATTENTION_LIST, request)).items for _ in range(ASKS)]

        return anyio.run(main)

    def stop_all(self) -> None:
        for f in self.dirs.values():
            f.stop_all()


def states(listing: list[AttentionItem]) -> dict[str, str]:
    return {i.id: i.state.value for i in listing}


def test_ack_and_snooze_are_seen_by_every_replica(
    nats_server: EmbeddedNats, tmp_path: Path, tmux_socket: str
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    pair = Pair(nats_server, tmp_path, tenant)
    try:
        pair.start("r1")
        pair.start("r2")
        assert pair.answering() == {"r1", "r2"}  # the queue group gives each some requests
        fleet = pair.dirs["r1"]
        sessions = [stub(name, "0.2") for name in SESSIONS]
        config = fleet.agent_config(tenant, "h1", tmux_socket, sessions)
        fleet.start_agent(config)

        def idle() -> bool:
            rows = rows_by_session(fleet.ps("--tenant", tenant))
            return all(n in rows and rows[n]["session"]["state"] == "idle" for n in SESSIONS)

        wait_for(idle, timeout=30, what="sessions idle")
        block(fleet, "coder")
        block(fleet, "other")

        def both_open_everywhere() -> dict[str, str] | None:
            seen = [states(x) for x in pair.listings()]
            ok = all(len(s) == 2 and set(s.values()) == {"open"} for s in seen)
            return seen[0] if ok and all(s == seen[0] for s in seen) else None

        ids = wait_for(both_open_everywhere, timeout=30, what="two open items on both replicas")
        by_session = {i.session: i.id for i in pair.listings()[0]}
        acked, snoozed = by_session["coder"], by_session["other"]
        assert set(ids) == {acked, snoozed}

        code, reply = cli_json(fleet, "attention", "ack", acked)
        assert code == 0 and reply["item"]["state"] == "acked", reply
        code, reply = cli_json(fleet, "attention", "snooze", snoozed, "30m")
        assert code == 0 and reply["item"]["state"] == "snoozed", reply
        want = {acked: "acked", snoozed: "snoozed"}

        # Both replicas apply them as they store the events: wait for that, then every answer
        # from either replica agrees, and lists neither item as open.
        wait_for(
            lambda: all(states(x) == want for x in pair.listings(include_all=True)),
            timeout=15,
            what="acked and snoozed on both replicas",
        )
        for listing in pair.listings():
            assert listing == [], listing
        for listing in pair.listings(include_all=True):
            assert states(listing) == want
        for _ in range(4):  # and through the CLI itself, `fleet attention --json`
            assert items(fleet, tenant) == []

        # A replica restarted rebuilds them from its own store: while its first scan opens the
        # blocked items again, no answer ever lists them open.
        pair.procs["r1"].stop()
        pair.start("r1")

        def settled() -> bool:
            for listing in pair.listings(include_all=True):
                assert not {i.id for i in listing if i.state.value == "open"}, listing
                if states(listing) != want:
                    return False
            return True

        wait_for(settled, timeout=30, what="the restarted replica holding both items")
        assert pair.answering() == {"r1", "r2"}
        for listing in pair.listings(include_all=True):
            assert states(listing) == want
            assert next(i for i in listing if i.id == acked).acked_by
    finally:
        pair.stop_all()
