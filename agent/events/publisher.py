"""Drains the outbox into JetStream, oldest first, deleting an event only on its ack."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
from nats.aio.client import Client

from agent.events.outbox import Outbox
from common.natsconn import backoff_delay

log = logging.getLogger(__name__)

BATCH = 256
ACK_TIMEOUT_S = 5.0


class Wakeup:
    """A reusable "something new is in the outbox" signal."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, at_most_s: float) -> bool:
        """Wait until set or ``at_most_s`` passed; True if it was set."""
        with anyio.move_on_after(at_most_s):
            await self._event.wait()
        was_set = self._event.is_set()
        self._event = anyio.Event()
        return was_set


async def publish_forever(
    outbox: Outbox, connection: Callable[[], Client | None], wakeup: Wakeup
) -> None:
    failures = 0
    while True:
        nc = connection()
        batch = await anyio.to_thread.run_sync(outbox.peek, BATCH) if nc else []
        if not batch or nc is None or not nc.is_connected:
            await wakeup.wait(1.0)
            continue
        acked: list[int] = []
        failed: str | None = None
        try:
            js = nc.jetstream()
            futures = [
                await js.publish_async(p.subject, p.data, headers={"Nats-Msg-Id": p.msg_id})
                for p in batch
            ]
            # Acks are taken in order and the first failure ends the batch: what follows it is
            # sent again next time (JetStream and the store drop the duplicates).
            with anyio.fail_after(ACK_TIMEOUT_S):
                for pending, future in zip(batch, futures, strict=True):
                    await future
                    acked.append(pending.id)
        except Exception as exc:  # timeouts, no stream yet, disconnects: all mean "retry"
            failed = str(exc) or type(exc).__name__
            for future in futures if "futures" in locals() else []:
                future.cancel()  # frees nats-py's in-flight slot
        await anyio.to_thread.run_sync(outbox.ack, acked)
        if failed:
            failures += 1
            delay = backoff_delay(failures)
            log.warning(
                "publishing events failed (%s); %d pending, retry in %.1fs",
                failed,
                outbox.pending,
                delay,
            )
            await anyio.sleep(delay)
        else:
            failures = 0
