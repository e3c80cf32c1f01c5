"""Ingest's fetch stage paces itself only when it has caught up: after a short batch the next
fetch starts a gap after the last one did (a trickle gathers into batches, issue 17), after a
full batch at once (a backlog drains at full speed), and a fetch that found nothing is not
followed by a wait of ours (it waited for the stream itself)."""

from __future__ import annotations

import time
from typing import Any

import anyio
from nats.aio.msg import Msg

from controller.events.ingest import Ingest
from controller.events.store.core import EventStore
from controller.events.streams import FETCH_BATCH, StreamSettings
from protocol import encode, subjects
from protocol.events import Event, SourceKind

GAP_S = 0.4


class Pull:
    """Stands in for BatchPull: answers each fetch at once with the next batch size."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.calls: list[float] = []
        self.seq = 0
        self.done = anyio.Event()

    def _msg(self) -> Msg:
        self.seq += 1
        event = Event(
            tenant="acme",
            host="h1",
            session="s1",
            boot_id="b1",
            seq=self.seq,
            ts=1.0,
            event_type="note",
            summary="n",
            source_kind=SourceKind.AGENT,
        )
        ack = f"$JS.ACK.S.C.1.{self.seq}.{self.seq}.1700000000000000000.0"
        return Msg(
            _client=None,  # type: ignore[arg-type]
            subject=subjects.event("acme", "h1", "s1", "note"),
            reply=ack,
            data=encode(event),
            headers={"Nats-Msg-Id": subjects.msg_id("h1", "b1", self.seq)},
        )

    async def fetch(self, batch: int, wait_s: float) -> list[Msg]:
        self.calls.append(time.monotonic())
        if not self.sizes:
            self.done.set()
            await anyio.sleep_forever()
        return [self._msg() for _ in range(self.sizes.pop(0))]


def test_only_a_short_batch_is_followed_by_the_gap(tmp_path: Any) -> None:
    ingest = Ingest(EventStore(tmp_path / "e.db"), ["acme"], StreamSettings(), batch_gap_s=GAP_S)
    pull = Pull([1, 3, FETCH_BATCH, 0, 2])
    got: list[int] = []

    async def main() -> None:
        send, receive = anyio.create_memory_object_stream[Any](100)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(ingest._fetch, pull, None, "acme", "FLEET_EVT_acme", send)
                await pull.done.wait()
                tg.cancel_scope.cancel()
        async with receive:
            async for msgs, _decoded in receive:  # ends: _fetch closed its end
                got.append(len(msgs))

    anyio.run(main)
    assert got == [1, 3, FETCH_BATCH, 2]  # every message handed on, in order
    gaps = [b - a for a, b in zip(pull.calls, pull.calls[1:], strict=False)]
    assert gaps[0] >= GAP_S * 0.95 and gaps[1] >= GAP_S * 0.95  # after 1, after 3
    assert gaps[2] < GAP_S / 2  # after a full batch: at once
    assert gaps[3] < GAP_S / 2  # after nothing: at once (the fetch itself waited)
    assert gaps[4] >= GAP_S * 0.95  # after 2
