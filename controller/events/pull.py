"""Batches from a durable JetStream pull consumer, collected in a subscription callback.

nats-py's `PullSubscription.fetch(500)` awaits every message with its own timeout (a task and a
timer per message): a 500-message fetch took 112 ms on the 2-core box (227 µs per event, four
times the decode), and that per-message work runs on the event loop, which holds the GIL the
store's writer thread needs (docs/benchmarks.md). This sends the same pull requests and gathers
the answer in one callback. A `no_wait` request takes what is there at once; only when that is
nothing does a request wait, up to ``wait_s``, and it is a *one-shot* (`no_wait` with
`expires`, nats-server 2.7.1 on): the server ends it as soon as it has delivered something and
the consumer has nothing more pending. So an event on a quiet stream is handed over at once,
not when the batch is full or ``wait_s`` runs out (as nats-py's fetch does; in ingest that
was up to 1 s between an event and its notification, issue 17). Under load nothing changes:
what is pending, up to ``batch``, still comes in one answer.

Every message the server delivers joins a batch, whenever it arrives (say, late, for an
earlier request): with ack policy *all*, acking a later message would also ack a dropped one.
"""

from __future__ import annotations

import json

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from protocol import subjects

# Statuses that end a pull request's answer: no messages (no_wait), request expired, conflict
# (e.g. max ack pending reached, leadership moved). 100 is an idle heartbeat.
END_OF_BATCH = frozenset({"404", "408", "409"})
HEARTBEAT = "100"


def stream_position(msg: Msg) -> tuple[int, int, float]:
    """(stream seq, consumer delivery seq, stored-at unix time) of a JetStream message, read
    from its ack subject: nats-py's ``msg.metadata`` builds a dataclass and a datetime per
    message (4 % of the event loop at full ingest). Times are rounded to the microsecond in
    integers (that datetime rounds ns / 1e9 as a float, so it may differ by 1 µs); live
    ingest and rebuild both read positions here, so they store the same rows."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>
        return int(tokens[5]), int(tokens[6]), (int(tokens[7]) + 500) // 1000 / 1_000_000
    meta = msg.metadata  # the longer form with domain and account hash
    stamp = meta.timestamp.timestamp() if meta.timestamp else 0.0
    return meta.sequence.stream, meta.sequence.consumer, stamp


class PullError(RuntimeError):
    """The server answered a pull request with an error (e.g. the consumer is gone)."""


class BatchPull:
    def __init__(self, nc: Client, stream: str, consumer: str, api_prefix: str = "$JS.API"):
        self._nc = nc
        self._next = subjects.jetstream_next(stream, consumer, api_prefix)
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._got: list[Msg] = []
        self._want = 0
        self._ended = anyio.Event()
        self._error: str | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def fetch(self, batch: int, wait_s: float) -> list[Msg]:
        """Up to ``batch`` messages; an empty list when none came within ``wait_s``."""
        got = await self._request({"batch": batch, "no_wait": True}, batch, wait_s)
        if got:
            return got
        # One-shot: it waits while nothing is pending, then ends once the pending are sent.
        req: dict[str, object] = {"batch": batch, "expires": int(wait_s * 1e9), "no_wait": True}
        return await self._request(req, batch, wait_s + 0.5)

    async def _request(self, req: dict[str, object], batch: int, wait_s: float) -> list[Msg]:
        self._want, self._ended, self._error = batch, anyio.Event(), None
        if len(self._got) < batch:  # messages may be here already, from an earlier request
            await self._nc.publish(self._next, json.dumps(req).encode(), reply=self._inbox)
            with anyio.move_on_after(wait_s):
                await self._ended.wait()
        got, self._got = self._got, []
        if self._error is not None and not got:
            raise PullError(self._error)
        return got

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._got.append(msg)
            if len(self._got) >= self._want:
                self._ended.set()
        elif status == HEARTBEAT:
            return
        else:
            if status not in END_OF_BATCH:
                description = msg.headers.get("Description", "") if msg.headers else ""
                self._error = f"pull request refused: {status} {description}".strip()
            self._ended.set()
