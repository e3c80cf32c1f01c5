"""Reports over a store seeded with a known fortnight: the numbers are worked out by hand
below (not by the code under test), and the same store renders to the same bytes."""

from __future__ import annotations

import configparser
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from controller.events.store.core import EventStore
from controller.fleet.state import HostEntry, Transition
from controller.fleet.statedb import StateDB
from controller.reports.evidence import baseline, load_inputs
from controller.reports.render import baseline_md, daily_svg, to_json, weekly_md
from controller.reports.weekly import week_range, weekly
from protocol.api import HostState
from protocol.events import Event, SourceKind, derived_boot_id
from protocol.heartbeat import SessionSnapshot

DAY = 86400.0
W47 = datetime(2026, 11, 16, tzinfo=UTC).timestamp()  # Monday of 2026-W47
W46 = W47 - 7 * DAY


class Seeder:
    def __init__(self) -> None:
        self.seqs: dict[tuple[str, str], int] = {}
        self.events: list[Event] = []

    def add(self, where: str, event_type: str, ts: float, **fields: Any) -> None:
        tenant, host, session = where.split("/")
        rule = fields.pop("synth", None)
        if rule is not None:
            # Synthesized: seq 0, key synth:<rule>:..., system, tagged (as synthesis makes them).
            key = f"synth:{rule}:{where}:{len(self.events)}"
            fields.update(
                seq=0,
                boot_id=derived_boot_id(key),
                idempotency_key=key,
                tags=["synthesized"],
                source_kind=SourceKind.SYSTEM,
            )
        else:
            boot = (tenant, host)
            seq = self.seqs[boot] = self.seqs.get(boot, 0) + fields.pop("skip", 0) + 1
            fields.setdefault("seq", seq)
            fields.setdefault("boot_id", "b1")
        self.events.append(
            Event(
                tenant=tenant,
                host=host,
                session=session,
                ts=ts,
                event_type=event_type,
                summary=f"{event_type} on {where}",
                **fields,
            )
        )


SYSTEM, OPERATOR = SourceKind.SYSTEM, SourceKind.OPERATOR


def fortnight() -> list[Event]:
    s = Seeder()
    c, r, w, a, g = (
        "acme/h1/coder",
        "acme/h1/reviewer",
        "acme/h2/worker",
        "beta/b1/agent",
        "beta/b1/ghost",
    )
    # -- 2026-W46, the week before ---------------------------------------------------------
    s.add(c, "run.completed", W46 + 10, run_id="p1")
    s.add(c, "run.error", W46 + 2 * DAY, run_id="p2")
    s.add(a, "run.completed", W46 + 3 * DAY, run_id="p3")
    s.add(r, "run.cancelled", W46 + 4 * DAY, run_id="p4", payload={"latency_ms": 300})
    s.add(
        w, "validation_error", W46 + 4 * DAY, source_kind=SYSTEM, payload={"reason": "invalid_json"}
    )
    s.add(
        c,
        "command",
        W46 + 5 * DAY,
        source_kind=OPERATOR,
        payload={"verb": "cancel", "outcome": "ok", "round_trip_ms": 100},
    )
    for i in range(3):
        s.add(
            c, "session.state", W46 + 5 * DAY + i, source_kind=SYSTEM, operator_action_required=True
        )
    # -- 2026-W47 -----------------------------------------------------------------------------
    s.add(c, "run.started", W47 + 10, run_id="r1")
    s.add(c, "run.completed", W47 + 20, run_id="r1", payload={"status": "ok"})
    s.add(c, "run.started", W47 + DAY, run_id="r2")
    s.add(c, "run.completed", W47 + DAY + 30, run_id="r2", synth="run.completed")
    s.add(c, "run.completed", W47 + DAY + 40, run_id="r2")  # the agent's own, late
    s.add(c, "tool_call", W47 + DAY + 50)
    s.add(c, "tool_result", W47 + DAY + 60, synth="tool_result")
    s.add(c, "tool_result", W47 + 2 * DAY)
    s.add(r, "run.cancelled", W47 + 2 * DAY + 1, run_id="r3", payload={"latency_ms": 120})
    s.add(r, "run.cancelled", W47 + 2 * DAY + 2, run_id="r4")  # no latency
    s.add(r, "run.error", W47 + 3 * DAY, run_id="r5")
    s.add(w, "run.completed", W47 + 3 * DAY + 1)  # no run_id, no payload
    s.add(w, "run.completed", W47 + 4 * DAY, synth="run.completed")
    s.add(
        w,
        "validation_error",
        W47 + 4 * DAY + 1,
        source_kind=SYSTEM,
        payload={"reason": "invalid_json"},
    )
    s.add(
        w,
        "validation_error",
        W47 + 4 * DAY + 2,
        source_kind=SYSTEM,
        payload={"reason": "missing_field:summary"},
    )
    s.add(w, "validation_error", W47 + 5 * DAY, source_kind=SYSTEM)  # no reason
    s.add(
        c,
        "command",
        W47 + 5 * DAY + 1,
        source_kind=OPERATOR,
        payload={"verb": "cancel", "outcome": "ok", "round_trip_ms": 40},
    )
    s.add(
        c,
        "command",
        W47 + 5 * DAY + 2,
        source_kind=OPERATOR,
        payload={"verb": "send", "outcome": "refused", "round_trip_ms": 250},
    )
    s.add(c, "command", W47 + 5 * DAY + 3, source_kind=OPERATOR, payload={"verb": "send"})
    s.add(c, "session.state", W47 + 6 * DAY, source_kind=SYSTEM, operator_action_required=True)
    s.add(c, "stale", W47 + 6 * DAY + 1, source_kind=SYSTEM, operator_action_required=True)
    s.add(a, "run.completed", W47 + 6 * DAY + 2, run_id="r6")
    s.add(a, "run.cancelled", W47 + 6 * DAY + 3, run_id="r7", payload={"latency_ms": 900}, skip=1)
    s.add(g, "run.started", W47 + 6 * DAY + 4, run_id="r8")
    s.add(g, "run.error", W47 + 6 * DAY + 5, run_id="r8", operator_action_required=True)
    # -- outside both weeks -------------------------------------------------------------------
    s.add(c, "run.completed", W46 - 1, run_id="old")
    s.add(c, "run.completed", W47 + 7 * DAY, run_id="new")
    return s.events


def host(tenant: str, name: str, sessions: list[tuple[str, str | None]]) -> HostEntry:
    return HostEntry(
        tenant=tenant, host=name, boot_id="b1", seq=1, interval_s=0.5, agent_version="t",
        state=HostState.OK, state_since=W46, last_seen=W46, last_seen_mono=0.0,
        sessions=[SessionSnapshot(name=n, runtime_configured=rt, runtime_observed=None)
                  for n, rt in sessions],
    )  # fmt: skip


HOSTS = [
    host("acme", "h1", [("coder", "claude"), ("reviewer", "codex")]),
    host("acme", "h2", [("worker", "stub")]),
    host("beta", "b1", [("agent", "pi")]),  # ghost is not in the snapshot: runtime unknown
]
DOWN, OK, SUSPECT = HostState.DOWN, HostState.OK, HostState.SUSPECT
TRANSITIONS = [
    Transition("acme", "h1", OK, DOWN, W46 - 3 * DAY + 7 * DAY, "missed heartbeats", 4.0),
    Transition("acme", "h1", DOWN, OK, W46 + 4 * DAY + 50, "heartbeat"),
    Transition("acme", "h2", OK, SUSPECT, W47 + DAY, "missed heartbeats", 1.6),
    Transition("acme", "h2", SUSPECT, DOWN, W47 + DAY + 10, "missed heartbeats", 3.2),
    Transition("acme", "h2", DOWN, OK, W47 + DAY + 100, "heartbeat"),
    Transition("beta", "b1", OK, DOWN, W47 + 5 * DAY, "missed heartbeats", 6.5),
]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[EventStore, StateDB]]:
    db = StateDB(tmp_path / "fleet.db")
    db.open()
    with EventStore(tmp_path / "events.db") as store:
        yield store, db
    db.close()


@pytest.fixture
def seeded(stores: tuple[EventStore, StateDB]) -> tuple[EventStore, StateDB]:
    store, db = stores
    store.insert_many(fortnight(), 1.0)
    db.save(HOSTS, TRANSITIONS)
    return store, db


def rows(listing: list[Any]) -> dict[str, tuple[Any, ...]]:
    fields = ("runs", "completed", "errored", "cancelled")
    fields += ("completion_rate", "error_rate", "cancel_rate")
    return {r.key: tuple(getattr(r, f) for f in fields) for r in listing}


def test_week_of_known_events_gives_the_expected_numbers(
    seeded: tuple[EventStore, StateDB],
) -> None:
    store, db = seeded
    r = baseline(load_inputs(store, db, None), W47, W47 + 7 * DAY, None)
    # Runs: r1, r2 (one run: the late real end wins), r6, and two without run_id completed;
    # r3, r4, r7 cancelled; r5, r8 errored.
    assert rows([r.totals]) == {"all": (10, 5, 2, 3, 0.5, 0.2, 0.3)}
    assert rows(r.by_tenant) == {
        "acme": (7, 4, 1, 2, 0.5714, 0.1429, 0.2857),
        "beta": (3, 1, 1, 1, 0.3333, 0.3333, 0.3333),
    }
    assert [x.key for x in r.by_host] == ["acme/h1", "beta/b1", "acme/h2"]  # most runs first
    assert rows(r.by_host) == {
        "acme/h1": (5, 2, 1, 2, 0.4, 0.2, 0.4),
        "beta/b1": (3, 1, 1, 1, 0.3333, 0.3333, 0.3333),
        "acme/h2": (2, 2, 0, 0, 1.0, 0.0, 0.0),
    }
    assert rows(r.by_runtime) == {
        "claude": (2, 2, 0, 0, 1.0, 0.0, 0.0),
        "codex": (3, 0, 1, 2, 0.0, 0.3333, 0.6667),
        "stub": (2, 2, 0, 0, 1.0, 0.0, 0.0),
        "pi": (2, 1, 0, 1, 0.5, 0.0, 0.5),
        "unknown": (1, 0, 1, 0, 0.0, 1.0, 0.0),
    }
    assert rows(r.by_session)["beta/b1/ghost"] == (1, 0, 1, 0, 0.0, 1.0, 0.0)
    assert (r.cancel_latency_ms.count, r.cancel_latency_ms.p50, r.cancel_latency_ms.p95) == (
        2,
        120,
        900,
    )
    rtt = r.command_round_trip_ms
    assert (rtt.count, rtt.p50, rtt.p95) == (2, 40, 250)
    c = r.compliance
    assert c.run_completions_emitted == 4 and c.run_completions_synthesized == 2
    assert c.run_completions_emitted_share == 0.6667
    assert (c.tool_results_emitted, c.tool_results_synthesized, c.tool_results_emitted_share) == (
        1,
        1,
        0.5,
    )
    listings = ("validation_errors", "events_by_type", "events_by_source")
    listings += ("synthesized_by_rule", "commands", "operator_action_sessions")
    counts = {k: {x.key: x.count for x in getattr(r, k)} for k in listings}
    assert counts == {
        "validation_errors": {"invalid_json": 1, "missing_field:summary": 1, "unknown": 1},
        "events_by_type": {
            "run.started": 3, "run.completed": 6, "tool_call": 1, "tool_result": 2,
            "run.cancelled": 3, "run.error": 2, "validation_error": 3, "command": 3,
            "session.state": 1, "stale": 1,
        },
        "events_by_source": {"agent": 14, "system": 8, "operator": 3},
        "synthesized_by_rule": {"run.completed": 2, "tool_result": 1},
        "commands": {"cancel:ok": 1, "send:refused": 1, "send:unknown": 1},
        "operator_action_sessions": {"acme/h1/coder": 2, "beta/b1/ghost": 1},
    }  # fmt: skip
    assert r.events == 25
    assert r.sequence_gaps == 1 and [(g.tenant, g.host, g.missing) for g in r.gap_boots] == [
        ("beta", "b1", 1)
    ]
    assert [(d.host, d.down_at, d.up_at, d.duration_s, d.detection_s) for d in r.host_down] == [
        ("h2", W47 + DAY + 10, W47 + DAY + 100, 90.0, 3.2),
        ("b1", W47 + 5 * DAY, None, None, 6.5),
    ]
    assert (r.detection_s.p50, r.detection_s.p95) == (3.2, 6.5)


def test_tenant_filter_keeps_only_that_tenant(seeded: tuple[EventStore, StateDB]) -> None:
    store, db = seeded
    r = baseline(load_inputs(store, db, "acme"), W47, W47 + 7 * DAY, "acme")
    assert rows([r.totals]) == {"all": (7, 4, 1, 2, 0.5714, 0.1429, 0.2857)}
    assert [x.key for x in r.by_tenant] == ["acme"]
    assert r.sequence_gaps == 0 and [d.host for d in r.host_down] == ["h2"]


def test_weekly_sets_each_figure_beside_the_week_before(seeded: tuple[EventStore, StateDB]) -> None:
    store, db = seeded
    w = weekly(load_inputs(store, db, None), "2026-W47", 0.0, None)
    assert (w.week, w.previous_week, w.since, w.until) == (
        "2026-W47",
        "2026-W46",
        W47,
        W47 + 7 * DAY,
    )
    trend = {(t.group, t.key, t.metric): (t.current, t.previous, t.change) for t in w.trends}
    assert trend[("total", "all", "runs")] == (10, 4, 6)
    assert trend[("total", "all", "completion_rate")] == (0.5, 0.5, 0.0)
    assert trend[("total", "all", "cancel_latency_p50_ms")] == (120, 300, -180)
    assert trend[("total", "all", "host_down_periods")] == (2, 1, 1)
    assert trend[("runtime", "claude", "completion_rate")] == (1.0, 0.5, 0.5)
    assert trend[("runtime", "pi", "runs")] == (2, 1, 1)
    assert trend[("runtime", "unknown", "completion_rate")] == (0.0, None, None)
    assert trend[("host", "acme/h2", "runs")] == (2, 0, 2)
    assert trend[("event_type", "session.state", "count")] == (1, 3, -2)
    assert trend[("event_type", "tool_call", "count")] == (1, 0, 1)
    assert [c.key for c in w.new_validation_reasons] == ["missing_field:summary", "unknown"]
    assert [(t.key, t.current, t.previous, t.change) for t in w.operator_sessions] == [
        ("acme/h1/coder", 2, 3, -1),
        ("beta/b1/ghost", 1, 0, 1),
    ]
    assert w.daily_runs == [1, 1, 2, 2, 1, 0, 3]
    assert w.previous_daily_runs == [1, 0, 1, 1, 1, 0, 0]


def render_all(store: EventStore, db: StateDB) -> list[str]:
    b = baseline(load_inputs(store, db, None), None, None, None)
    w = weekly(load_inputs(store, db, None), "2026-W47", 0.0, None)
    return [to_json(b), baseline_md(b), to_json(w), weekly_md(w, "c.svg"), daily_svg(w)]


def test_same_store_renders_the_same_bytes(
    seeded: tuple[EventStore, StateDB], tmp_path: Path
) -> None:
    store, db = seeded
    first = render_all(store, db)
    assert render_all(store, db) == first
    # A second store fed the same events in the same order: the same bytes too.
    other_db = StateDB(tmp_path / "again" / "fleet.db")
    other_db.open()
    with EventStore(tmp_path / "again" / "events.db") as other:
        other.insert_many(fortnight(), 1.0)
        other_db.save(HOSTS, TRANSITIONS)
        assert render_all(other, other_db) == first
    other_db.close()
    assert json.loads(first[0])["totals"]["runs"] == 16  # 4 + 10 + the two outside both weeks
    svg = ElementTree.fromstring(first[4])  # well-formed XML
    assert svg.tag.endswith("svg") and first[4].count("<rect") == 14


def test_empty_store_gives_a_valid_report(stores: tuple[EventStore, StateDB]) -> None:
    store, db = stores
    b = baseline(load_inputs(store, db, None), None, None, None)
    assert (b.events, b.totals.runs, b.totals.completion_rate, b.cancel_latency_ms.p50) == (
        0,
        0,
        None,
        None,
    )
    assert json.loads(to_json(b))["compliance"]["run_completions_emitted_share"] is None
    assert "runs: 0" in baseline_md(b)
    w = weekly(load_inputs(store, db, None), None, W47 + 3 * DAY, None)
    assert w.week == "2026-W46" and w.daily_runs == [0] * 7  # the last full week
    assert "# Fleet weekly report 2026-W46" in weekly_md(w)
    assert json.loads(to_json(w))["trends"][0]["change"] == 0


def test_one_event_with_no_optional_fields(stores: tuple[EventStore, StateDB]) -> None:
    store, db = stores
    store.insert_many(
        [Event(tenant="t", host="h", session="s", boot_id="b", seq=1, ts=W47 + 5,
               event_type="run.completed", summary="")],
        1.0,
    )  # fmt: skip
    b = baseline(load_inputs(store, db, None), None, None, None)
    assert rows(b.by_runtime) == {"unknown": (1, 1, 0, 0, 1.0, 0.0, 0.0)}
    assert b.compliance.run_completions_emitted_share == 1.0
    # A week with no week before it: figures stand alone, changes are absent or from zero.
    w = weekly(load_inputs(store, db, None), "2026-W47", 0.0, None)
    trend = {(t.group, t.key, t.metric): (t.current, t.previous, t.change) for t in w.trends}
    assert trend[("total", "all", "runs")] == (1, 0, 1)
    assert trend[("total", "all", "completion_rate")] == (1.0, None, None)
    assert "n/a" in weekly_md(w)


def test_week_names() -> None:
    assert week_range("2026-W47", 0.0) == ("2026-W47", W47, W47 + 7 * DAY)
    assert week_range("2026-w01", 0.0)[0] == "2026-W01"
    assert week_range(None, W47 + 6 * DAY + 3600)[0] == "2026-W46"  # Sunday: last full week
    with pytest.raises(ValueError, match="2026-W47"):
        week_range("last week", 0.0)


def test_timer_runs_the_weekly_report_on_sunday_mornings() -> None:
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    timer = configparser.ConfigParser(interpolation=None)
    timer.read(deploy / "fleet-report.timer")
    assert timer["Timer"]["OnCalendar"] == "Sun *-*-* 04:00:00"
    assert timer["Timer"]["Unit"] == "fleet-report.service"
    service = configparser.ConfigParser(interpolation=None, strict=False)
    service.read(deploy / "fleet-report.service")
    assert service["Service"]["Type"] == "oneshot"
    command = service["Service"]["ExecStart"].split()
    assert command[2:5] == ["report", "weekly", "--output-dir"]
