"""Metrics: our hand-written exposition read back by prometheus_client's own parser, the
HTTP endpoint on a real socket, and the whole path through a running controller."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.fleet.state import Transition
from controller.reports.metrics import FleetMetrics, parse_addr, serve_metrics
from protocol import encode, subjects
from protocol.api import HostState
from protocol.events import Event, SourceKind
from tests.support.fleet import Fleet, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(exposition: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def event(event_type: str, seq: int, **fields: Any) -> Event:
    fields.setdefault("tenant", "acme")
    return Event(
        host="h1", session="coder", boot_id="b1", seq=seq, ts=1.0, event_type=event_type,
        summary=event_type, **fields,
    )  # fmt: skip


def test_counters_and_histograms_move_with_matching_events() -> None:
    m = FleetMetrics(
        runtime_of=lambda t, h, s: "claude" if s == "coder" else "unknown",
        external=lambda: {"heartbeats": 7, "malformed_heartbeats": 2, "sequence_gaps": 0},
    )
    before = samples(m.render_prometheus())
    assert (
        value(before, "fleet_runs_total", tenant="acme", runtime="claude", outcome="completed") == 0
    )
    m.observe_stored(
        [
            event("run.completed", 1),
            event("run.completed", 2),  # a duplicate (id None): counted once, when first stored
            event("run.cancelled", 3, payload={"latency_ms": 400}),
            event("run.error", 4, tenant="beta"),
            event("validation_error", 5, source_kind=SourceKind.SYSTEM,
                  payload={"reason": 'missing_field:"summary"\n'}),
            event("tool_result", 0, source_kind=SourceKind.SYSTEM, tags=["synthesized"],
                  idempotency_key="synth:tool_result:acme:h1:coder:k"),
            event("command", 6, source_kind=SourceKind.OPERATOR,
                  payload={"verb": "cancel", "outcome": "ok", "round_trip_ms": 30}),
            event("made.up", 7),
        ],
        [1, None, 3, 4, 5, 6, 7, 8],
    )  # fmt: skip
    m.observe_heartbeat(0.2)
    m.observe_heartbeat(-1.0)  # host clock ahead: counted as no lag
    m.observe_transition(Transition("acme", "h1", HostState.SUSPECT, HostState.DOWN, 1.0, "x", 3.4))
    m.observe_transition(Transition("acme", "h1", HostState.DOWN, HostState.OK, 2.0, "hb"))
    found = samples(m.render_prometheus())
    runs = "fleet_runs_total"
    assert value(found, runs, tenant="acme", runtime="claude", outcome="completed") == 1
    assert value(found, runs, tenant="acme", runtime="claude", outcome="cancelled") == 1
    assert value(found, runs, tenant="beta", runtime="claude", outcome="errored") == 1
    events = "fleet_events_total"
    assert value(found, events, event_type="run.completed", source_kind="agent") == 1
    assert value(found, events, event_type="other", source_kind="agent") == 1
    assert value(found, events, event_type="command", source_kind="operator") == 1
    # Quotes, backslashes and newlines in a label survive the round trip.
    reason = 'missing_field:"summary"\n'
    assert value(found, "fleet_validation_errors_total", reason=reason) == 1
    assert value(found, "fleet_synthesized_events_total", rule="tool_result") == 1
    assert value(found, "fleet_commands_total", verb="cancel", outcome="ok") == 1
    lat = "fleet_cancel_latency_seconds"
    assert (value(found, f"{lat}_count"), value(found, f"{lat}_sum")) == (1, 0.4)
    assert value(found, f"{lat}_bucket", le="0.25") == 0
    assert value(found, f"{lat}_bucket", le="0.5") == 1
    assert value(found, f"{lat}_bucket", le="+Inf") == 1
    assert value(found, "fleet_command_round_trip_seconds_sum") == pytest.approx(0.03)
    assert value(found, "fleet_heartbeat_lag_seconds_count") == 2
    assert value(found, "fleet_heartbeat_lag_seconds_bucket", le="0.01") == 1
    det = "fleet_dead_host_detection_seconds"
    assert (value(found, f"{det}_count"), value(found, f"{det}_sum")) == (1, 3.4)
    assert value(found, "fleet_host_transitions_total", new_state="ok") == 1
    assert value(found, "fleet_heartbeats_total") == 7
    assert value(found, "fleet_malformed_heartbeats_total") == 2
    assert value(found, "fleet_sequence_gaps") == 0
    snap = m.snapshot()
    assert snap["fleet_heartbeats_total"] == 7
    assert snap["fleet_cancel_latency_seconds"][0]["count"] == 1
    json.dumps(snap)  # plain JSON all the way down


def test_a_runaway_label_is_capped() -> None:
    m = FleetMetrics()
    for i in range(1100):
        m.observe_event(event("validation_error", i + 1, payload={"reason": f"r{i}"}))
    found = samples(m.render_prometheus())
    reasons = [k for k in found if k[0] == "fleet_validation_errors_total"]
    assert len(reasons) == 1001
    assert value(found, "fleet_validation_errors_total", reason="_other") == 100


async def get(port: int, path: str) -> tuple[str, str]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while True:
            try:
                data += await stream.receive()
            except anyio.EndOfStream:
                break
    head, _, body = data.decode().partition("\r\n\r\n")
    return head, body


def test_http_endpoint_serves_the_exposition() -> None:
    m = FleetMetrics()

    async def main() -> tuple[tuple[str, str], tuple[str, str], tuple[str, str]]:
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_metrics, m, "127.0.0.1:0")
            first = await get(port, "/metrics")
            m.observe_event(event("run.completed", 1))
            second = await get(port, "/metrics")
            missing = await get(port, "/")
            tg.cancel_scope.cancel()
        return first, second, missing

    (head, body), (_, body2), (head404, _) = anyio.run(main)
    assert head.startswith("HTTP/1.1 200") and "version=0.0.4" in head
    runs = ("fleet_runs_total", "acme", "unknown", "completed")
    key = (runs[0], (("outcome", runs[3]), ("runtime", runs[2]), ("tenant", runs[1])))
    assert key not in samples(body) and samples(body2)[key] == 1
    assert head404.startswith("HTTP/1.1 404")


def test_metrics_address_must_name_a_port() -> None:
    assert parse_addr("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_addr(":9464") == ("0.0.0.0", 9464)
    assert parse_addr("[::1]:9464") == ("::1", 9464)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_addr("localhost")


# -- through a running controller --------------------------------------------------------------
def publish(url: str, events: list[Event]) -> None:
    async def main() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            for e in events:
                subject = subjects.event(e.tenant, e.host, e.session, e.event_type)
                msg_id = subjects.msg_id(e.host, e.boot_id, e.seq)
                await js.publish(subject, encode(e), headers={"Nats-Msg-Id": msg_id})
        finally:
            await nc.close()

    anyio.run(main)


def metrics_json(fleet: Fleet) -> dict[str, Any]:
    result = fleet.cli("metrics", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def total(snapshot: dict[str, Any], name: str, **labels: str) -> float:
    return sum(
        s["value"]
        for s in snapshot[name]
        if all(s["labels"].get(k) == v for k, v in labels.items())
    )


W47 = datetime(2026, 11, 16, tzinfo=UTC).timestamp()  # Monday of 2026-W47


def test_controller_counts_stored_events_and_posts_the_weekly_report(
    fleet: Fleet, tmp_path: Path
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    fleet.start_controller(fleet.controller_config([tenant]))
    before = metrics_json(fleet)
    assert total(before, "fleet_runs_total") == 0
    base = {"tenant": tenant, "host": "h1", "session": "w", "boot_id": "b1"}
    publish(
        fleet.nats.url,
        [
            Event(**base, seq=1, ts=W47 + 60, event_type="run.completed", summary="done",
                  run_id="r1"),
            Event(**base, seq=2, ts=W47 + 70, event_type="run.cancelled", summary="stop",
                  run_id="r2", payload={"latency_ms": 250}),
            Event(**base, seq=3, ts=W47 + 80, event_type="validation_error", summary="bad",
                  source_kind=SourceKind.SYSTEM, payload={"reason": "invalid_json"}),
        ],
    )  # fmt: skip
    after = wait_for(
        lambda: (m := metrics_json(fleet)) and total(m, "fleet_events_total") >= 3 and m,
        what="three events counted",
    )
    assert total(after, "fleet_runs_total", tenant=tenant, outcome="completed") == 1
    assert total(after, "fleet_runs_total", tenant=tenant, outcome="cancelled") == 1
    assert total(after, "fleet_validation_errors_total", reason="invalid_json") == 1
    assert after["fleet_cancel_latency_seconds"][0]["sum"] == 0.25
    text = fleet.cli("metrics")
    assert text.returncode == 0, text.stderr
    assert value(samples(text.stdout), "fleet_heartbeats_total") == after["fleet_heartbeats_total"]

    # The baseline: the same store gives the same bytes.
    args = ("report", "baseline", "--tenant", tenant, "--format", "json")
    first, second = fleet.cli(*args), fleet.cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert json.loads(first.stdout)["totals"]["runs"] == 2

    out = tmp_path / "reports"
    out.mkdir()
    weekly = fleet.cli("report", "weekly", "--week", "2026-W47", "--tenant", tenant, "-o", str(out))
    assert weekly.returncode == 0, weekly.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "fleet-weekly-2026-47.json",
        "fleet-weekly-2026-47.md",
        "fleet-weekly-2026-47.svg",
    ]
    report = json.loads((out / "fleet-weekly-2026-47.json").read_text())
    assert report["current"]["totals"]["runs"] == 2 and report["previous_week"] == "2026-W46"
    assert "![runs per day" in (out / "fleet-weekly-2026-47.md").read_text()

    def found() -> list[dict[str, Any]]:
        result = fleet.cli("events", "search", "--type", "report.weekly", "--json")
        return [json.loads(line) for line in result.stdout.splitlines()]

    posted = wait_for(found, what="report.weekly stored")
    assert len(posted) == 1
    assert posted[0]["idempotency_key"] == f"report.weekly:{tenant}:2026-W47"
    assert posted[0]["source_kind"] == "system" and posted[0]["session"] == "reports"
    assert posted[0]["payload"]["totals"]["runs"]["current"] == 2
    by_word = fleet.cli("events", "search", "weekly", "--tenant", tenant, "--json")
    assert [json.loads(x)["id"] for x in by_word.stdout.splitlines()] == [posted[0]["id"]]
    # Running it again does not post a second digest.
    again = fleet.cli("report", "weekly", "--week", "2026-W47", "--tenant", tenant, "-o", str(out))
    assert again.returncode == 0, again.stderr
    wait_for(lambda: total(metrics_json(fleet), "fleet_events_total", event_type="report.weekly"),
             what="the digest counted")  # fmt: skip
    assert len(found()) == 1

    # The controller answered "no": exit 1 (2 is for a controller that cannot be reached).
    bad_week = fleet.cli("report", "weekly", "--week", "nope", "-o", str(out))
    assert bad_week.returncode == 1 and "2026-W47" in bad_week.stderr
    assert len(bad_week.stderr.strip().splitlines()) == 1
    no_dir = fleet.cli("report", "weekly", "-o", str(tmp_path / "absent"))
    assert no_dir.returncode == 2 and "not a directory" in no_dir.stderr
    written = tmp_path / "baseline.md"
    md = fleet.cli("report", "baseline", "--tenant", tenant, "-o", str(written))
    assert md.returncode == 0, md.stderr
    assert "- events: 4; runs: 2" in written.read_text()  # the three, and the digest
