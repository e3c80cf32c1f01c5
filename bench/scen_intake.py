"""The heartbeat intake alone (`controller/latest.py`), in this process, with no controller:
the generators send to nats-server, a subscription parks every heartbeat in `Latest`, and a
handler decodes each one and then spends ``cost_us`` of CPU, standing in for the rest of the
controller's processing. Every few seconds: what waits in nats-py's subscription queue and
in `Latest`, how many were superseded and processed, and the processed ones' lag.

It shows where heartbeats queue when processing cannot keep up: parked (where a newer one
supersedes them, so the lag stays within an interval) or in the socket, oldest first (where
the lag grows until nats-server cuts the connection)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats

from bench.common import Result, goal, pct
from bench.harness import Bench
from bench.loadgen import Pool
from controller.fleet.latest import Latest
from protocol import decode, subjects
from protocol.heartbeat import Heartbeat

SAMPLE_S = 3.0


async def _observe(
    url: str, tenants: list[str], duration: float, cost_s: float
) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    lags: list[float] = []
    latest = Latest()
    cuts = 0

    async def handle(msg: Any) -> None:
        lags.append(time.time() - decode(msg.data, Heartbeat).sent_at)
        end = time.perf_counter() + cost_s
        while time.perf_counter() < end:
            pass

    async def on_error(_exc: Exception) -> None:
        nonlocal cuts
        cuts += 1  # e.g. nats: unexpected EOF, when nats-server cuts a slow consumer

    nc = await nats.connect(url, error_cb=on_error, max_reconnect_attempts=-1)
    subs = [await nc.subscribe(subjects.all_heartbeats(t), cb=latest.park) for t in tenants]
    runner = asyncio.get_running_loop().create_task(latest.run(handle))
    try:
        for _ in range(max(1, round(duration / SAMPLE_S))):
            superseded = latest.superseded
            await asyncio.sleep(SAMPLE_S)
            taken, lags[:] = sorted(lags), []
            samples.append(
                {
                    "nats_py_queue": sum(s._pending_queue.qsize() for s in subs),
                    "parked": len(latest),
                    "processed_per_s": round(len(taken) / SAMPLE_S),
                    "superseded_per_s": round((latest.superseded - superseded) / SAMPLE_S),
                    "lag_p50_s": round(pct(taken, 50), 2) if taken else float("nan"),
                    "connection_errors": cuts,
                }
            )
    finally:
        runner.cancel()
        await nc.close()
    return samples


def intake(hosts: int, duration: float, interval: float, procs: int, cost_us: float) -> Result:
    tenants = ["acme", "globex"]
    out: Result = {"scenario": "intake", "hosts": hosts, "cost_us": cost_us}
    with Bench(tenants, interval) as b, Pool(b.url, tenants, hosts, interval, procs) as pool:
        pool.wait_ready()
        samples = asyncio.run(_observe(b.url, tenants, duration, cost_us / 1e6))
    out["samples"] = {str(i): s for i, s in enumerate(samples)}
    last = samples[len(samples) // 2 :]  # the second half: past the start-up storm
    worst = max((s["lag_p50_s"] for s in last), default=float("nan"))
    out["lag_p50_s_worst_second_half"] = worst
    out["connection_errors"] = samples[-1]["connection_errors"]
    # Parked heartbeats are superseded by newer ones, so what is processed is at most about
    # an interval (+20 % jitter) old; queued in the socket, it ages without bound.
    goal(out, "lag_p50_within_an_interval", worst, 1.2 * interval)
    goal(out, "connection_errors", out["connection_errors"], 1)
    return out
