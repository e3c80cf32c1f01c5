"""The live feed: pushed updates (session states, host changes, events, attention items) to
the CLIs that asked for them (`fleet top`), each on a subject in the CLI's own inbox, for as
long as it keeps renewing (the CLI may not see tenant subjects, as for `watch`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client

from protocol import encode
from protocol.attention import FeedMessage, FeedReply, FeedRequest

log = logging.getLogger(__name__)

MAX_FEEDS = 64  # live views at once; a renewal past it is refused (one line, not a crash)


@dataclass(slots=True)
class _Feed:
    until: float  # monotonic
    tenant: str | None
    host: str | None


class FeedFull(RuntimeError):
    pass


class FeedRelay:
    def __init__(self, api_connection: Callable[[], Client | None]) -> None:
        self.api_connection = api_connection
        self._feeds: dict[str, _Feed] = {}
        self.pushed = 0

    def __bool__(self) -> bool:
        return bool(self._feeds)

    def add(self, req: FeedRequest) -> FeedReply:
        if req.deliver not in self._feeds and len(self._feeds) >= MAX_FEEDS:
            raise FeedFull(f"{MAX_FEEDS} live views already")
        self._feeds[req.deliver] = _Feed(time.monotonic() + req.ttl_s, req.tenant, req.host)
        return FeedReply(ttl_s=req.ttl_s)

    def expire(self) -> None:
        now = time.monotonic()
        self._feeds = {d: f for d, f in self._feeds.items() if f.until > now}

    async def push(self, message: FeedMessage, tenant: str, host: str) -> None:
        if not self._feeds:
            return
        nc = self.api_connection()
        if nc is None:
            return
        data = encode(message)
        now = time.monotonic()
        for deliver, feed in list(self._feeds.items()):
            if feed.until <= now:
                del self._feeds[deliver]
                continue
            if (feed.tenant and feed.tenant != tenant) or (feed.host and feed.host != host):
                continue
            try:
                await nc.publish(deliver, data)
                self.pushed += 1
            except Exception as exc:
                log.debug("cannot push to %s: %s", deliver, exc)
