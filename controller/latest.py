"""Heartbeats waiting to be processed: the newest per subject, oldest-waiting host first.

A heartbeat is a snapshot, so a newer one from the same host supersedes an older one still
waiting. The subscription only parks messages here (one dict store), one task processes
them. A controller that falls behind (a start-up storm of 50,000 hosts, a burst, a loaded
box) then works through each host's newest heartbeat once per pass, instead of through a
queue that grows until nats-server cuts it off as a slow consumer and the heartbeats lost
meanwhile make healthy hosts suspect (docs/benchmarks.md). What it has to keep up with is
hosts per suspect window (3 intervals), not every heartbeat sent.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
from nats.aio.msg import Msg

log = logging.getLogger(__name__)

# Processing yields to the socket reader at least this often. One turn of the reader takes
# what one socket read brings (asyncio reads up to 256 KiB: ~85 heartbeats). Processing a
# fixed 200 between turns let the reader take in 3,700-5,700 a second (`bench intake`); at
# 10,000 a second the rest queued in the socket, oldest first, where no newer one can
# supersede it, until nats-server cut the connection (docs/benchmarks.md, 50,000 hosts).
SLICE_S = 0.002


class Latest:
    def __init__(self) -> None:
        self._waiting: OrderedDict[str, Msg] = OrderedDict()
        self._ready = anyio.Event()
        self.superseded = 0  # parked heartbeats replaced by a newer one before processing

    def __len__(self) -> int:
        return len(self._waiting)

    def holds(self, subject: str) -> bool:
        """Whether a message on ``subject`` is waiting to be processed."""
        return subject in self._waiting

    async def park(self, msg: Msg) -> None:
        """The subscription's callback."""
        if msg.subject in self._waiting:
            self.superseded += 1  # keeps its place in line, with the newer content
        self._waiting[msg.subject] = msg
        self._ready.set()

    async def run(self, handle: Callable[[Msg], Awaitable[None]]) -> None:
        while True:
            await self._ready.wait()
            self._ready = anyio.Event()  # a park from now on wakes the next round
            while self._waiting:
                until = time.monotonic() + SLICE_S
                while self._waiting and time.monotonic() < until:
                    msg = self._waiting.popitem(last=False)[1]
                    try:
                        await handle(msg)
                    except Exception:  # one bad message must not stop the intake
                        log.exception("handling %s failed", msg.subject)
                await anyio.lowlevel.checkpoint()
