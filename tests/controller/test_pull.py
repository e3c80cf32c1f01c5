"""The store's pull consumer against a real nats-server: batches as asked, nothing waiting
when the stream is idle, and messages a vanished controller was given but never acked come
first to the next one (with ack policy *all* they would otherwise be acked unread)."""

from __future__ import annotations

import uuid

import anyio
import nats

from controller.ingest import DURABLE, StreamSettings, ensure_consumer, ensure_stream
from controller.nats_embedded import EmbeddedNats
from controller.pull import BatchPull, stream_position
from protocol import subjects


def test_unacked_deliveries_come_first_to_the_next_controller(nats_server: EmbeddedNats) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    stream = subjects.event_stream_name(tenant)

    async def main() -> None:
        nc = await nats.connect(nats_server.url)
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
                assert (seq, delivery) == (m.metadata.sequence.stream, m.metadata.sequence.consumer)
                assert m.metadata.timestamp is not None
                assert abs(stamp - m.metadata.timestamp.timestamp()) <= 1e-6
            await got[-1].ack()  # acks 0..3
            got = await first.fetch(3, 1.0)
            assert [m.data for m in got] == [b"4", b"5", b"6"]  # delivered, never acked
        await nc.close()  # the controller is gone

        nc = await nats.connect(nats_server.url)
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
        await nc.close()

    anyio.run(main)
