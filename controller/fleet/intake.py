"""Heartbeats and lifecycle notices as they arrive: valid, within the size limit, and on
the subject of the host their body names, or refused with a reason. And the real-time
`session.state` events (controller/fleet/realtime.py)."""

from __future__ import annotations

from typing import Any, TypeVar, overload

from nats.aio.msg import Msg

from controller.fleet.realtime import StateNews, state_news
from controller.fleet.rejects import Rejects
from protocol import DecodeError, decode, subjects
from protocol.events import Event
from protocol.heartbeat import Heartbeat
from protocol.lifecycle import Lifecycle
from protocol.limits import PAYLOAD_LIMITS
from protocol.subjects import SubjectError

M = TypeVar("M", Heartbeat, Lifecycle)


@overload
async def intake(msg: Msg, kind: subjects.Kind, message: type[M], rejects: Rejects) -> M | None: ...


# A union of kinds (protocol.heartbeat.HostBeat) is a type form `type[M]` cannot name, as in
# protocol.decode: the caller annotates what it gets.
@overload
async def intake(msg: Msg, kind: subjects.Kind, message: Any, rejects: Rejects) -> Any: ...


async def intake(msg: Msg, kind: subjects.Kind, message: Any, rejects: Rejects) -> Any:
    """The heartbeat or notice in ``msg``, if it is valid and its subject names the host its
    body names; otherwise refused (counted, logged, an event) and None.

    Decoded first and the subject compared after: the cheap order for the message that
    arrives 10,000 times a second; ``parse`` only explains a mismatch.
    """
    data, reason = msg.data, ""
    if len(data) > PAYLOAD_LIMITS[kind]:
        reason = f"{len(data)} bytes, over the limit"
    else:
        try:
            body = decode(data, message)
        except DecodeError as exc:
            reason = str(exc)
        else:
            if subjects.names_host(msg.subject, kind, body.tenant, body.host):
                return body
            reason = _mismatch(msg.subject, body.tenant, body.host)
    await rejects.reject(msg.subject, data, kind.value, reason)
    return None


def _mismatch(subject: str, tenant: str, host: str) -> str:
    try:
        where = subjects.parse(subject)
    except SubjectError as exc:
        return str(exc)
    return f"body says {tenant}/{host} but the subject {where.tenant}/{where.host}"


def state_intake(msg: Msg) -> StateNews | None:
    """The state change a `session.state` event on its core subject reports, or None.

    Nothing is reported here: the same message is in the stream, where the ingest turns a
    malformed one into its `validation_error`; this path only takes what is well-formed.
    """
    if len(msg.data) > PAYLOAD_LIMITS[subjects.Kind.EVT]:
        return None
    try:
        event = decode(msg.data, Event)
    except DecodeError:
        return None
    if not subjects.names_event(
        msg.subject, event.tenant, event.host, event.session, event.event_type
    ):
        return None
    return state_news(event)
