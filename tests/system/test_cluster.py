"""A 3-node NATS cluster with the event stream on 3 replicas: kill the server the host agent
is connected to, and the agent moves to another, the controller keeps its view, and no event
is lost or stored twice."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.natsconn import NatsSettings
from controller.events.streams import StreamSettings
from controller.natsserver.embedded import EmbeddedNats, free_port
from protocol import subjects
from tests.support.fleet import BIN, Fleet, wait_for
from tests.system.test_events_delivery import (
    EVENTS_PER_RUN,
    all_stored,
    assert_exactly_once_in_order,
    emitted_keys,
    send_prompts,
    stub,
)
from tests.system.test_liveness import transitions

NODES = 3


def monitor(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=2) as resp:
        return json.loads(resp.read())


class Cluster:
    def __init__(self, tmp: Path) -> None:
        routes = [free_port() for _ in range(NODES)]
        self.http = [free_port() for _ in range(NODES)]
        self.servers: list[EmbeddedNats] = []
        for i in range(NODES):
            others = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes if p != routes[i])
            self.servers.append(
                EmbeddedNats(
                    tmp / f"n{i}",
                    server_name=f"n{i}",
                    extra_config=(
                        f'http: "127.0.0.1:{self.http[i]}"\n'
                        f'cluster {{ name: "fleet-test", listen: "127.0.0.1:{routes[i]}", '
                        f"routes: [{others}] }}"
                    ),
                )
            )

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def ready(self) -> bool:
        """Every node sees the same JetStream meta leader in a cluster of three."""
        try:
            metas = [monitor(port, "jsz")["meta_cluster"] for port in self.http]
        except (OSError, KeyError, ValueError):
            return False
        leaders = {m.get("leader") for m in metas}
        return len(leaders) == 1 and None not in leaders and metas[0].get("cluster_size") == 3

    def serving(self, client_name: str) -> list[int]:
        """Indexes of the live nodes that have a client connection named ``client_name``."""
        found = []
        for i, server in enumerate(self.servers):
            if server.process is None:
                continue
            conns = monitor(self.http[i], "connz").get("connections") or []
            if any(c.get("name") == client_name for c in conns):
                found.append(i)
        return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path / "cluster")
    try:
        for server in nodes.servers:
            server.start()
        wait_for(nodes.ready, timeout=30, interval=0.2, what="JetStream cluster formed")
        yield nodes
    finally:
        for server in nodes.servers:
            server.stop()


def test_kill_the_agents_server_moves_it_and_loses_nothing(
    cluster: Cluster, tmp_path: Path, tmux_socket: str
) -> None:
    # The CLI and both daemons get all three URLs: nothing here assumes one server.
    fleet = Fleet(cluster.servers[0], tmp_path)
    settings = NatsSettings(servers=cluster.urls)
    fleet.cli = _cli_with(",".join(cluster.urls))  # type: ignore[method-assign]
    tenant = f"t{uuid.uuid4().hex[:8]}"
    try:
        ctl = fleet.controller_config([tenant], streams=StreamSettings(replicas=3))
        fleet.start_controller(msgspec.structs.replace(ctl, nats=settings))
        config = msgspec.structs.replace(
            fleet.agent_config(tenant, "h1", tmux_socket, [stub("coder", "0.1")]), nats=settings
        )
        fleet.start_agent(config)

        def host_state() -> str | None:
            rows = fleet.ps("--tenant", tenant, "--host", "h1")
            return rows[0]["host_state"] if rows else None

        wait_for(lambda: host_state() == "ok", timeout=20, what="host ok")
        stream = monitor(cluster.http[0], "jsz?streams=true&config=true")
        replicas = [
            s["config"]["num_replicas"]
            for a in stream.get("account_details", [])
            for s in a.get("stream_detail", [])
            if s["name"] == subjects.event_stream_name(tenant)
        ]
        assert replicas == [3], stream

        agent_name = f"fleet-agent {tenant}/h1"
        wait_for(lambda: cluster.serving(agent_name), what="the agent's server")
        wait_for(lambda: (config.state_path / "logs" / "coder.log").exists(), what="capture")
        send_prompts(tmux_socket, "coder", [f"before {i}" for i in range(3)])
        all_stored(fleet, tenant, config, "coder", runs=1)

        # Mid-stream: runs are still printing events when the agent's server dies.
        (victim,) = cluster.serving(agent_name)
        cluster.servers[victim].kill()
        killed = time.monotonic()
        moved = wait_for(
            lambda: [i for i in cluster.serving(agent_name) if i != victim],
            timeout=15,
            interval=0.05,
            what="the agent on another server",
        )
        reconnect_s = time.monotonic() - killed
        send_prompts(tmux_socket, "coder", [f"after {i}" for i in range(3)])

        views = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            views.append(host_state())
        assert set(views) == {"ok"}, views  # the controller's view never wavered

        rows = all_stored(fleet, tenant, config, "coder", runs=6)
        keys = emitted_keys(config, "coder")
        assert len(keys) == 6 * EVENTS_PER_RUN
        assert_exactly_once_in_order(rows, keys)
        states = [new for _, new, _ in transitions(fleet.tmp / "controller", tenant)]
        assert states == ["ok"], states
        print(f"\ncluster: agent moved from n{victim} to n{moved[0]} in {reconnect_s:.2f}s")
    finally:
        fleet.stop_all()


def _cli_with(url: str) -> Any:
    def cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "fleet"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "FLEET_NATS_URL": url, "COLUMNS": "200"},
            stdin=subprocess.DEVNULL,
            check=False,
        )

    return cli
