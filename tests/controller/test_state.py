"""Fleet state with an injected clock: liveness rules from DESIGN.md, exactly."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api.views import ps_page
from controller.fleet.liveness import MAX_BEHIND_S, Behind
from controller.fleet.state import FleetState, percentiles
from controller.fleet.statedb import StateDB
from protocol.api import Flag, HostState, PsRequest
from protocol.heartbeat import Heartbeat, Keepalive, PaneState, SessionSnapshot
from protocol.lifecycle import Lifecycle, LifecycleKind


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def hb(
    host: str = "h1",
    seq: int = 1,
    boot: str = "b1",
    sessions: list[SessionSnapshot] | None = None,
    interval: float = 5.0,
) -> Heartbeat:
    return Heartbeat(
        tenant="acme",
        host=host,
        boot_id=boot,
        seq=seq,
        sent_at=0.0,
        interval_s=interval,
        agent_version="t",
        sessions=sessions or [],
    )


def shutdown(host: str = "h1", boot: str = "b1", tenant: str = "acme") -> Lifecycle:
    return Lifecycle(
        tenant=tenant,
        host=host,
        boot_id=boot,
        event=LifecycleKind.SHUTDOWN,
        sent_at=0.0,
        agent_version="t",
    )


def make(grace: float = 15.0) -> tuple[FleetState, Clock]:
    clock = Clock()
    return FleetState(grace_s=grace, mono=clock, wall=clock), clock


def test_suspect_after_three_intervals_down_after_six() -> None:
    state, clock = make()
    state.on_heartbeat(hb())
    clock.now += 15.0
    assert state.tick() == []  # exactly 3 intervals: not yet
    clock.now += 0.1
    [t] = state.tick()
    assert (t.old, t.new) == (HostState.OK, HostState.SUSPECT)
    clock.now += 15.0
    [t] = state.tick()
    assert (t.old, t.new) == (HostState.SUSPECT, HostState.DOWN)
    assert t.silent_s is not None and t.silent_s > 30.0
    assert state.tick() == []
    t2 = state.on_heartbeat(hb(seq=2))
    assert t2 is not None and t2.new is HostState.OK


def test_graceful_shutdown_is_stopped_not_down() -> None:
    state, clock = make()
    state.on_heartbeat(hb())
    t = state.on_lifecycle(shutdown())
    assert t is not None and t.new is HostState.STOPPED
    clock.now += 1000
    assert state.tick() == []
    assert state.hosts[("acme", "h1")].state is HostState.STOPPED


def test_shutdown_of_an_older_boot_is_ignored() -> None:
    state, _ = make()
    state.on_heartbeat(hb(boot="new"))
    assert state.on_lifecycle(shutdown(boot="old")) is None


def test_stale_and_duplicate_heartbeats_do_not_rewind() -> None:
    state, _ = make()
    state.on_heartbeat(hb(seq=5))
    assert state.on_heartbeat(hb(seq=5)) is None
    assert state.on_heartbeat(hb(seq=3)) is None
    assert state.hosts[("acme", "h1")].seq == 5
    assert state.counters["heartbeats_stale"] == 2
    state.on_heartbeat(hb(seq=1, boot="b2"))  # a restarted agent starts over
    assert state.hosts[("acme", "h1")].boot_id == "b2"


def test_restored_hosts_get_a_grace_window(tmp_path) -> None:
    state, clock = make()
    state.on_heartbeat(hb())
    db = StateDB(tmp_path / "fleet.db")
    db.open()
    db.save(state.hosts.values(), [])
    db.close()

    clock.now += 100.0  # the controller was away for a long time
    restarted = FleetState(grace_s=15.0, mono=clock, wall=clock)
    db.open()
    restarted.restore(db.load_hosts())
    db.close()
    assert restarted.hosts[("acme", "h1")].state is HostState.OK
    clock.now += 14.9
    assert restarted.tick() == []  # no verdict inside the grace window
    restarted.on_heartbeat(hb(seq=2))
    clock.now += 10.0
    assert restarted.tick() == []  # alive host: never suspect
    clock.now += 10.0
    [t] = restarted.tick()  # but a host silent past the rules is still caught
    assert t.new is HostState.SUSPECT


def test_interval_comes_from_the_heartbeat() -> None:
    state, clock = make()
    state.on_heartbeat(hb(interval=0.5))
    clock.now += 1.6
    [t] = state.tick()
    assert t.new is HostState.SUSPECT


def test_ps_rows_flags_and_filters() -> None:
    state, _ = make()
    sessions = [
        SessionSnapshot(name="ok", runtime_configured="stub", runtime_observed="stub"),
        SessionSnapshot(name="drift", runtime_configured="claude", runtime_observed="stub"),
        SessionSnapshot(
            name="dead", runtime_configured="stub", runtime_observed=None, pane=PaneState.DEAD
        ),
        SessionSnapshot(
            name="gone", runtime_configured="stub", runtime_observed=None, pane=PaneState.MISSING
        ),
        SessionSnapshot(
            name="byhand", runtime_configured=None, runtime_observed="shell", managed=False
        ),
    ]
    state.on_heartbeat(hb(sessions=sessions))
    state.on_heartbeat(hb(host="h2"))
    page = ps_page(state, PsRequest(), 100)
    flags = {r.session.name: r.flags for r in page.rows if r.session}
    assert flags == {
        "ok": [],
        "drift": [Flag.DRIFT],
        "dead": [Flag.DEAD],
        "gone": [Flag.MISSING],
        "byhand": [Flag.UNMANAGED],
    }
    assert page.total == 6  # 5 sessions + h2 without sessions
    problems = ps_page(state, PsRequest(problems=True), 100)
    assert {r.session.name for r in problems.rows if r.session} == {
        "drift",
        "dead",
        "gone",
        "byhand",
    }
    only_h2 = ps_page(state, PsRequest(host="h2"), 100)
    assert [(r.host, r.session) for r in only_h2.rows] == [("h2", None)]
    assert ps_page(state, PsRequest(tenant="other"), 100).rows == []


def test_ps_pages_cover_everything_once() -> None:
    state, _ = make()
    for i in range(50):
        state.on_heartbeat(
            hb(
                host=f"h{i:03d}",
                sessions=[
                    SessionSnapshot(
                        name=f"s{j}", runtime_configured="stub", runtime_observed="stub"
                    )
                    for j in range(3)
                ],
            )
        )
    seen = []
    cursor: int | None = 0
    first = None
    while cursor is not None:
        page = ps_page(state, PsRequest(cursor=cursor, limit=10), 1000)
        first = first or page
        seen += [(r.host, r.session.name) for r in page.rows if r.session]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 150
    assert first is not None and first.total == 150
    assert first.hosts_by_state["ok"] == 50


def test_problem_rows_follow_each_new_heartbeat() -> None:
    state, _ = make()
    fine = [SessionSnapshot(name="a", runtime_configured="stub", runtime_observed="stub")]
    dead = [
        SessionSnapshot(
            name="a", runtime_configured="stub", runtime_observed=None, pane=PaneState.DEAD
        )
    ]
    state.on_heartbeat(hb(seq=1, sessions=fine))
    assert ps_page(state, PsRequest(problems=True), 100).rows == []
    state.on_heartbeat(hb(seq=2, sessions=dead))
    [row] = ps_page(state, PsRequest(problems=True), 100).rows
    assert row.flags == [Flag.DEAD]
    state.on_heartbeat(hb(seq=3, sessions=fine))
    page = ps_page(state, PsRequest(problems=True), 100)
    assert page.rows == [] and page.total == 0


def _brute(state: FleetState, tenant: str | None = None) -> tuple[dict[str, int], int, set]:
    """Counts, rows and problem hosts recomputed from every host, the slow way."""
    counts = {s.value: 0 for s in HostState}
    rows = 0
    problems = set()
    for key, entry in state.hosts.items():
        if tenant is not None and key[0] != tenant:
            continue
        counts[entry.state.value] += 1
        rows += max(1, len(entry.sessions))
        flagged = [r for r in state.host_rows(entry) if r.flags]
        if entry.state is not HostState.OK or flagged:
            problems.add(key)
    return counts, rows, problems


SESSION_KINDS = [
    SessionSnapshot(name="fine", runtime_configured="stub", runtime_observed="stub"),
    SessionSnapshot(name="drift", runtime_configured="claude", runtime_observed="stub"),
    SessionSnapshot(
        name="dead", runtime_configured="stub", runtime_observed=None, pane=PaneState.DEAD
    ),
    SessionSnapshot(name="byhand", runtime_configured=None, runtime_observed="sh", managed=False),
    SessionSnapshot(name="quiet", runtime_configured="stub", runtime_observed=None),
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["hb", "hb", "hb", "tick", "shutdown", "reboot", "restore"]),
            st.integers(0, 7),  # host
            st.lists(st.integers(0, len(SESSION_KINDS) - 1), max_size=4),  # its sessions
            st.floats(0, 40),  # seconds that pass first
            st.sampled_from([0.5, 5.0, 30.0]),  # the heartbeat's interval
        ),
        max_size=40,
    )
)
def test_overview_indexes_match_a_full_recount(ops) -> None:
    """Whatever happens to hosts, the kept-up counts, row totals and problem hosts equal a
    recount over every host, `ps --problems` lists exactly the problem rows, and every tick
    (which walks only the hosts silent long enough) leaves no overdue host ok."""
    state, clock = make(grace=0.0)
    seqs: dict[str, int] = {}
    boots: dict[str, str] = {}
    for op, i, kinds, elapsed, interval in ops:
        clock.now += elapsed
        host = f"h{i}"
        tenant = "acme" if i % 2 else "globex"
        if op == "tick":
            state.tick()
            for entry in state.hosts.values():
                age = clock.now - entry.last_seen_mono
                if entry.state is HostState.STOPPED:
                    continue
                if age > 6 * entry.interval_s:
                    assert entry.state is HostState.DOWN, (entry, age)
                elif age > 3 * entry.interval_s:
                    assert entry.state in (HostState.SUSPECT, HostState.DOWN), (entry, age)
        elif op == "restore":
            again = FleetState(grace_s=0.0, mono=clock, wall=clock)
            again.restore(list(state.hosts.values()))
            state = again
        elif op == "shutdown" and host in boots:
            state.on_lifecycle(shutdown(host, boots[host], tenant))
        elif op in ("hb", "reboot"):
            if op == "reboot" or host not in boots:
                boots[host], seqs[host] = f"b{len(seqs)}{i}", 0
            seqs[host] += 1
            beat = msgspec.structs.replace(
                hb(host=host, seq=seqs[host], boot=boots[host], interval=interval),
                tenant=tenant,
                sessions=[
                    msgspec.structs.replace(SESSION_KINDS[k], name=f"s{n}")
                    for n, k in enumerate(kinds)
                ],
            )
            state.on_heartbeat(beat)
        for scope in (None, "acme", "globex"):
            counts, rows, problems = _brute(state, scope)
            assert state.host_counts(scope) == counts
            assert state.row_total(scope) == rows
            assert {k for k in state.problem_hosts if scope in (None, k[0])} == problems
            listed = ps_page(state, PsRequest(problems=True, tenant=scope, limit=10_000), 10_000)
            expected = [
                r
                for k in sorted(problems)
                for r in state.host_rows(state.hosts[k])
                if r.flags or r.host_state is not HostState.OK
            ]
            assert [(r.host, r.session) for r in listed.rows] == [
                (r.host, r.session) for r in expected
            ]
            assert listed.total == len(expected)
            assert listed.hosts_by_state == counts


def test_problem_pages_walk_only_problem_hosts() -> None:
    """A paged `--problems` listing covers every problem row once, and its cursor runs over
    the problem hosts, not the fleet (500 fine hosts, 3 with problems: one page each)."""
    state, _ = make()
    dead = [SESSION_KINDS[2]]
    for i in range(500):
        state.on_heartbeat(hb(host=f"h{i:03d}", sessions=dead if i % 200 == 7 else []))
    seen, cursor, pages = [], 0, 0
    while cursor is not None:
        page = ps_page(state, PsRequest(problems=True, cursor=cursor, limit=1), 100)
        seen += [r.host for r in page.rows]
        cursor, pages = page.next_cursor, pages + 1
    assert seen == ["h007", "h207", "h407"] and pages == 3


def test_percentiles_nearest_rank_in_one_sort() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentiles(values, 50, 99, 100) == [50.0, 99.0, 100.0]
    assert percentiles([7.0], 1, 99) == [7.0, 7.0]
    assert percentiles([], 50, 99) == [0.0, 0.0]


def test_a_host_whose_heartbeat_waits_unprocessed_is_not_judged() -> None:
    """An overloaded controller holds the heartbeat but has not processed it yet: it is
    behind, the host is not. Judged again on the next tick without one waiting."""
    state, clock = make()
    state.on_heartbeat(hb(host="h1"))
    state.on_heartbeat(hb(host="h2"))
    clock.now += 15.1  # past 3 intervals for both
    waiting = {("acme", "h1")}
    [t] = state.tick(lambda key: key in waiting)
    assert (t.host, t.new) == ("h2", HostState.SUSPECT)
    assert state.hosts[("acme", "h1")].state is HostState.OK
    clock.now += 15.0  # past 6 intervals: still waiting, still not judged
    [t] = state.tick(lambda key: key in waiting)
    assert (t.host, t.new) == ("h2", HostState.DOWN)
    waiting.clear()  # it was processed and turned out invalid: no newer heartbeat
    [t] = state.tick(lambda key: key in waiting)
    assert (t.host, t.old, t.new) == ("h1", HostState.OK, HostState.DOWN)


def test_a_heartbeat_processed_after_its_boots_shutdown_notice_is_stale() -> None:
    """Heartbeats wait in the intake, notices do not: the last heartbeat before a shutdown
    can be processed after the notice. It must not make the stopped host ok (and later
    suspect and down); a new boot does."""
    state, clock = make()
    state.on_heartbeat(hb(seq=1))
    assert state.on_lifecycle(shutdown()).new is HostState.STOPPED
    assert state.on_heartbeat(hb(seq=2)) is None  # sent before the notice, processed after
    assert state.hosts[("acme", "h1")].state is HostState.STOPPED
    assert state.counters["heartbeats_stale"] == 1
    clock.now += 60.0
    assert state.tick() == []  # stopped stays stopped
    t = state.on_heartbeat(hb(seq=1, boot="b2"))  # the agent started again
    assert t is not None and (t.old, t.new) == (HostState.STOPPED, HostState.OK)


def test_the_fast_has_a_flag_rule_agrees_with_the_flags_themselves() -> None:
    """flags.py states the flag rule twice on purpose (the per-heartbeat test is inlined for
    speed): over every combination that decides a flag, the two must agree."""
    import itertools

    from controller.fleet.flags import flagged_indexes, session_flags
    from protocol.heartbeat import BootEnabled

    runtimes = [None, "claude", "codex"]
    snaps = [
        SessionSnapshot(
            name="s",
            runtime_configured=configured,
            runtime_observed=observed,
            managed=managed,
            pane=pane,
            boot_enabled=boot,
        )
        for configured, observed, managed, pane, boot in itertools.product(
            runtimes, runtimes, [True, False], list(PaneState), list(BootEnabled)
        )
    ]
    assert flagged_indexes(snaps) == tuple(i for i, s in enumerate(snaps) if session_flags(s))
    assert 0 < len(flagged_indexes(snaps)) < len(snaps)


def ka(seq: int, boot: str = "b1", interval: float = 5.0) -> Keepalive:
    return Keepalive(
        tenant="acme",
        host="h1",
        boot_id=boot,
        seq=seq,
        sent_at=0.0,
        interval_s=interval,
        digest="0123456789abcdef",
    )


def test_a_keepalive_is_liveness_and_leaves_the_sessions_as_held() -> None:
    state, clock = make()
    sessions = [SessionSnapshot(name="s1", runtime_configured="stub", runtime_observed="stub")]
    state.on_heartbeat(hb(sessions=sessions))
    held = state.hosts[("acme", "h1")].sessions
    clock.now += 15.1
    [t] = state.tick()
    assert t.new is HostState.SUSPECT
    back = state.on_keepalive(ka(seq=2))
    assert back is not None and (back.old, back.new) == (HostState.SUSPECT, HostState.OK)
    entry = state.hosts[("acme", "h1")]
    assert entry.sessions is held and entry.seq == 2 and entry.last_seen == clock.now
    clock.now += 15.0
    assert state.tick() == []  # its clock restarted at the keepalive
    assert state.on_keepalive(ka(seq=2)) is None  # a duplicate
    assert state.counters["heartbeats_stale"] == 1
    assert state.on_keepalive(ka(seq=9, boot="b2")) is None  # another boot: needs a full one
    assert state.hosts[("acme", "h1")].seq == 2
    state.on_keepalive(ka(seq=3, interval=10.0))
    clock.now += 29.5  # within three of its new intervals (three of the old were 15 s)
    assert state.tick() == []


def test_the_controller_running_behind_is_not_the_hosts_silence() -> None:
    state, clock = make()
    state.on_heartbeat(hb())
    clock.now += 16.0  # past three intervals on the controller's clock...
    assert state.tick(behind_s=2.0) == []  # ...but its heartbeats arrive 2 s late
    [t] = state.tick(behind_s=0.5)
    assert t.new is HostState.SUSPECT and t.silent_s is not None and t.silent_s < 16.0


def test_behind_is_the_median_lag_over_hosts_and_bounded() -> None:
    behind = Behind()
    for i in range(300):
        behind.observe(("acme", f"h{i}"), 0.8)
    for i in range(100):
        behind.observe(("acme", f"slow{i}"), 3600.0)  # a quarter with clocks an hour slow
    assert behind.take() == 0.8
    assert behind.take() == 0.0  # nothing processed since: nothing to excuse
    for i in range(5):
        behind.observe(("acme", f"h{i}"), 0.01)
    for _ in range(1000):  # one host flooding backdated heartbeats counts once
        behind.observe(("acme", "liar"), 3600.0)
    assert behind.take() == 0.01
    for i in range(10):
        behind.observe(("acme", f"h{i}"), -5.0)  # clocks ahead: never negative
    assert behind.take() == 0.0
    for i in range(10):
        behind.observe(("acme", f"h{i}"), 1e6)
    assert behind.take() == MAX_BEHIND_S
