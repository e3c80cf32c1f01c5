"""Every NATS subject agentfleet uses is built and parsed here, and nowhere else.

Layout (tenant is always the second token)::

    fleet.<tenant>.hb.<host>                       heartbeat (core NATS)
    fleet.<tenant>.lc.<host>                       lifecycle (core NATS)
    fleet.<tenant>.evt.<host>.<session>.<type>     events (JetStream)
    fleet.<tenant>.cmd.<host>                      commands (request/reply)
    fleet.<tenant>.out.<host>.<session>            watch output (core NATS)
    fleet.ctl.u.<operator>.<verb>                  controller API, as that operator
    fleet.ctl.<verb>                               controller API, unauthenticated (no-auth
                                                   fleets only; docs/security.md)
"""

from __future__ import annotations

import re
from enum import Enum
from functools import lru_cache

from msgspec import Struct

from protocol.ids import validate_host, validate_id, validate_session, validate_tenant

ROOT = "fleet"
CTL = "ctl"
# `fleet.ctl.u.<operator>.…`: the broker lets each operator publish only below its own
# prefix, so the token after `u` is who asks (docs/security.md, *Operators*). No verb is `u`.
OPERATOR = "u"

# Event types are dotted (`run.completed`); in a subject their dots become `_` so that the
# type stays one token. The event body carries the exact type.
_EVENT_TYPE_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


class Kind(str, Enum):
    HB = "hb"
    LC = "lc"
    EVT = "evt"
    CMD = "cmd"
    OUT = "out"


class SubjectError(ValueError):
    """A subject does not follow the agentfleet layout."""


class Subject(Struct, frozen=True):
    """A parsed agentfleet subject."""

    kind: Kind
    tenant: str
    host: str
    session: str | None = None
    event_type: str | None = None


@lru_cache(maxsize=4096)  # a fleet uses a few dozen types; every stored event asks
def event_type_token(event_type: str) -> str:
    token = _EVENT_TYPE_TOKEN.sub("_", event_type)[:64]
    return token or "unknown"


def heartbeat(tenant: str, host: str) -> str:
    return f"{ROOT}.{validate_tenant(tenant)}.{Kind.HB.value}.{validate_host(host)}"


def lifecycle(tenant: str, host: str) -> str:
    return f"{ROOT}.{validate_tenant(tenant)}.{Kind.LC.value}.{validate_host(host)}"


def command(tenant: str, host: str) -> str:
    return f"{ROOT}.{validate_tenant(tenant)}.{Kind.CMD.value}.{validate_host(host)}"


def event(tenant: str, host: str, session: str, event_type: str) -> str:
    return (
        f"{ROOT}.{validate_tenant(tenant)}.{Kind.EVT.value}.{validate_host(host)}."
        f"{validate_session(session)}.{event_type_token(event_type)}"
    )


def output(tenant: str, host: str, session: str) -> str:
    return (
        f"{ROOT}.{validate_tenant(tenant)}.{Kind.OUT.value}.{validate_host(host)}."
        f"{validate_session(session)}"
    )


# Wildcards the controller subscribes to, one set per tenant.
def all_heartbeats(tenant: str) -> str:
    return f"{ROOT}.{validate_tenant(tenant)}.{Kind.HB.value}.*"


def all_lifecycles(tenant: str) -> str:
    return f"{ROOT}.{validate_tenant(tenant)}.{Kind.LC.value}.*"


def all_events(tenant: str) -> str:
    return f"{ROOT}.{validate_tenant(tenant)}.{Kind.EVT.value}.>"


def all_session_states(tenant: str) -> str:
    """Every `session.state` event of a tenant, as published: the controller reads these with
    a plain core subscription, besides the stream, so a state change reaches fleet state at
    once rather than after the store's next batch (docs/protocol.md, "State in real time")."""
    token = event_type_token("session.state")
    return f"{ROOT}.{validate_tenant(tenant)}.{Kind.EVT.value}.*.*.{token}"


def host_events(tenant: str, host: str) -> str:
    return f"{ROOT}.{validate_tenant(tenant)}.{Kind.EVT.value}.{validate_host(host)}.>"


def host_outputs(tenant: str, host: str) -> str:
    return f"{ROOT}.{validate_tenant(tenant)}.{Kind.OUT.value}.{validate_host(host)}.>"


def jetstream_next(stream: str, consumer: str, api_prefix: str = "$JS.API") -> str:
    """Where a pull request for a consumer's next messages goes (NATS's JetStream API)."""
    return f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"


def event_stream_name(tenant: str) -> str:
    """JetStream stream holding one tenant's events."""
    return f"FLEET_EVT_{validate_tenant(tenant)}"


def controller_api(verb: str) -> str:
    """`fleet.ctl.<verb>`; a verb may be dotted (`events.search`), each part one token."""
    return ".".join([ROOT, CTL, *(validate_id(part, "verb") for part in verb.split("."))])


def controller_api_all() -> str:
    return f"{ROOT}.{CTL}.>"


def operator_api(operator: str, verb: str) -> str:
    """`fleet.ctl.u.<operator>.<verb>`: the API as asked by one authenticated operator."""
    verbs = (validate_id(part, "verb") for part in verb.split("."))
    return ".".join([ROOT, CTL, OPERATOR, validate_id(operator, "operator"), *verbs])


def operator_api_all(operator: str) -> str:
    """Everything one operator may publish (its permission in the generated config)."""
    return f"{ROOT}.{CTL}.{OPERATOR}.{validate_id(operator, 'operator')}.>"


def names_host(subject: str, kind: Kind, tenant: str, host: str) -> bool:
    """Whether ``subject`` is exactly the ``kind`` subject of this tenant and host.

    For ids a decoder has already validated: it builds no validated subject, since it runs
    for every heartbeat (0.7 µs, against 5 µs for ``parse``).
    """
    return subject == f"{ROOT}.{tenant}.{kind.value}.{host}"


def names_event(subject: str, tenant: str, host: str, session: str, event_type: str) -> bool:
    """Whether ``subject`` is exactly the event subject of this session and type; like
    ``names_host``, for ids a decoder has already validated."""
    token = event_type_token(event_type)
    return subject == f"{ROOT}.{tenant}.{Kind.EVT.value}.{host}.{session}.{token}"


def parse(subject: str) -> Subject:
    """Parse a host-side subject (hb, lc, evt, cmd, out); raise SubjectError otherwise."""
    tokens = subject.split(".")
    if len(tokens) < 4 or tokens[0] != ROOT:
        raise SubjectError(f"not an agentfleet subject: {subject!r}")
    try:
        kind = Kind(tokens[2])
    except ValueError:
        raise SubjectError(f"unknown subject kind {tokens[2]!r} in {subject!r}") from None
    expected = {Kind.HB: 4, Kind.LC: 4, Kind.CMD: 4, Kind.OUT: 5, Kind.EVT: 6}[kind]
    if len(tokens) != expected:
        raise SubjectError(f"{kind.value} subject needs {expected} tokens: {subject!r}")
    try:
        tenant = validate_tenant(tokens[1])
        host = validate_host(tokens[3])
        session = validate_session(tokens[4]) if expected >= 5 else None
    except ValueError as exc:
        raise SubjectError(f"{subject!r}: {exc}") from None
    event_type = tokens[5] if kind is Kind.EVT else None
    return Subject(kind=kind, tenant=tenant, host=host, session=session, event_type=event_type)


def parse_controller_api(subject: str) -> str:
    """Return the verb of a controller API subject."""
    return parse_api_caller(subject)[1]


def parse_api_caller(subject: str) -> tuple[str | None, str]:
    """(operator, verb) of a controller API subject; operator None on the unauthenticated
    `fleet.ctl.<verb>`."""
    tokens = subject.split(".")
    if len(tokens) < 3 or tokens[0] != ROOT or tokens[1] != CTL:
        raise SubjectError(f"not a controller API subject: {subject!r}")
    if tokens[2] != OPERATOR:
        return None, ".".join(tokens[2:])
    if len(tokens) < 5:
        raise SubjectError(f"operator API subject needs an operator and a verb: {subject!r}")
    try:
        operator = validate_id(tokens[3], "operator")
    except ValueError as exc:
        raise SubjectError(f"{subject!r}: {exc}") from None
    return operator, ".".join(tokens[4:])


def msg_id(host: str, boot_id: str, seq: int) -> str:
    """The `Nats-Msg-Id` of an event: unique per (host, boot, seq)."""
    return f"{validate_host(host)}:{boot_id}:{seq}"


def names_msg_id(value: str, host: str, boot_id: str, seq: int) -> bool:
    """Whether ``value`` is exactly the `Nats-Msg-Id` of (host, boot, seq); like
    ``names_host``, for ids a decoder has already validated (it runs for every event)."""
    return value == f"{host}:{boot_id}:{seq}"


def parse_msg_id(value: str) -> tuple[str, str, int]:
    parts = value.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        raise SubjectError(f"malformed Nats-Msg-Id {value!r}")
    return validate_host(parts[0]), parts[1], int(parts[2])
