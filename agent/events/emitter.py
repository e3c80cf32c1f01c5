"""Putting the agent's own events in the outbox and waking the publisher for them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import anyio
from nats.aio.client import Client

from agent.events.outbox import Outbox
from agent.events.publisher import Wakeup
from protocol import encode
from protocol.commands import CommandResult
from protocol.events import Event

# The daemon's NATS connection as its collaborators see it: None while there is none.
Connection = Callable[[], Client | None]


class Emitter:
    def __init__(self, outbox: Outbox, wakeup: Wakeup) -> None:
        self._outbox = outbox
        self._wakeup = wakeup

    async def emit(self, events: Sequence[Event]) -> None:
        if events:
            await anyio.to_thread.run_sync(lambda: self._outbox.append(events))
            self._wakeup.set()

    async def record(self, command_id: str, result: CommandResult, events: list[Event]) -> None:
        """A command's audit events, then its result (kept for replayed command ids)."""
        await self.emit(events)
        await anyio.to_thread.run_sync(
            self._outbox.remember, command_id, encode(result), time.time()
        )

    async def recall(self, command_id: str) -> CommandResult | None:
        return await anyio.to_thread.run_sync(self._outbox.recall, command_id)
