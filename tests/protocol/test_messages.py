from __future__ import annotations

import re

import msgspec
import pytest

from protocol import DecodeError, decode, encode
from protocol.api import ApiError, ErrorCode, Flag, HostState, PsReply, PsRow
from protocol.events import Event, EventLink, LinkType, SourceKind
from protocol.heartbeat import (
    BootEnabled,
    Heartbeat,
    PaneState,
    SessionKind,
    SessionSnapshot,
    SessionState,
    snapshot_digest,
)
from protocol.lifecycle import Lifecycle, LifecycleKind

SNAP = SessionSnapshot(
    name="coder",
    runtime_configured="claude",
    runtime_observed="stub",
    kind=SessionKind.EPHEMERAL,
    pane=PaneState.ALIVE,
    pid=1234,
    state=SessionState.WORKING,
    state_since=1700000000.5,
    last_output_at=1700000001.0,
    boot_enabled=BootEnabled.NO,
    restarts=2,
)
HB = Heartbeat(
    tenant="acme",
    host="h1",
    boot_id="b1",
    seq=7,
    sent_at=1700000002.0,
    interval_s=5.0,
    agent_version="0.1.0",
    sessions=[SNAP],
)


@pytest.mark.parametrize(
    "message",
    [
        HB,
        Lifecycle(
            tenant="acme",
            host="h1",
            boot_id="b1",
            event=LifecycleKind.SHUTDOWN,
            sent_at=1.0,
            agent_version="0.1.0",
        ),
        Event(
            tenant="acme",
            host="h1",
            session="coder",
            boot_id="b1",
            seq=1,
            ts=1.0,
            event_type="run.completed",
            summary="done",
            source_kind=SourceKind.SYSTEM,
            payload={"nested": {"a": [1, 2]}},
            links=[EventLink(type=LinkType.SUPERSEDES, target="k1")],
        ),
        ApiError(code=ErrorCode.BAD_REQUEST, message="nope"),
    ],
)
def test_round_trip(message: object) -> None:
    data = encode(message)
    assert decode(data, type(message)) == message
    assert b'"schema_version":1' in data


def test_one_decode_dispatches_on_the_tag() -> None:
    reply = PsReply(
        rows=[
            PsRow(
                tenant="acme",
                host="h1",
                host_state=HostState.OK,
                heartbeat_age_s=1.0,
                session=SNAP,
                flags=[Flag.DRIFT],
            )
        ],
        total=1,
        next_cursor=None,
    )
    assert decode(encode(reply), PsReply | ApiError) == reply
    err = ApiError(code=ErrorCode.INTERNAL, message="x")
    assert decode(encode(err), PsReply | ApiError) == err


def test_drift_is_configured_vs_observed() -> None:
    assert SNAP.drift
    same = SessionSnapshot(name="a", runtime_configured="stub", runtime_observed="stub")
    assert not same.drift
    unknown = SessionSnapshot(name="a", runtime_configured="stub", runtime_observed=None)
    assert not unknown.drift


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe garbage",
        b"{}",
        b"[1,2,3]",
        b'{"msg":"heartbeat","tenant":"acme"}',
        b'{"msg":"lifecycle","tenant":"acme","host":"h1","boot_id":"b","event":"startup",'
        b'"sent_at":1,"agent_version":"x"}',
        encode(HB).replace(b'"host":"h1"', b'"host":"h.1"'),
        encode(HB).replace(b'"seq":7', b'"seq":-1'),
        encode(HB).replace(b'"interval_s":5.0', b'"interval_s":0'),
    ],
)
def test_bad_heartbeats_raise_one_error_type(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data, Heartbeat)


@pytest.mark.parametrize(
    ("field", "bad", "reason"),
    [
        ("tenant", "a b", "invalid tenant id 'a b': contains whitespace"),
        ("host", "h.1", "invalid host id 'h.1': contains '.'"),
        ("boot_id", "b*", "invalid boot id 'b*': contains the NATS wildcard"),
        ("name", "s\n1", "invalid session id 's\\n1': contains whitespace"),
        ("name", "-s", "invalid session id '-s': must start with"),
    ],
)
def test_a_heartbeat_names_the_id_it_refuses(field: str, bad: str, reason: str) -> None:
    """Its ids are checked at once (`check_ids`), and the error still names the bad one."""
    good = {"tenant": "acme", "host": "h1", "boot_id": "b1", "name": SNAP.name}[field]
    data = encode(HB).replace(f'"{field}":"{good}"'.encode(), encode({field: bad})[1:-1])
    assert data != encode(HB)
    with pytest.raises(DecodeError, match=re.escape(reason)):
        decode(data, Heartbeat)


def test_a_message_from_a_newer_schema_is_refused_with_a_clear_error() -> None:
    lc = Lifecycle(
        tenant="acme",
        host="h1",
        boot_id="b1",
        event=LifecycleKind.STARTUP,
        sent_at=1.0,
        agent_version="0",
    )
    data = encode(lc)
    newer = data.replace(b'"schema_version":1', b'"schema_version":2')
    with pytest.raises(DecodeError, match=r"lifecycle has schema_version 2, newer than"):
        decode(newer, Lifecycle)
    assert decode(data, Lifecycle).schema_version == 1


def test_every_api_verb_is_one_table_entry_with_message_types() -> None:
    from protocol import Message, subjects
    from protocol.api import VERBS

    for name, verb in VERBS.items():
        assert verb.name == name
        assert subjects.parse_controller_api(verb.subject) == name
        assert issubclass(verb.request, Message) and issubclass(verb.reply, Message)


def test_the_snapshot_digest_ignores_output_times_only() -> None:
    """A printing session must not make every heartbeat a full one (issue 18): the periodic
    full snapshot carries output times; anything else changed is a new digest."""
    base = SessionSnapshot(
        name="s1", runtime_configured="stub", runtime_observed="stub", last_output_at=100.0
    )
    printed = msgspec.structs.replace(base, last_output_at=160.0)
    assert snapshot_digest([base]) == snapshot_digest([printed])
    for other in (
        msgspec.structs.replace(base, state=SessionState.WORKING),
        msgspec.structs.replace(base, state_since=5.0),
        msgspec.structs.replace(base, pane=PaneState.DEAD),
        msgspec.structs.replace(base, name="s2"),
    ):
        assert snapshot_digest([other]) != snapshot_digest([base])
    assert snapshot_digest([base, base]) != snapshot_digest([base])
