"""The store's pull consumer against a real nats-server: batches as asked, nothing waiting
when the stream is idle, a waiting fetch handed an event as soon as it is stored (not when the
wait runs out), and messages a vanished controller was given but never acked come first to
the next one (with ack policy *all* they would otherwise be acked unread)."""

from __future__ import annotations

import time
import uuid

import anyio
import nats
from nats.aio.msg import Msg

from controller.events.pull import BatchPull, stream_position
from controller.events.streams import DURABLE, StreamSettings, ensure_consumer, ensure_stream
from controller.natsserver.embedded import EmbeddedNats
from protocol import subjects


def test_unacked_deliveries_come_first_to_the_next_controller(nats_server: EmbeddedNats) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    stream = subjects.event_stream_name(tenant)

    async def main() -> None:
        # `async with`: a failed assertion must not leak the socket into the next test
        # (filterwarnings=error turns the ResourceWarning into that test's failure).
        async with await nats.connect(nats_server.url) as nc:
            js = nc.jetstream()
            await ensure_stream(js, tenant, StreamSettings())
            await ensure_consumer(js, tenant)
            for i in range(10):
                await js.publish(subjects.event(tenant, "h1", "s1", "note"), b"%d" % i)
            first = BatchPull(nc, stream, DURABLE)
            await first.start()
            with anyio.fail_after(10):
                got = await first.fetch(4, 1.0)
                assert [m.data for m in got] == [b"0", b"1", b"2", b"3"]
                for m in got:  # read from the ack subject, as nats-py's metadata says
                    seq, delivery, stamp = stream_position(m)
                    meta = m.metadata
                    assert (seq, delivery) == (meta.sequence.stream, meta.sequence.consumer)
                    assert m.metadata.timestamp is not None
                    # nats-py rounds ns / 1e9 as a float, we round the integer: they may
                    # part by one microsecond, never more.
                    theirs = round(m.metadata.timestamp.timestamp() * 1_000_000)
                    assert abs(round(stamp * 1_000_000) - theirs) <= 1
                await got[-1].ack()  # acks 0..3
                got = await first.fetch(3, 1.0)
                assert [m.data for m in got] == [b"4", b"5", b"6"]  # delivered, never acked
        # the controller is gone

        async with await nats.connect(nats_server.url) as nc:
            js = nc.jetstream()
            await ensure_consumer(js, tenant)
            second = BatchPull(nc, stream, DURABLE)
            await second.start()
            with anyio.fail_after(10):
                got = await second.fetch(500, 1.0)
                assert [m.data for m in got] == [b"%d" % i for i in range(4, 10)]
                await got[-1].ack()
                assert await second.fetch(500, 0.3) == []  # idle: an empty batch, no error
            info = await js.consumer_info(stream, DURABLE)
            assert info.num_ack_pending == 0 and info.ack_floor.stream_seq == 10

    anyio.run(main)


async def _quiet_consumer(nc: nats.NATS, tenant: str) -> BatchPull:
    js = nc.jetstream()
    await ensure_stream(js, tenant, StreamSettings())
    await ensure_consumer(js, tenant)
    pull = BatchPull(nc, subjects.event_stream_name(tenant), DURABLE)
    await pull.start()
    return pull


def test_a_waiting_fetch_ends_when_an_event_arrives_not_when_it_expires(
    nats_server: EmbeddedNats,
) -> None:
    """Issue 17: the wait for a batch used to last until the batch was full or the wait ran
    out (1 s in ingest), which was the notification latency of a quiet stream."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    subject = subjects.event(tenant, "h1", "s1", "note")

    async def main() -> None:
        async with await nats.connect(nats_server.url) as nc:
            js = nc.jetstream()
            pull = await _quiet_consumer(nc, tenant)

            async def later() -> None:
                await anyio.sleep(0.3)
                await js.publish(subject, b"late")

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(later)
                    start = time.monotonic()
                    got = await pull.fetch(500, 10.0)
                    took = time.monotonic() - start
                assert [m.data for m in got] == [b"late"]
                assert took < 5.0, took  # the wait is 10 s; the event came after 0.3 s
                await got[-1].ack()
                # The request is over on the server too: none left to swallow the next one.
                info = await js.consumer_info(subjects.event_stream_name(tenant), DURABLE)
                assert info.num_waiting == 0
                await pull.stop()

    anyio.run(main)


def test_a_trickle_of_events_comes_whole_and_in_order_in_short_batches(
    nats_server: EmbeddedNats,
) -> None:
    """Batches that end early lose nothing and repeat nothing: every event once, in stream
    order, however the one-shot requests and the publishes interleave."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    subject = subjects.event(tenant, "h1", "s1", "note")
    count = 60

    async def main() -> None:
        async with await nats.connect(nats_server.url) as nc:
            js = nc.jetstream()
            pull = await _quiet_consumer(nc, tenant)
            got: list[bytes] = []
            batches = 0

            async def trickle() -> None:
                for i in range(count):
                    await js.publish(subject, b"%d" % i)
                    await anyio.sleep(0.01 if i % 10 else 0.1)

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(trickle)
                    while len(got) < count:
                        msgs = await pull.fetch(500, 5.0)
                        if msgs:
                            batches += 1
                            got.extend(m.data for m in msgs)
                            await msgs[-1].ack()
                await pull.stop()
            assert got == [b"%d" % i for i in range(count)]
            assert batches > 1  # not one batch at the end of a wait
            info = await js.consumer_info(subjects.event_stream_name(tenant), DURABLE)
            assert info.num_ack_pending == 0 and info.ack_floor.stream_seq == count

    anyio.run(main)


def test_stream_position_rounds_the_stored_time_to_the_microsecond() -> None:
    """Exact integer rounding; nats-py's float rounding may land one microsecond off, and
    that is all (the live-server test above met such a stamp once in CI)."""
    start = 1_796_168_393_803_259_000  # ns, the stamp CI met
    parted = 0
    for ns in range(start, start + 3000, 7):
        msg = Msg(_client=None, subject="x", reply=f"$JS.ACK.S.C.1.5.6.{ns}.0", data=b"")  # type: ignore[arg-type]
        seq, delivery, stamp = stream_position(msg)
        assert (seq, delivery) == (5, 6)
        ours = round(stamp * 1_000_000)
        assert ours == (ns + 500) // 1000
        assert msg.metadata.timestamp is not None
        theirs = round(msg.metadata.timestamp.timestamp() * 1_000_000)
        assert abs(ours - theirs) <= 1
        parted += ours != theirs
    assert parted  # the range does hold stamps the two roundings disagree on
