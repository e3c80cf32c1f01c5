"""Heartbeats waiting to be processed: the newest per subject, oldest-waiting host first.

A heartbeat is a snapshot, so a newer one from the same host supersedes an older one still
waiting (but a keepalive never supersedes a full one: it names that very snapshot). The
subscription only parks messages here (one dict store), one task processes them. A
controller that falls behind (a start-up storm of 50,000 hosts, a burst, a loaded box) then
works through each host's newest heartbeat once per pass, instead of through a
queue that grows until nats-server cuts it off as a slow consumer and the heartbeats lost
meanwhile make healthy hosts suspect (docs/benchmarks.md). What it has to keep up with is
hosts per suspect window (3 intervals), not every heartbeat sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
from nats.aio.msg import Msg

log = logging.getLogger(__name__)

KEEPALIVE_PREFIX = b'{"msg":"heartbeat.keepalive"'  # msgspec writes the tag first

# Processing yields to the socket reader at least this often. One turn of the reader takes
# what one socket read brings (asyncio reads up to 256 KiB: ~85 heartbeats). Processing a
# fixed 200 between turns let the reader take in 3,700-5,700 a second (`bench intake`); at
# 10,000 a second the rest queued in the socket, oldest first, where no newer one can
# supersede it, until nats-server cut the connection (docs/benchmarks.md, 50,000 hosts).
SLICE_S = 0.002

# While heartbeats come faster than one per HOLD_S, the loop is held this long after each
# round that emptied the parking, before it reads again. Otherwise a controller that keeps
# up wakes for every one or two heartbeats, and each wake (epoll, recv, nats-py's parser,
# task switches) costs more than the heartbeat: a bare nats-py subscriber at 4,000
# heartbeats/s spent 76 µs of CPU on each, 2.8 per read, and 49 µs, 8.7 per read, when its
# loop was held 2 ms between turns (docs/benchmarks.md, *Coalesced reads*). Never held while
# heartbeats wait, so a controller behind never idles; a sparse fleet is never held, so
# the rest of the loop (the event ingest) is not slowed by a hold that would save nothing;
# never held while another task is ready to run (an API request read in the same batch), so
# that it does not wait behind the hold. `ps --host` at 50,000 hosts: p50 1.2 ms with no
# hold, 9.5 ms with the hold, 4.4 ms with the hold but not while a task is ready.
HOLD_S = 0.002


def loop_idle() -> bool:
    """Whether the event loop has nothing ready to run, so that it would poll the sockets
    next. asyncio keeps no public count; its ready queue is ``_ready`` (CPython's
    BaseEventLoop). A loop without one, or another backend than asyncio, is never held."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (anyio on trio)
        return False
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready


class Latest:
    def __init__(
        self,
        hold_s: float = HOLD_S,
        hold: Callable[[float], None] = time.sleep,
        idle: Callable[[], bool] = loop_idle,
    ) -> None:
        self._waiting: OrderedDict[str, Msg] = OrderedDict()
        self._ready = anyio.Event()
        self._hold_s, self._hold, self._idle = hold_s, hold, idle
        self.superseded = 0  # parked heartbeats replaced by a newer one before processing
        self.rounds = 0  # rounds that emptied the parking

    def __len__(self) -> int:
        return len(self._waiting)

    def holds(self, subject: str) -> bool:
        """Whether a message on ``subject`` is waiting to be processed."""
        return subject in self._waiting

    async def park(self, msg: Msg) -> None:
        """The subscription's callback."""
        old = self._waiting.get(msg.subject)
        if old is not None:
            self.superseded += 1  # keeps its place in line, with the newer content
            # A keepalive says "still the snapshot I sent": a full heartbeat still waiting is
            # that snapshot, so it stays (for liveness either one does).
            if msg.data.startswith(KEEPALIVE_PREFIX) and not old.data.startswith(KEEPALIVE_PREFIX):
                return
        self._waiting[msg.subject] = msg
        self._ready.set()

    async def run(self, handle: Callable[[Msg], Awaitable[None]]) -> None:
        ended = -math.inf
        while True:
            await self._ready.wait()
            self._ready = anyio.Event()  # a park from now on wakes the next round
            dense = time.monotonic() - ended < self._hold_s
            while self._waiting:
                until = time.monotonic() + SLICE_S
                while self._waiting and time.monotonic() < until:
                    msg = self._waiting.popitem(last=False)[1]
                    try:
                        await handle(msg)
                    except Exception:  # one bad message must not stop the intake
                        log.exception("handling %s failed", msg.subject)
                await anyio.lowlevel.checkpoint()
            if dense and self._idle():
                # Blocks the whole loop on purpose: only then does the socket fill up, so
                # that the next read brings a batch (the GIL is free for the store's threads).
                self._hold(self._hold_s)
            ended = time.monotonic()
            self.rounds += 1
