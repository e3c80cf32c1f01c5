"""The tenant's event stream and the store's durable consumer on it: how they are set up,
and how a consumer that holds deliveries nobody acked is made again so none is lost.

``controller.events.ingest`` reads from what this module sets up.
"""

from __future__ import annotations

import logging

import msgspec
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from protocol import subjects
from protocol.limits import PAYLOAD_LIMITS

log = logging.getLogger(__name__)

DURABLE = "fleet-store"


def durable_name(replica: str = "") -> str:
    """The store's durable consumer of one controller replica: every replica keeps the whole
    event store, so each reads the whole stream with its own consumer and ack floor (issue
    18). The only controller (no replica id) keeps the name it always had."""
    return f"{DURABLE}-{replica}" if replica else DURABLE


# Messages per pull request; the consumer lets ten batches be out unacked at once.
FETCH_BATCH = 500


class StreamSettings(msgspec.Struct, frozen=True, kw_only=True):
    replicas: int = 1
    max_age_days: float = 30.0
    duplicate_window_s: float = 120.0
    max_bytes: int = -1


def stream_config(tenant: str, settings: StreamSettings) -> StreamConfig:
    return StreamConfig(
        name=subjects.event_stream_name(tenant),
        subjects=[subjects.all_events(tenant)],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        max_age=settings.max_age_days * 86400,
        duplicate_window=settings.duplicate_window_s,
        num_replicas=settings.replicas,
        max_bytes=settings.max_bytes,
        max_msg_size=PAYLOAD_LIMITS[subjects.Kind.EVT],
    )


def _consumer_config(tenant: str, start_seq: int = 0, durable: str = DURABLE) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable,
        filter_subject=subjects.all_events(tenant),
        ack_policy=AckPolicy.ALL,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_seq else DeliverPolicy.ALL,
        opt_start_seq=start_seq or None,
        # Room for every batch the three ingest stages hold at once, and as many again.
        max_ack_pending=FETCH_BATCH * 10,
        ack_wait=30,
    )


async def ensure_consumer(
    js: JetStreamContext, tenant: str, resume: bool = False, durable: str = DURABLE
) -> None:
    """The store's durable consumer on the tenant's stream, ready to deliver everything not
    yet acked, first.

    With ack policy *all*, acking a message acks every one before it, read or not. Messages
    delivered to a controller that is gone (killed) or lost on the way (a reconnect) and never
    acked would be acked unread by the next ack, and missing from the store. So when the
    consumer holds such messages (on start), or ``resume`` says deliveries were missed, it is
    made again from just after its ack floor: those messages come first, and what the store
    already holds it drops as duplicates. One controller replica reads through each
    durable consumer (``durable``, see `durable_name`).
    """
    stream = subjects.event_stream_name(tenant)
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        await js.add_consumer(stream, _consumer_config(tenant, durable=durable))
        return
    if not resume and not info.num_ack_pending:
        return
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    log.warning(
        "events of %s (%s): %s delivered but not acked; redelivering from stream seq %d",
        tenant,
        durable,
        info.num_ack_pending,
        floor + 1,
    )
    await js.delete_consumer(stream, durable)
    await js.add_consumer(stream, _consumer_config(tenant, floor + 1, durable))


async def ensure_stream(js: JetStreamContext, tenant: str, settings: StreamSettings) -> None:
    config = stream_config(tenant, settings)
    try:
        await js.add_stream(config)
    except BadRequestError:
        # Exists with another config (e.g. more replicas now): bring it in line.
        await js.update_stream(config)
