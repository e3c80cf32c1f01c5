"""Notification end to end (issue 17): an event an agent publishes → a reaction rule matches
→ the notify sink's HTTP POST arrives at a receiver.

A real nats-server and controller subprocess; its reactions file has one webhook sink
pointing at an HTTP receiver in this process and one `notify` rule on `run.completed` from
the probe host. The probe publishes ``count`` such events into the tenant's stream as the
host agent does (`js.publish`, `Nats-Msg-Id` = host:boot:seq, waiting for each ack), one
every ``gap_s``, each with a dedupe key of its own so the rule's cooldown drops none. A
sample is the time from just before the publish to the receiver's first byte of handling
the POST that names the event's seq (same process, same monotonic clock). One warm-up event,
not counted, first: it is the first POST the controller makes, so it proves the path is up.

`python -m bench notify [--events N] [--gap-ms MS]`, or `python -m bench.scen_notify [N]`
(one JSON object on stdout).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import nats

from bench.common import Result, goal, loadavg, summary_ms, wait_until
from bench.harness import Bench
from protocol import encode, subjects
from protocol.events import Event, SourceKind

TENANT = "acme"
HOST = "probe"
SESSION = "s0"
EVENT_TYPE = "run.completed"
GOAL_P99_MS = 1000.0


class Receiver:
    """A local HTTP server that notes when each POST for an event seq arrived."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[int, float]] = []  # (event seq, monotonic at arrival)
        self.lock = threading.Lock()
        self.warm = threading.Event()  # the warm-up's POST came
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    seq = int(json.loads(body)["event"]["seq"])
                except (ValueError, KeyError, TypeError):
                    seq = -1
                with receiver.lock:
                    receiver.arrivals.append((seq, at))
                if seq == 1:
                    receiver.warm.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def seen(self) -> set[int]:
        with self.lock:
            return {seq for seq, _ in self.arrivals}

    def first_arrivals(self) -> tuple[dict[int, float], Counter[int]]:
        """The first arrival of each seq, and how many POSTs each seq got."""
        first: dict[int, float] = {}
        with self.lock:
            arrivals = list(self.arrivals)
        for seq, at in arrivals:
            first.setdefault(seq, at)
        return first, Counter(seq for seq, _ in arrivals)


def rules(url: str) -> str:
    return f"""
[sinks.recv]
url = "{url}"
retries = 0

[[rules]]
name = "bench-notify"
event_type = ["{EVENT_TYPE}"]
host = "{HOST}"
action = "notify"
sink = "recv"
cooldown_s = 600
"""


def _event(boot: str, seq: int) -> Event:
    return Event(
        tenant=TENANT,
        host=HOST,
        session=SESSION,
        boot_id=boot,
        seq=seq,
        ts=time.time(),
        event_type=EVENT_TYPE,
        summary=f"bench run {seq} completed",
        source_kind=SourceKind.AGENT,
        dedupe_key=f"bench-notify:{boot}:{seq}",  # a key each: the cooldown drops none
        run_id=f"r{seq}",
    )


async def _publish(
    url: str, count: int, gap_s: float, warm: threading.Event, within_s: float
) -> dict[int, float]:
    """Publish the warm-up (seq 1) and wait for its POST, then ``count`` more; returns the
    monotonic time just before each counted publish, by seq."""
    sent: dict[int, float] = {}
    boot = uuid.uuid4().hex[:12]
    subject = subjects.event(TENANT, HOST, SESSION, EVENT_TYPE)
    async with await nats.connect(url) as nc:
        js = nc.jetstream()

        async def publish(seq: int) -> None:
            headers = {"Nats-Msg-Id": subjects.msg_id(HOST, boot, seq)}
            await js.publish(subject, encode(_event(boot, seq)), headers=headers)

        await publish(1)
        if not await anyio.to_thread.run_sync(warm.wait, within_s):
            raise TimeoutError(f"no POST for the warm-up event within {within_s:g} s")
        for seq in range(2, count + 2):
            sent[seq] = time.monotonic()
            await publish(seq)
            await anyio.sleep(gap_s)
    return sent


def notify(count: int = 200, gap_s: float = 0.05, settle_s: float = 30.0) -> Result:
    out: Result = {"scenario": "notify", "events": count, "gap_ms": round(gap_s * 1000, 1)}
    out["loadavg_start"] = loadavg()
    with Receiver() as recv, Bench([TENANT], 5.0) as b:
        path = b.tmp / "reactions.toml"
        path.write_text(rules(recv.url))
        b.start_controller(reactions_file=str(path))
        t0 = time.monotonic()
        sent = anyio.run(_publish, b.url, count, gap_s, recv.warm, settle_s)
        publish_s = time.monotonic() - t0
        try:
            wait_until(lambda: set(sent) <= recv.seen(), settle_s, 0.05, "every notification")
        except TimeoutError:
            pass  # counted as lost below
        time.sleep(1.0)  # a second POST of any event would come within this
        status = b.status()
        cpu = b.cpu_seconds()
    out["loadavg_end"] = loadavg()
    first, posts = recv.first_arrivals()
    latencies = [first[seq] - at for seq, at in sent.items() if seq in first]
    delivered = sum(1 for seq in sent if seq in first)
    out.update(
        {
            "published": len(sent),
            "delivered": delivered,
            "lost": len(sent) - delivered,
            "duplicates": sum(n - 1 for seq, n in posts.items() if seq in sent),
            "unexpected_posts": sum(n for seq, n in posts.items() if seq not in sent and seq != 1),
            "latency": summary_ms(latencies),
            "publish_seconds": round(publish_s, 2),
            "controller_cpu_s": round(cpu["controller"], 2),
            "counters": {
                k: status.counters.get(k, 0)
                for k in ("reaction_match", "reaction_delivered", "reaction_failed")
            },
        }
    )
    goal(out, "lost", out["lost"], 1)
    goal(out, "duplicates", out["duplicates"], 1)
    goal(out, "p99_ms", out["latency"]["p99_ms"], GOAL_P99_MS, upto=True)
    return out


if __name__ == "__main__":
    import sys

    print(json.dumps(notify(int(sys.argv[1]) if len(sys.argv) > 1 else 200), indent=2))
