"""`fleet ps` at fleet scale: the API (ControllerClient.call("ps", ...)) and the CLI."""

from __future__ import annotations

import random
import time
from typing import Any

import msgspec

from bench.common import Result, goal, summary_ms
from bench.fake import host_name
from bench.harness import Bench, api, cli
from controller.cli.client import ControllerClient
from protocol.api import PsReply, PsRequest


async def _pages(client: ControllerClient, req: PsRequest) -> tuple[int, float, PsReply]:
    """Every page of one listing: (rows, seconds, first reply)."""
    start = time.perf_counter()
    cursor: int | None = 0
    rows = 0
    first: PsReply | None = None
    for _ in range(1_000_000):  # bounded: every page advances the cursor
        if cursor is None:
            break
        reply = await client.call("ps", msgspec.structs.replace(req, cursor=cursor), PsReply)
        first = first or reply
        rows += len(reply.rows)
        cursor = reply.next_cursor
    assert first is not None
    return rows, time.perf_counter() - start, first


def fresh_hosts(b: Bench, since: float) -> int:
    """Hosts that are ok and were heard from after ``since`` (wall clock), by a full listing."""

    async def count(client: ControllerClient) -> int:
        heard: set[tuple[str, str]] = set()
        cursor: int | None = 0
        for _ in range(1_000_000):
            if cursor is None:
                break
            reply = await client.call("ps", PsRequest(cursor=cursor), PsReply)
            for row in reply.rows:
                last_seen = reply.generated_at - row.heartbeat_age_s
                if row.host_state.value == "ok" and last_seen >= since - 0.01:
                    heard.add((row.tenant, row.host))
            cursor = reply.next_cursor
        return len(heard)

    return api(b.url, count, timeout=60.0)


def measure_ps(b: Bench, hosts: int, repeats: int) -> Result:
    rng = random.Random(3)

    async def run(client: ControllerClient) -> Result:
        problems: list[float] = []
        problem_rows = 0
        first_page: list[float] = []
        for _ in range(repeats):
            problem_rows, took, _ = await _pages(client, PsRequest(problems=True))
            problems.append(took)
        one_host: list[float] = []
        for _ in range(repeats * 5):
            start = time.perf_counter()
            await client.call("ps", PsRequest(host=host_name(rng.randrange(hosts))), PsReply)
            one_host.append(time.perf_counter() - start)
        for _ in range(max(3, repeats // 2)):
            start = time.perf_counter()
            await client.call("ps", PsRequest(limit=1000), PsReply)
            first_page.append(time.perf_counter() - start)
        full_rows, full_s, first = await _pages(client, PsRequest())
        return {
            "api_problems": {**summary_ms(problems), "rows": problem_rows},
            "api_host": summary_ms(one_host),
            "api_first_page": summary_ms(first_page),
            "api_full_listing": {
                "rows": full_rows,
                "total_reported": first.total,
                "seconds": round(full_s, 2),
                "rows_per_s": round(full_rows / full_s),
            },
        }

    out = api(b.url, run, timeout=120.0)
    out["cli"] = _cli(b, hosts)
    return out


def _cli(b: Bench, hosts: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    walls = []
    rc = 0
    for _ in range(3):
        wall, done = cli(b.url, "ps", "--problems")
        walls.append(wall)
        rc = rc or done.returncode
    res["problems"] = {**summary_ms(walls), "rc": rc}
    walls, rc = [], 0
    for i in range(3):
        wall, done = cli(b.url, "ps", "--host", host_name(i * 7 % hosts))
        walls.append(wall)
        rc = rc or done.returncode
    res["host"] = {**summary_ms(walls), "rc": rc}
    wall, done = cli(b.url, "ps", "--json", timeout=600)
    res["json_full"] = {
        "seconds": round(wall, 2),
        "rc": done.returncode,
        "rows": done.stdout.count(b"\n{"),
        "bytes": len(done.stdout),
        "stderr": done.stderr.decode(errors="replace").strip()[-300:],
    }
    return res


def ps(hosts: int, interval: float, procs: int, repeats: int) -> Result:
    from bench.scen_fleet import TENANTS, fleet_up

    out: Result = {"scenario": "ps", "hosts": hosts, "sessions": hosts * 10}
    with Bench(TENANTS, interval) as b:
        b.start_controller()
        pool, _ = fleet_up(b, hosts, interval, procs)
        with pool:
            out.update(measure_ps(b, hosts, repeats))
    goal(out, "api_problems_p95_ms", out["api_problems"]["p95_ms"], 300)
    goal(out, "api_host_p95_ms", out["api_host"]["p95_ms"], 50)
    goal(
        out,
        "full_listing_complete",
        int(out["api_full_listing"]["rows"] == hosts * 10),
        1,
        below=False,
    )
    goal(out, "cli_json_full_ok", int(out["cli"]["json_full"]["rc"] == 0), 1, below=False)
    return out
