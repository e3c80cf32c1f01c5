"""Event scenarios: ingest end to end (JetStream → controller → SQLite) against a raw
`EventStore.insert_many` baseline, and search over a large store."""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import anyio
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bench.common import Result, goal, summary_ms, wait_until
from bench.fake import Words, event, host_name
from bench.harness import Bench, api, cli
from bench.loadgen import Pool
from controller.cli.client import ControllerClient
from controller.events.ingest import decode_message
from controller.events.pull import BatchPull
from controller.events.store.core import EventStore
from controller.events.streams import FETCH_BATCH
from protocol import subjects
from protocol.events import Event
from protocol.events_api import EventsReply, EventsSearchRequest

BATCH = FETCH_BATCH  # the raw insert stores batches the size ingest pulls


def _agent_events(b: Bench) -> int:
    path = b.data_dir / "events.db"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(
            db.execute("SELECT count(*) FROM events WHERE source_kind = 'agent'").fetchone()[0]
        )
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def _raw_insert(events: list[Event]) -> tuple[float, float]:
    """(events/s, CPU µs per event) of EventStore.insert_many on a fresh temp file, batches
    of BATCH, in this process (which does nothing else meanwhile)."""
    with tempfile.TemporaryDirectory(prefix="fleet-bench-raw-") as tmp:
        store = EventStore(Path(tmp) / "events.db")
        store.open()
        try:
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(events), BATCH):
                store.insert_many(events[i : i + BATCH], time.time())
            took, cpu = time.perf_counter() - start, time.process_time() - cpu
        finally:
            store.close()
    return len(events) / took, cpu / len(events) * 1e6


async def _receive(url: str, tenants: list[str], mode: str) -> float:
    """CPU µs per event of pulling every stored event with BatchPull (as ingest does) on a
    consumer of its own, acking each batch; with mode "decode" also decoding and checking
    each one as ingest does (``decode_message``)."""
    got = 0
    cpu = 0.0
    async with await nats.connect(url) as nc:
        js = nc.jetstream()
        for tenant in tenants:
            stream = subjects.event_stream_name(tenant)
            durable = f"bench-floor-{mode}"
            await js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=durable,
                    filter_subject=subjects.all_events(tenant),
                    ack_policy=AckPolicy.ALL,
                    deliver_policy=DeliverPolicy.ALL,
                    max_ack_pending=5000,
                ),
            )
            pull = BatchPull(nc, stream, durable)
            await pull.start()
            try:
                start = time.process_time()
                while msgs := await pull.fetch(BATCH, 1.0):
                    if mode == "decode":
                        for m in msgs:
                            decode_message(m, stream)
                    got += len(msgs)
                    await msgs[-1].ack()
                cpu += time.process_time() - start
            finally:
                await pull.stop()
    return cpu / max(1, got) * 1e6


def _cpu(b: Bench, pool: Pool) -> dict[str, float]:
    """CPU seconds so far of each part of the run."""
    return {**b.cpu_seconds(), "generators": pool.cpu_seconds()}


def _same_events(total: int, hosts: int, procs: int, tenants: list[str]) -> list[Event]:
    """Events shaped like the generators' (same sizes and vocabulary), for the raw baseline."""
    words = Words(1)
    out = []
    for k in range(total):
        i = k % hosts
        out.append(
            event(
                words,
                tenants[i % len(tenants)],
                host_name(i),
                "rawboot",
                k + 1,
                f"s{k % 10:02d}",
                time.time(),
            )
        )
    return out


def ingest(total: int, hosts: int, procs: int, interval: float) -> Result:
    tenants = ["acme", "globex"]
    out: Result = {"scenario": "ingest", "events": total, "hosts": hosts, "procs": procs}
    with Bench(tenants, interval) as b:
        b.start_controller()
        with Pool(b.url, tenants, hosts, interval, procs) as pool:
            pool.wait_ready()
            per = -(-total // len(pool.procs))
            pool.ask("prepare", per, 10, timeout=600)  # built before the clock starts
            cpu0 = _cpu(b, pool)
            t0 = time.monotonic()
            pool.send("events")
            replies = pool.collect("events", timeout=1800)
            t_pub = time.monotonic() - t0
            stored_at_pub = _agent_events(b)
            acked = sum(r["acked"] for r in replies)
            stored = wait_until(
                lambda: (n := _agent_events(b)) >= acked and n, 600, 0.25, "every event stored"
            )
            t_stored = time.monotonic() - t0
            cpu1 = _cpu(b, pool)
            time.sleep(1.0)
            status = b.status()
            stored = _agent_events(b)
        floor = {mode: anyio.run(_receive, b.url, tenants, mode) for mode in ("receive", "decode")}
    out.update(
        {
            "published_acked": acked,
            "publish_retries": sum(r["retried"] for r in replies),
            "stored_agent_events": stored,
            "lost": acked - stored,
            "sequence_gaps": status.counters.get("sequence_gaps", -1),
            "events_duplicate": status.counters.get("events_duplicate", 0),
            "publish_rate_per_s": round(acked / t_pub),
            "e2e_rate_per_s": round(acked / t_stored),
            "e2e_seconds": round(t_stored, 2),
            # After the publishers finished: the controller alone draining the stream.
            "drain_rate_per_s": round((acked - stored_at_pub) / max(1e-6, t_stored - t_pub)),
        }
    )
    # Where the CPU of the end-to-end window went, per event: with everything on one box,
    # the sum over the cores there are bounds the end-to-end rate.
    per_event = {k: (cpu1[k] - cpu0[k]) / max(1, acked) * 1e6 for k in cpu0}
    total_us = sum(per_event.values())
    out["cpu_us_per_event"] = {k: round(v, 1) for k, v in per_event.items()}
    out["cpu_us_per_event_total"] = round(total_us, 1)
    cores = len(os.sched_getaffinity(0))
    out["cpu_bound_rate_per_s"] = round(cores * 1e6 / max(1e-9, total_us))
    # The floor under the controller's own cost: what reading the same messages off the
    # same pull consumer costs with nats-py, alone and with ingest's decode and checks.
    out["floor_cpu_us_per_event"] = {k: round(v, 1) for k, v in floor.items()}
    raw_rate, raw_us = _raw_insert(_same_events(min(total, 200_000), hosts, procs, tenants))
    out["raw_insert_rate_per_s"] = round(raw_rate)
    out["raw_cpu_us_per_event"] = round(raw_us, 1)
    # As the fan-in's capacity ratio: what the raw insert needs per event over what the
    # controller needs, as if each had the same CPU.
    out["capacity_ratio"] = round(raw_us / max(1e-9, per_event["controller"]), 3)
    out["ratio"] = round(out["e2e_rate_per_s"] / raw_rate, 3)
    out["drain_ratio"] = round(out["drain_rate_per_s"] / raw_rate, 3)
    out["events"] = acked
    goal(out, "lost", out["lost"], 1)
    goal(out, "sequence_gaps", out["sequence_gaps"], 1)
    goal(out, "e2e_ratio_vs_raw_insert", out["ratio"], 0.7, below=False)
    return out


SEARCH_TENANTS = [f"t{i:02d}" for i in range(20)]


def build_store(path: Path, total: int) -> float:
    """``total`` events over 20 tenants (t00 holds half, the rest share the other half);
    returns the insert rate (events/s)."""
    words = Words(11)
    rng = random.Random(5)
    weights = [10.0] + [10.0 / 19] * 19
    store = EventStore(path)
    store.open()
    insert_s = 0.0
    try:
        now = time.time()
        for base in range(0, total, BATCH):
            batch = []
            for k in range(base, min(total, base + BATCH)):
                tenant = rng.choices(SEARCH_TENANTS, weights)[0]
                host = host_name(k % 2000)
                batch.append(
                    event(words, tenant, host, "b0", k + 1, f"s{k % 10:02d}", now - (total - k))
                )
            start = time.perf_counter()
            store.insert_many(batch, now)
            insert_s += time.perf_counter() - start
    finally:
        store.close()
    return total / insert_s if insert_s else 0.0


def _queries(n: int) -> list[tuple[str, str]]:
    """Word queries with a tenant filter: common to rare words, big and small tenants."""
    vocab = Words(0).vocab
    ranks = [0, 3, 30, 300, 3000]
    rng = random.Random(9)
    return [
        (vocab[ranks[i % len(ranks)]], SEARCH_TENANTS[0] if i % 2 else rng.choice(SEARCH_TENANTS))
        for i in range(n)
    ]


def search(total: int, queries: int) -> Result:
    out: Result = {"scenario": "search", "events": total}
    with Bench(SEARCH_TENANTS, 5.0) as b:
        path = b.data_dir / "events.db"
        out["build_insert_rate_per_s"] = round(build_store(path, total))
        qs = _queries(queries)
        store = EventStore(path)
        store.open()
        direct: list[float] = []
        hits = 0
        try:
            for word, tenant in qs:
                start = time.perf_counter()
                hits += len(store.search(word, tenant=tenant, limit=50))
                direct.append(time.perf_counter() - start)
        finally:
            store.close()
        out["direct"] = {**summary_ms(direct), "hits": hits}
        b.start_controller()

        async def via_api(client: ControllerClient) -> list[float]:
            took = []
            for word, tenant in qs:
                start = time.perf_counter()
                await client.call(
                    "events.search", EventsSearchRequest(query=word, tenant=tenant), EventsReply
                )
                took.append(time.perf_counter() - start)
            return took

        out["api"] = summary_ms(api(b.url, via_api, timeout=60.0))
        walls = []
        rc = 0
        for word, tenant in qs[:3]:
            wall, done = cli(b.url, "events", "search", word, "--tenant", tenant, "--json")
            walls.append(wall)
            rc = rc or done.returncode
        out["cli"] = {**summary_ms(walls), "rc": rc}
    goal(out, "direct_p95_ms", out["direct"]["p95_ms"], 50)
    goal(out, "api_p95_ms", out["api"]["p95_ms"], 50)
    return out
