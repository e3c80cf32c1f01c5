"""Failover of controller replicas (issue 18): two replicas of one fleet on one nats-server;
kill -9 one, time until the next `ps` answers (a client that stays connected and asks every
few milliseconds, as `fleet top` would); kill -9 the leader, time until another leads. Each
killed replica is started again (a follower) before the next kill.

`python -m bench.scen_replicas [KILLS]`; one JSON object on stdout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import anyio

from bench.common import Result, pct
from bench.harness import BIN, Bench
from common.natsconn import NatsSettings
from controller.cli.client import ClientError, ControllerClient
from controller.config import dump
from protocol import api
from protocol.api import PsRequest, StatusRequest

TTL_S = 3.0


class Pair:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        b = self.bench
        config = b.controller_config(data_dir=b.tmp / name, replica=name, leader_ttl_s=TTL_S)
        path = b.tmp / f"{name}.toml"
        path.write_text(dump(config))
        with (b.tmp / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [str(BIN / "fleet"), "controller", "run", "--config", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
            proc.wait(30)


async def _until(client: ControllerClient, ok: object, limit_s: float = 30.0) -> float:
    """Seconds until ``ok(reply)`` holds for a status, asking every 10 ms."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        try:
            reply = await client.call(api.STATUS, StatusRequest())
            if ok(reply):  # type: ignore[operator]
                return time.monotonic() - start
        except (ClientError, TimeoutError, OSError):
            pass
        await anyio.sleep(0.01)
    raise TimeoutError("no answer")


async def _next_ps(client: ControllerClient) -> float:
    start = time.monotonic()
    while True:
        try:
            await client.call(api.PS, PsRequest())
            return time.monotonic() - start
        except (ClientError, TimeoutError, OSError):
            await anyio.sleep(0.005)


async def _run(pair: Pair, url: str, kills: int) -> Result:
    ps_s: list[float] = []
    lead_s: list[float] = []
    async with ControllerClient(NatsSettings(servers=[url]), timeout=0.5) as client:
        await _until(client, lambda r: r.leader and len(r.replicas) == 2)
        for i in range(kills):
            status = await client.call(api.STATUS, StatusRequest())
            leader = status.leader
            assert leader is not None, "no leader"
            victim = leader if i % 2 else ("r2" if leader == "r1" else "r1")
            pair.kill(victim)
            ps_s.append(await _next_ps(client))
            if victim == leader:
                lead_s.append(await _until(client, lambda r, v=victim: r.leader not in (None, v)))
            pair.start(victim)
            # Its replica card outlives a kill by up to a TTL: wait until it answers itself.
            await _until(client, lambda r, v=victim: r.replica == v)
    return {
        "scenario": "replicas",
        "kills": kills,
        "leader_ttl_s": TTL_S,
        "ps_after_kill_p50_s": round(pct(ps_s, 50), 3),
        "ps_after_kill_p99_s": round(pct(ps_s, 99), 3),
        "leader_failover_p50_s": round(pct(lead_s, 50), 2),
        "leader_failover_p99_s": round(pct(lead_s, 99), 2),
    }


def replicas(kills: int = 20) -> Result:
    with Bench(["acme"], 5.0) as b:
        pair = Pair(b)
        try:
            pair.start("r1")
            pair.start("r2")
            return anyio.run(_run, pair, b.url, kills)
        finally:
            pair.stop()


if __name__ == "__main__":
    import json

    print(json.dumps(replicas(int(sys.argv[1]) if len(sys.argv) > 1 else 20), indent=2))
