"""The synthesis engine: events inferred when agents stay silent, and only then.

Time is always a parameter (event ts, snapshot/tick ``now``), so nothing here sleeps.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from controller.events.store.core import EventStore
from controller.events.synthesis.engine import LinkRequest, SynthesisConfig, Synthesizer
from protocol.codec import decode, encode
from protocol.events import Event, EventLink, LinkType, Severity, SourceKind
from protocol.heartbeat import SessionSnapshot, SessionState

T, H, S = "acme", "h1", "s1"
_seqs: Iterator[int] = itertools.count(1)


def ev(event_type: str, ts: float, **fields: Any) -> Event:
    """An event as the host agent publishes it; seq counts up so default keys differ."""
    fields.setdefault("tenant", T)
    fields.setdefault("host", H)
    fields.setdefault("session", S)
    fields.setdefault("boot_id", "b1")
    fields.setdefault("seq", next(_seqs))
    return Event(ts=ts, event_type=event_type, summary=event_type, **fields)


def screen(old: str, new: str, ts: float, run_id: str | None = None, **fields: Any) -> Event:
    fields.setdefault("source_kind", SourceKind.SYSTEM)
    return ev(
        "session.state",
        ts,
        payload={"old": old, "new": new, "rule": "r", "line": "l"},
        run_id=run_id,
        **fields,
    )


def snap(
    state: SessionState, state_since: float | None, last_output_at: float | None
) -> SessionSnapshot:
    return SessionSnapshot(
        name=S,
        runtime_configured="stub",
        runtime_observed="stub",
        state=state,
        state_since=state_since,
        last_output_at=last_output_at,
    )


def feed(synth: Synthesizer, *events: Event) -> tuple[list[Event], list[LinkRequest]]:
    out: list[Event] = []
    links: list[LinkRequest] = []
    for event in events:
        new, more = synth.on_event(event)
        out += new
        links += more
    return out, links


def supersedes(real: Event, synthesized: Event) -> LinkRequest:
    assert real.idempotency_key is not None and synthesized.idempotency_key is not None
    return LinkRequest(real.idempotency_key, synthesized.idempotency_key, LinkType.SUPERSEDES)


# -- rule 1: run.completed ---------------------------------------------------------------------


def test_run_completed_is_synthesized_after_the_grace_period_when_the_agent_is_silent() -> None:
    synth = Synthesizer()
    feed(synth, screen("idle", "working", 100.0, run_id="r1"))
    idle = screen("working", "idle", 160.0, run_id="r1")
    assert feed(synth, idle) == ([], [])
    assert synth.tick(169.9) == []  # still within the 10 s grace
    [event] = synth.tick(170.0)
    key = "synth:run.completed:acme:h1:s1:run=r1"
    assert (event.event_type, event.source_kind, event.provenance) == (
        "run.completed",
        SourceKind.SYSTEM,
        "screen:working->idle",
    )
    assert (event.tenant, event.host, event.session, event.run_id) == (T, H, S, "r1")
    assert event.idempotency_key == key
    assert event.boot_id == "s" + hashlib.sha256(key.encode()).hexdigest()[:15]
    assert (event.seq, event.ts, event.tags) == (0, 160.0, ["synthesized"])
    assert event.payload == {
        "old": "working",
        "new": "idle",
        "working_since": 100.0,
        "idle_at": 160.0,
        "grace_s": 10.0,
        "signal_key": f"h1:b1:{idle.seq}",
    }
    assert "r1" in event.summary and "10s" in event.summary
    assert synth.counters == {"run.completed": 1, "stale": 0, "tool_result": 0}
    assert synth.tick(1000.0) == []  # once only


def test_run_completed_is_not_synthesized_when_the_agent_emitted_it_before_the_screen_idled() -> (
    None
):
    synth = Synthesizer()
    feed(
        synth,
        screen("idle", "working", 100.0, run_id="r1"),
        ev("run.completed", 158.0, payload={"run_id": "r1"}, idempotency_key="r1:9"),
        screen("working", "idle", 160.0, run_id="r1"),
    )
    assert synth.tick(1000.0) == []
    assert synth.counters["run.completed"] == 0
    assert synth.tracked == (0, 0)  # nothing left open, nothing remembered


def test_run_completed_is_not_synthesized_when_the_agent_emits_it_within_the_grace() -> None:
    synth = Synthesizer()
    feed(synth, screen("idle", "working", 100.0), screen("working", "idle", 160.0))
    synth.tick(165.0)
    # No run ids on either side: matched by session and ts >= working-since.
    assert feed(synth, ev("run.completed", 163.0)) == ([], [])
    assert synth.tick(1000.0) == []


@pytest.mark.parametrize("ending", ["run.cancelled", "run.error"])
def test_a_run_that_was_cancelled_or_failed_gets_no_made_up_completion(ending: str) -> None:
    synth = Synthesizer()
    feed(
        synth,
        screen("idle", "working", 100.0, run_id="r1"),
        ev(ending, 150.0, run_id="r1"),
        screen("working", "idle", 160.0, run_id="r1"),
    )
    assert synth.tick(1000.0) == []


def test_a_completion_of_another_run_or_from_before_the_run_does_not_count() -> None:
    synth = Synthesizer()
    feed(
        synth,
        ev("run.completed", 50.0),  # before this working period began
        screen("idle", "working", 100.0),
        screen("working", "idle", 160.0),
    )
    assert [e.idempotency_key for e in synth.tick(170.0)] == [
        "synth:run.completed:acme:h1:s1:idle@160.0"
    ]
    feed(
        synth,
        screen("idle", "working", 200.0, run_id="r2"),
        ev("run.completed", 210.0, run_id="r1"),  # a different run
        screen("working", "idle", 260.0, run_id="r2"),
        ev("run.completed", 261.0, run_id="r0"),  # nor during the grace
    )
    assert [e.idempotency_key for e in synth.tick(270.0)] == [
        "synth:run.completed:acme:h1:s1:run=r2"
    ]


@pytest.mark.parametrize("first", ["run.started", "tool_call"])
def test_the_run_id_learned_during_the_run_names_the_synthesized_completion(first: str) -> None:
    synth = Synthesizer()
    feed(
        synth,
        screen("idle", "working", 100.0),
        ev(first, 101.0, payload={"run_id": "r7"}),  # as agents emit it today
        screen("working", "idle", 160.0),
    )
    [*_, event] = synth.tick(170.0)
    assert (event.run_id, event.idempotency_key) == ("r7", "synth:run.completed:acme:h1:s1:run=r7")


def test_an_unmatched_completion_is_not_kept_for_a_later_run() -> None:
    synth = Synthesizer()
    feed(
        synth,
        screen("idle", "working", 100.0, run_id="r1"),
        ev("run.completed", 150.0, run_id="r0"),
        screen("working", "idle", 160.0, run_id="r1"),
        # The next start was lost: the end arrives with no working-since to compare against.
        screen("working", "idle", 300.0),
    )
    assert [e.idempotency_key for e in synth.tick(1000.0)] == [
        "synth:run.completed:acme:h1:s1:run=r1",
        "synth:run.completed:acme:h1:s1:idle@300.0",
    ]


def test_screen_states_claimed_by_an_agent_are_not_trusted() -> None:
    synth = Synthesizer()
    feed(
        synth,
        screen("idle", "working", 100.0, source_kind=SourceKind.AGENT),
        screen("working", "idle", 160.0, source_kind=SourceKind.AGENT),
    )
    assert synth.tick(1000.0) == []


def test_a_backlog_arriving_late_still_gets_the_full_grace_period() -> None:
    synth = Synthesizer()
    synth.tick(5000.0)  # the controller's clock is far past the events' host timestamps
    feed(synth, screen("idle", "working", 100.0), screen("working", "idle", 160.0))
    assert synth.tick(5001.0) == []  # the rest of the backlog may still carry run.completed
    assert feed(synth, ev("run.completed", 159.0)) == ([], [])
    assert synth.tick(6000.0) == []


def test_a_late_run_completed_supersedes_the_synthesized_one() -> None:
    synth = Synthesizer()
    feed(synth, screen("idle", "working", 100.0, run_id="r1"), screen("working", "idle", 160.0))
    [synthesized] = synth.tick(170.0)
    # The next run has already started when the late completion of r1 arrives.
    feed(synth, screen("idle", "working", 180.0, run_id="r2"))
    real = ev("run.completed", 159.0, run_id="r1", idempotency_key="r1:done")
    assert feed(synth, real) == ([], [supersedes(real, synthesized)])
    assert feed(synth, real) == ([], [])  # a redelivered copy asks for nothing more
    # ...and r2, which the late event did not touch, is still watched.
    feed(synth, screen("working", "idle", 240.0, run_id="r2"))
    assert [e.run_id for e in synth.tick(250.0)] == ["r2"]


# -- rule 2: stale ---------------------------------------------------------------------------


def test_stale_is_synthesized_once_when_a_working_session_stays_silent() -> None:
    synth = Synthesizer()
    working = snap(SessionState.WORKING, state_since=100.0, last_output_at=150.0)
    assert synth.on_snapshot(T, H, working, now=450.0) == []  # silent exactly 300 s
    [event] = synth.on_snapshot(T, H, working, now=455.0)
    assert event.event_type == "stale"
    assert event.provenance == "no output for 300s while working"
    assert event.idempotency_key == "synth:stale:acme:h1:s1:100.0"
    assert (event.ts, event.seq, event.severity) == (450.0, 0, Severity.WARNING)
    assert event.payload["silent_since"] == 150.0
    assert synth.on_snapshot(T, H, working, now=900.0) == []  # once per working period
    # A new working period may go stale again.
    synth.on_snapshot(T, H, snap(SessionState.IDLE, 950.0, 950.0), now=950.0)
    again = snap(SessionState.WORKING, state_since=1000.0, last_output_at=1000.0)
    [event2] = synth.on_snapshot(T, H, again, now=1400.0)
    assert event2.idempotency_key == "synth:stale:acme:h1:s1:1000.0"
    assert synth.counters["stale"] == 2


def test_stale_is_not_synthesized_while_output_flows_or_outside_working() -> None:
    synth = Synthesizer()
    for now in range(100, 2000, 50):
        flowing = snap(SessionState.WORKING, state_since=100.0, last_output_at=now - 10.0)
        assert synth.on_snapshot(T, H, flowing, now=float(now)) == []
    blocked = snap(SessionState.BLOCKED, state_since=100.0, last_output_at=100.0)
    assert synth.on_snapshot(T, H, blocked, now=5000.0) == []
    # Output from before the run began does not make the new run look stuck.
    fresh = snap(SessionState.WORKING, state_since=5000.0, last_output_at=10.0)
    assert synth.on_snapshot(T, H, fresh, now=5100.0) == []


def test_stale_is_not_synthesized_when_the_agent_emitted_its_own() -> None:
    synth = Synthesizer()
    working = snap(SessionState.WORKING, state_since=100.0, last_output_at=100.0)
    synth.on_snapshot(T, H, working, now=200.0)
    assert feed(synth, ev("stale", 390.0)) == ([], [])
    assert synth.on_snapshot(T, H, working, now=500.0) == []
    assert synth.counters["stale"] == 0


def test_an_agent_stale_seen_before_any_heartbeat_counts_for_its_period() -> None:
    synth = Synthesizer()  # e.g. just restarted: the event arrives before the first heartbeat
    feed(synth, ev("stale", 390.0))
    working = snap(SessionState.WORKING, state_since=100.0, last_output_at=100.0)
    assert synth.on_snapshot(T, H, working, now=500.0) == []


def test_an_agent_stale_from_an_earlier_period_does_not_count() -> None:
    synth = Synthesizer()
    feed(synth, ev("stale", 50.0))
    working = snap(SessionState.WORKING, state_since=100.0, last_output_at=100.0)
    assert len(synth.on_snapshot(T, H, working, now=500.0)) == 1


def test_a_late_agent_stale_supersedes_the_synthesized_one() -> None:
    synth = Synthesizer()
    working = snap(SessionState.WORKING, state_since=100.0, last_output_at=100.0)
    [synthesized] = synth.on_snapshot(T, H, working, now=500.0)
    real = ev("stale", 480.0, idempotency_key="agent-stale-1")
    assert feed(synth, real) == ([], [supersedes(real, synthesized)])


# -- rule 3: tool_result ---------------------------------------------------------------------


def test_tool_result_is_synthesized_when_the_run_completes_without_one() -> None:
    synth = Synthesizer()
    call = ev("tool_call", 110.0, run_id="r1", payload={"tool": "bash"}, idempotency_key="r1:2")
    done = ev("run.completed", 120.0, run_id="r1", idempotency_key="r1:3")
    assert feed(synth, call) == ([], [])
    [event], links = feed(synth, done)
    assert links == []
    assert event.event_type == "tool_result"
    assert event.provenance == "tool_call without tool_result before run.completed"
    assert event.idempotency_key == "synth:tool_result:acme:h1:s1:r1:2"
    assert event.links == [EventLink(type=LinkType.CAUSED_BY, target="r1:2")]
    assert (event.ts, event.run_id) == (120.0, "r1")
    assert event.payload["tool_call_key"] == "r1:2" and event.payload["tool"] == "bash"
    assert synth.counters["tool_result"] == 1


def test_tool_result_is_synthesized_when_another_tool_call_or_the_screen_moves_on() -> None:
    synth = Synthesizer()
    first = ev("tool_call", 110.0, run_id="r1")  # no key of its own: the store's default
    [event], _ = feed(
        synth, screen("idle", "working", 100.0), first, ev("tool_call", 111.0, run_id="r1")
    )
    assert event.provenance == "tool_call without tool_result before tool_call"
    assert event.payload["tool_call_key"] == f"h1:b1:{first.seq}"
    [event2], _ = feed(synth, screen("working", "idle", 130.0))
    assert event2.provenance == "tool_call without tool_result before screen:working->idle"


def test_tool_result_is_not_synthesized_when_the_agent_emits_it() -> None:
    synth = Synthesizer()
    feed(
        synth,
        ev("tool_call", 110.0, run_id="r1", idempotency_key="r1:2"),
        ev(
            "tool_result",
            111.0,
            run_id="r1",
            links=[EventLink(type=LinkType.CAUSED_BY, target="r1:2")],
        ),
        ev("tool_call", 112.0, run_id="r1", payload={"tool": "bash"}),
        ev("tool_result", 113.0, run_id="r1"),  # no link: FIFO in the run
    )
    assert feed(synth, ev("run.completed", 120.0, run_id="r1")) == ([], [])
    assert synth.counters["tool_result"] == 0
    assert synth.tracked[0] == 0


def test_results_are_matched_by_link_then_tool_then_oldest_first() -> None:
    synth = Synthesizer()
    a = ev("tool_call", 110.0, run_id="r1", payload={"tool": "read"}, idempotency_key="a")
    b = ev("tool_call", 111.0, run_id="r2", payload={"tool": "bash"}, idempotency_key="b")
    c = ev("tool_call", 112.0, run_id="r3", payload={"tool": "edit"}, idempotency_key="c")
    feed(
        synth,
        a,
        b,
        c,
        ev("tool_result", 113.0, payload={"tool": "bash"}),  # answers b, by tool
        ev(
            "tool_result", 114.0, links=[EventLink(type=LinkType.CAUSED_BY, target="c")]
        ),  # answers c
    )
    out, _ = feed(synth, ev("run.completed", 120.0))  # no run id: ends everything open
    assert [e.payload["tool_call_key"] for e in out] == ["a"]

    synth = Synthesizer()
    feed(synth, a, b, ev("tool_result", 113.0))  # nothing to go on: the oldest call
    out, _ = feed(synth, ev("run.completed", 120.0))
    assert [e.payload["tool_call_key"] for e in out] == ["b"]


def test_a_late_tool_result_supersedes_the_synthesized_one() -> None:
    synth = Synthesizer()
    call = ev("tool_call", 110.0, run_id="r1", idempotency_key="r1:2")
    [synthesized], _ = feed(synth, call, ev("run.completed", 120.0, run_id="r1"))
    real = ev(
        "tool_result",
        119.0,
        run_id="r1",
        idempotency_key="r1:3",
        links=[EventLink(type=LinkType.CAUSED_BY, target="r1:2")],
    )
    assert feed(synth, real) == ([], [supersedes(real, synthesized)])


# -- idempotency, replay, store ---------------------------------------------------------------


def _scenario() -> list[Event | tuple[str, float]]:
    """Inputs in arrival order; ("tick", t) is a tick, ("snap", t) a silent heartbeat."""
    return [
        screen("idle", "working", 100.0, run_id="r1", seq=1),
        ev("tool_call", 110.0, run_id="r1", payload={"tool": "bash"}, seq=2),
        screen("working", "idle", 160.0, run_id="r1", seq=3),
        ("tick", 175.0),
        screen("idle", "working", 200.0, seq=4),
        ("snap", 600.0),
        screen("working", "idle", 650.0, seq=5),
        ("tick", 700.0),
    ]


def _run(synth: Synthesizer, inputs: list[Event | tuple[str, float]]) -> list[Event]:
    out: list[Event] = []
    for item in inputs:
        if isinstance(item, Event):
            out += synth.on_event(item)[0]
        elif item[0] == "tick":
            out += synth.tick(item[1])
        else:
            working = snap(SessionState.WORKING, state_since=200.0, last_output_at=200.0)
            out += synth.on_snapshot(T, H, working, now=item[1])
    return out


def test_the_same_inputs_give_byte_identical_events() -> None:
    first = _run(Synthesizer(), _scenario())
    second = _run(Synthesizer(), _scenario())
    assert [e.event_type for e in first] == [
        "tool_result",
        "run.completed",
        "stale",
        "run.completed",
    ]
    assert msgspec.json.encode(first) == msgspec.json.encode(second)
    # They are valid wire events (ids pass validation) and survive the round trip.
    for event in first:
        assert decode(encode(event), Event) == event


def test_a_restarted_controller_replaying_the_store_synthesizes_nothing_new() -> None:
    before = Synthesizer()
    synthesized = _run(before, _scenario())
    originals = {msgspec.json.encode(e) for e in synthesized}
    # What the store holds, in arrival order: each input followed by what it caused.
    stored: list[Event] = []
    for item in _scenario():
        caused = [e for e in synthesized if e not in stored]
        if isinstance(item, Event):
            stored.append(item)
            caused = [e for e in caused if e.payload.get("signal_key") == f"h1:b1:{item.seq}"]
        elif item[0] == "tick":
            caused = [e for e in caused if e.event_type == "run.completed" and e.ts <= item[1]]
        else:
            caused = [e for e in caused if e.event_type == "stale"]
        stored += caused
    assert len(stored) == sum(isinstance(i, Event) for i in _scenario()) + len(synthesized)
    after = Synthesizer()
    replayed, links = feed(after, *stored)
    assert after.tracked[0] == 0  # the stored copies settled what was waiting
    replayed += after.tick(10_000.0)
    working = snap(SessionState.WORKING, state_since=200.0, last_output_at=200.0)
    replayed += after.on_snapshot(T, H, working, now=10_000.0)
    assert links == []
    # A result synthesized on the spot is made again before its stored copy replays; it
    # is byte-identical, so the store drops it. Nothing waiting on time is made again.
    assert [e.event_type for e in replayed] == ["tool_result"]
    assert {msgspec.json.encode(e) for e in replayed} <= originals
    # What it remembered from the replay still lets a late real event supersede.
    real = ev("run.completed", 159.0, run_id="r1", idempotency_key="r1:late")
    assert feed(after, real)[1] == [
        LinkRequest("r1:late", "synth:run.completed:acme:h1:s1:run=r1", LinkType.SUPERSEDES)
    ]


def test_the_store_keeps_one_copy_of_a_resynthesized_event(tmp_path: Path) -> None:
    events = _run(Synthesizer(), _scenario())
    again = _run(Synthesizer(), _scenario())
    with EventStore(tmp_path / "events.db") as store:
        assert all(row is not None for row in store.insert_many(events, received_at=1.0))
        assert store.insert_many(again, received_at=2.0) == [None] * len(again)
        stored = store.find_by_key("synth:run.completed:acme:h1:s1:run=r1", tenant=T)
        assert stored is not None and stored.tags == ["synthesized"]
        assert store.total_gaps() == 0  # seq 0 is not a hole in any boot's numbering


def test_its_own_events_are_only_noted_and_lookalikes_from_agents_are_real() -> None:
    synth = Synthesizer()
    [synthesized], _ = feed(
        synth, ev("tool_call", 110.0, idempotency_key="k"), ev("run.completed", 120.0)
    )
    assert feed(synth, synthesized) == ([], [])
    assert synth.counters["tool_result"] == 1
    # An agent's event that merely looks like ours is treated as the real thing.
    impostor = msgspec.structs.replace(synthesized, source_kind=SourceKind.AGENT)
    assert feed(synth, impostor)[1] == [supersedes(impostor, synthesized)]


# -- bounded memory ----------------------------------------------------------------------------


def test_sessions_are_forgotten_when_nothing_is_open() -> None:
    synth = Synthesizer()
    feed(synth, screen("idle", "working", 100.0), ev("tool_call", 110.0))
    assert synth.tracked == (1, 0)
    feed(synth, ev("tool_result", 111.0), ev("run.completed", 150.0))
    feed(synth, screen("working", "idle", 160.0))
    synth.tick(1000.0)
    assert synth.tracked == (0, 0)


def test_tracked_sessions_are_capped_and_the_least_recently_used_go_first() -> None:
    synth = Synthesizer(SynthesisConfig(max_sessions=3))
    for n in range(5):
        synth.on_event(ev("tool_call", 100.0 + n, session=f"s{n}", idempotency_key=f"c{n}"))
    synth.on_event(ev("tool_call", 110.0, session="s2", idempotency_key="c2b"))  # s2 is used
    synth.on_event(ev("tool_call", 111.0, session="s5", idempotency_key="c5"))
    assert synth.tracked[0] == 3
    assert synth.dropped["sessions"] == 3
    ended = [
        e.payload["tool_call_key"]
        for n in range(6)
        for e in synth.on_event(ev("run.completed", 200.0, session=f"s{n}"))[0]
    ]
    # s0, s1 went first; s3 was the least recently used when s5 came.
    assert ended == ["c2b", "c4", "c5"]
