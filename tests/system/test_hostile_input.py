"""Hostile input at every subject a host may publish, against a real controller: it never
crashes, stores nothing that is not a valid Event, and counts what it rejects (invalid events
become validation_error events)."""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.js.errors import APIError

from protocol import subjects
from protocol.events import Event
from protocol.heartbeat import Heartbeat
from protocol.lifecycle import Lifecycle, LifecycleKind
from protocol.limits import PAYLOAD_LIMITS
from tests.support.fleet import Fleet, wait_for

TENANT = "hostile"
HOSTILE_IDS = [
    "",
    "a.b",
    "*",
    ">",
    "a b",
    "tab\t",
    "x" * 65,
    "é",
    "a:b",
    "a/b",
    "-x",
    "\x00",
    "ctl",
]
# Tokens NATS carries but our ids refuse: they reach the controller in the subject itself.
HOSTILE_TOKENS = ["é", "a:b", "$SYS", "_INBOX", "x" * 65, "-lead", "a/b"]


def valid_body(kind: str, host: str) -> dict[str, Any]:
    now = time.time()
    if kind == "hb":
        msg: Any = Heartbeat(
            tenant=TENANT,
            host=host,
            boot_id="b1",
            seq=1,
            sent_at=now,
            interval_s=5,
            agent_version="t",
        )
    elif kind == "lc":
        msg = Lifecycle(
            tenant=TENANT,
            host=host,
            boot_id="b1",
            event=LifecycleKind.STARTUP,
            sent_at=now,
            agent_version="t",
        )
    else:
        msg = Event(
            tenant=TENANT,
            host=host,
            session="s1",
            boot_id="b1",
            seq=1,
            ts=now,
            event_type="note",
            summary="hi",
        )
    return msgspec.to_builtins(msg)


def subject_for(kind: str, host: str) -> str:
    if kind == "hb":
        return subjects.heartbeat(TENANT, host)
    if kind == "lc":
        return subjects.lifecycle(TENANT, host)
    if kind == "evt":
        return subjects.event(TENANT, host, "s1", "note")
    return subjects.output(TENANT, host, "s1")


def with_token(subject: str, token: str) -> str:
    # The host token (4th) replaced by one NATS accepts and our id rules refuse.
    parts = subject.split(".")
    parts[3] = token
    return ".".join(parts)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def hostile_cases(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(kind, subject, payload), invalid by construction."""
    kind = draw(st.sampled_from(["hb", "lc", "evt", "out"]))
    subject = subject_for(kind, "h1")
    how = draw(
        st.sampled_from(
            [
                "bytes",
                "json",
                "hostile_id",
                "mismatch",
                "wrong_type",
                "other_kind",
                "hostile_subject",
            ]
        )
    )
    body = valid_body(kind, "h1")
    if how == "bytes":
        data = draw(st.binary(max_size=2048))
    elif how == "json":
        data = json.dumps(draw(json_values)).encode()
    elif how == "hostile_id":
        field = draw(
            st.sampled_from(["tenant", "host", "boot_id"] + (["session"] * (kind == "evt")))
        )
        # "ctl" is refused only as a tenant: anywhere else it is a fine id.
        ids = HOSTILE_IDS if field == "tenant" else [i for i in HOSTILE_IDS if i != "ctl"]
        body[field] = draw(st.sampled_from(ids) | st.text(min_size=65, max_size=80))
        data = json.dumps(body).encode()
    elif how == "mismatch":  # a valid body naming another host: impersonation
        body["host"] = "h2"
        data = json.dumps(body).encode()
    elif how == "wrong_type":
        body[draw(st.sampled_from(["sent_at" if kind != "evt" else "ts", "msg"]))] = draw(
            st.sampled_from(["x", None, [], {"a": 1}])
        )
        data = json.dumps(body).encode()
    elif how == "other_kind":
        data = json.dumps(valid_body("lc" if kind != "lc" else "hb", "h1")).encode()
    else:
        subject = with_token(subject, draw(st.sampled_from(HOSTILE_TOKENS)))
        data = json.dumps(body).encode()
    return kind, subject, data


def stored_rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM events")]


def as_event(row: dict[str, Any]) -> Event:
    """A stored row back into an Event, validated like one off the wire."""
    return msgspec.convert(
        {
            "tenant": row["tenant"],
            "host": row["host"],
            "session": row["session"],
            "boot_id": row["boot_id"],
            "seq": row["seq"],
            "ts": row["ts"],
            "event_type": row["event_type"],
            "summary": row["summary"],
            "tags": json.loads(row["tags"]),
            "payload": json.loads(row["payload_json"]),
            "severity": row["severity"],
        },
        Event,
    )


def counters(fleet: Fleet) -> dict[str, int]:
    result = fleet.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["counters"]


def seen(fleet: Fleet) -> dict[str, int]:
    got = counters(fleet)
    got["malformed_or_superseded_heartbeats"] = got.get("malformed_heartbeats", 0) + got.get(
        "heartbeats_superseded", 0
    )
    return got


def throw_at(
    fleet: Fleet, cases: st.SearchStrategy[tuple[str, str, bytes]], n: int
) -> Counter[str]:
    controller = fleet.start_controller(fleet.controller_config([TENANT]))
    sent: Counter[str] = Counter()
    with start_blocking_portal() as portal:
        nc = portal.call(functools.partial(nats.connect, fleet.nats.url))
        js = nc.jetstream()

        @settings(
            max_examples=n,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(case=cases)
        def throw(case: tuple[str, str, bytes]) -> None:
            kind, subject, data = case
            if kind == "evt":  # acked: the stream holds it before we count it as sent
                try:
                    portal.call(functools.partial(js.publish, subject, data, timeout=5))
                except APIError:  # refused by the stream itself (max_msg_size)
                    sent["evt_refused"] += 1
                    return
            else:
                portal.call(nc.publish, subject, data)
            sent[kind] += 1
            assert controller.popen is not None and controller.popen.poll() is None

        throw()
        portal.call(nc.flush)
        portal.call(nc.close)
    return sent


def test_hostile_payloads_are_counted_and_never_stored(fleet: Fleet) -> None:
    started = time.monotonic()
    sent = throw_at(fleet, hostile_cases(), 120)
    assert sent["evt_refused"] == 0
    want = {
        # A heartbeat superseded by a newer one on its subject before it was looked at is
        # counted as superseded, not malformed (docs/architecture.md, *Heartbeat intake*);
        # hostile ones sent back to back on one subject may be read in one batch.
        "malformed_or_superseded_heartbeats": sent["hb"],
        "malformed_lifecycle": sent["lc"],
        "invalid_events": sent["evt"],
    }
    got: dict[str, int] = {}

    def all_counted() -> bool:
        now = seen(fleet)
        got.update({k: now.get(k, 0) for k in want})
        return got == want

    try:
        wait_for(all_counted, timeout=20)
    except AssertionError:  # the counts of the last poll, not of the first
        raise AssertionError(f"within 20 s: want {want}, got {got}") from None
    assert fleet.ps() == []  # nothing hostile became a host
    rows = stored_rows(fleet.tmp / "controller" / "events.db")
    events = [as_event(r) for r in rows]  # raises if any stored row is not a valid Event
    elapsed = int(time.monotonic() - started) + 1
    from_stream = [
        r
        for r, e in zip(rows, events, strict=True)
        if e.event_type == "validation_error" and e.payload["reason"] == "invalid_event"
    ]
    assert len(from_stream) == sent["evt"]
    # Refused heartbeats and notices become validation_error events too, but rate-limited:
    # at most one per (host, kind) per 10 s window.
    per_slot = Counter(
        (e.host, e.payload["reason"])
        for e in events
        if e.payload.get("reason") in ("invalid_hb", "invalid_lc")
    )
    assert all(n <= 1 + elapsed // 10 for n in per_slot.values()), per_slot
    assert all(e.tenant == TENANT for e in events)

    # And nothing more: one marker sent after everything else is counted as exactly one more
    # (the controller takes messages in the order the server received them).
    async def marker() -> None:
        nc = await nats.connect(fleet.nats.url)
        await nc.publish(subject_for("hb", "h1"), b"marker: not a heartbeat")
        await nc.flush()
        await nc.close()

    anyio.run(marker)
    wait_for(
        lambda: seen(fleet)["malformed_or_superseded_heartbeats"] >= sent["hb"] + 1,
        timeout=10,
        what="the marker counted",
    )
    assert seen(fleet)["malformed_or_superseded_heartbeats"] == sent["hb"] + 1


@st.composite
def oversize_cases(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """Messages valid in every way but size: each over its subject's limit."""
    kind = draw(st.sampled_from(["lc", "evt"]))
    body = valid_body(kind, "h1")
    pad = "x" * (PAYLOAD_LIMITS[subjects.Kind(kind)] + draw(st.integers(1, 4096)))
    if kind == "evt":
        body["payload"] = {"pad": pad}
    else:
        body["agent_version"] = pad
    return kind, subject_for(kind, "h1"), json.dumps(body).encode()


def test_oversize_messages_are_rejected_and_counted(fleet: Fleet) -> None:
    sent = throw_at(fleet, oversize_cases(), 10)
    wait_for(
        lambda: counters(fleet).get("malformed_lifecycle", 0) == sent["lc"],
        timeout=10,
        what="oversize lifecycle notices counted",
    )
    rows = stored_rows(fleet.tmp / "controller" / "events.db")
    assert all(len(r["payload_json"]) < PAYLOAD_LIMITS[subjects.Kind.EVT] for r in rows)
