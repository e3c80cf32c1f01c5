"""Relays watch frames from a tenant's `out` subject to the watching CLIs' own inboxes.

The CLI can only talk to the controller's account (docs/security.md), so it never subscribes
to tenant subjects itself: it names a `deliver` subject in its inbox, and the controller
forwards frames there for as long as that watcher keeps renewing its lease."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from protocol import subjects

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # tenant, host, session


@dataclass
class _Relay:
    sub: Subscription
    deliver: dict[str, float] = field(default_factory=dict)  # subject -> lease end


class WatchRelay:
    def __init__(
        self,
        tenant_connection: Callable[[str], Client | None],
        api_connection: Callable[[], Client | None],
    ) -> None:
        self.tenant_connection = tenant_connection
        self.api_connection = api_connection
        self._relays: dict[Key, _Relay] = {}

    async def add(self, key: Key, deliver: str, ttl_s: float) -> None:
        relay = self._relays.get(key)
        if relay is None:
            nc = self.tenant_connection(key[0])
            if nc is None:
                return
            sub = await nc.subscribe(subjects.output(*key), cb=self._forwarder(key))
            # API requests run concurrently: another watcher may have subscribed meanwhile.
            relay = self._relays.get(key)
            if relay is None:
                relay = self._relays[key] = _Relay(sub)
            else:
                await sub.unsubscribe()
        relay.deliver[deliver] = time.monotonic() + ttl_s

    def _forwarder(self, key: Key) -> Callable[[Msg], Awaitable[None]]:
        async def forward(msg: Msg) -> None:
            relay = self._relays.get(key)
            api = self.api_connection()
            if relay is None or api is None:
                return
            now = time.monotonic()
            for deliver, until in list(relay.deliver.items()):
                if until <= now:
                    del relay.deliver[deliver]
                    continue
                try:
                    await api.publish(deliver, msg.data)
                except Exception as exc:
                    log.debug("cannot forward a frame to %s: %s", deliver, exc)
            if not relay.deliver:
                await self._drop(key)

        return forward

    async def expire(self) -> None:
        now = time.monotonic()
        for key, relay in list(self._relays.items()):
            relay.deliver = {d: u for d, u in relay.deliver.items() if u > now}
            if not relay.deliver:
                await self._drop(key)

    async def _drop(self, key: Key) -> None:
        relay = self._relays.pop(key, None)
        if relay is not None:
            try:
                await relay.sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribe %s: %s", key, exc)

    async def close(self) -> None:
        for key in list(self._relays):
            await self._drop(key)
