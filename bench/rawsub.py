"""The raw limit: a bare nats-py subscriber that decodes every heartbeat with msgspec and
does nothing else. The controller's ingest is reported as a ratio of what this manages on
the same messages, in the same run."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

import msgspec
import nats

from protocol.heartbeat import HostBeat


async def _serve(url: str, subject: str, conn: Connection) -> None:
    nc = await nats.connect(url, name="bench-raw")
    decoder = msgspec.json.Decoder(HostBeat)  # full heartbeats and keepalives
    stats = {"count": 0, "last": 0.0}
    timeline: list[tuple[int, float]] = []  # (count, when) every 100 messages

    async def on_msg(msg: Any) -> None:
        decoder.decode(msg.data)
        stats["count"] += 1
        stats["last"] = time.monotonic()
        if stats["count"] % 100 == 0:
            timeline.append((stats["count"], stats["last"]))

    def reached(target: int) -> float | None:
        """When the count first reached ``target`` (to 100 messages), or None."""
        for count, when in timeline:
            if count >= target:
                return when
        return None

    await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=1_000_000, pending_bytes_limit=2**31)
    await nc.flush()
    conn.send(("ready", 0))
    for _ in range(10_000_000):  # bounded; ends on "stop"
        if conn.poll():
            verb = conn.recv()
            reply: dict[str, Any] = dict(stats)
            if isinstance(verb, tuple):  # ("reached", target)
                reply["reached"] = reached(verb[1])
            conn.send(("stats", reply))
            if verb == "stop":
                break
        await asyncio.sleep(0.02)
    await nc.close()


def _main(url: str, subject: str, conn: Connection) -> None:
    asyncio.run(_serve(url, subject, conn))


class RawSubscriber:
    def __init__(self, url: str, subject: str = "fleet.*.hb.*") -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_main, args=(url, subject, child), daemon=True)
        self.proc.start()
        if not self.conn.poll(30):
            raise TimeoutError("raw subscriber did not start")
        self.conn.recv()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def stats(self, verb: str | tuple[str, int] = "stats") -> dict[str, Any]:
        self.conn.send(verb)
        if not self.conn.poll(30):
            raise TimeoutError("raw subscriber did not answer")
        value: dict[str, Any] = self.conn.recv()[1]
        return value

    def stop(self) -> None:
        if self.proc.is_alive():
            try:
                self.stats("stop")
            except (TimeoutError, OSError):
                pass
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.terminate()  # the process we started, by its handle
                self.proc.join(5)
