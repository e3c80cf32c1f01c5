"""The store's pull consumer against a real nats-server: batches as asked, nothing waiting
when the stream is idle, and messages a vanished controller was given but never acked come
first to the next one (with ack policy *all* they would otherwise be acked unread)."""

from __future__ import annotations

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
