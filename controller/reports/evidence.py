"""Evidence: the event store and fleet state turned into a baseline report and a weekly one.

Pure functions over events, gaps, hosts and transitions (``Inputs``), plus ``load_inputs``
which reads them from the stores through connections of its own. Deterministic: no clock,
lists sorted, rates rounded, so the same store gives the same bytes.

Definitions:
- a *run* ends in ``run.completed``, ``run.error`` or ``run.cancelled``. Ends sharing
  (tenant, host, session, run_id) are one run; the agent's own end wins over a synthesized
  one (a late real event supersedes synthesis). Ends without run_id are one run each.
- *compliance* counts events: agent-emitted vs synthesized ``run.completed`` and
  ``tool_result``. A synthesized completion later superseded counts on both sides: the
  agent was late enough that synthesis had to step in.
- percentiles are nearest-rank (the smallest value with at least p% of values at or below).
- weeks are ISO weeks in UTC, Monday 00:00 to the next Monday 00:00.
"""

# Long on purpose: the definitions above beside the functions that compute them.
from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from controller.events.store.core import EventStore
from controller.events.store.query import event_from_row
from controller.events.store.schema import EVENT_COLUMNS
from controller.fleet.state import HostEntry, Transition
from controller.fleet.statedb import StateDB
from controller.reports.metrics import number, run_outcome, synth_rule, text
from controller.reports.reaction_rates import ReactionTally
from protocol.api import HostState
from protocol.events_api import SeqGap, StoredEvent
from protocol.reports_api import (
    BaselineReport,
    Compliance,
    Count,
    DownPeriod,
    Percentiles,
    RunRates,
)

__all__ = ["Inputs", "baseline", "load_inputs"]

MAX_ROWS: Final = 500  # per listing: a 768 KB reply holds a few thousand rows at most
PAGE: Final = 5000
RunKey = tuple[str, ...]


@dataclass
class Inputs:
    events: Callable[[float | None, float | None], Iterator[StoredEvent]]
    gaps: list[SeqGap] = field(default_factory=list)
    hosts: list[HostEntry] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


def load_inputs(store: EventStore, db: StateDB | None, tenant: str | None) -> Inputs:
    """What the reports read, from the live stores. Events are read page by page through a
    read-only connection of our own, so a report never holds the store's reader lock for
    the length of a scan."""

    def events(since: float | None, until: float | None) -> Iterator[StoredEvent]:
        return scan_events(store.path, since, until, tenant)

    gaps = [g for g in store.gaps() if tenant is None or g.tenant == tenant]
    hosts: list[HostEntry] = []
    transitions: list[Transition] = []
    if db is not None and db.path.exists():
        # A connection of our own: the daemon's is used by its persister thread.
        own = StateDB(db.path)
        own.open()
        try:
            hosts, transitions = own.load_hosts(), own.transitions()
        finally:
            own.close()
    if tenant is not None:
        hosts = [h for h in hosts if h.tenant == tenant]
        transitions = [t for t in transitions if t.tenant == tenant]
    return Inputs(events, gaps, hosts, transitions)


def scan_events(
    path: Path, since: float | None, until: float | None, tenant: str | None
) -> Iterator[StoredEvent]:
    if not path.exists():
        return
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        where: list[str] = ["id > ?"]
        params: list[float | str] = [0.0]
        bounds: tuple[tuple[str, float | str | None], ...] = (
            ("ts >= ?", since),
            ("ts < ?", until),
            ("tenant = ?", tenant),
        )
        for clause, value in bounds:
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        while True:
            rows = conn.execute(sql, [*params, PAGE]).fetchall()
            for row in rows:
                yield event_from_row(row)
            if len(rows) < PAGE:
                return
            params[0] = rows[-1][0]  # keyset paging on id
    finally:
        conn.close()


def runtime_index(hosts: list[HostEntry]) -> dict[RunKey, str]:
    return {
        (h.tenant, h.host, s.name): s.runtime_configured or s.runtime_observed or "unknown"
        for h in hosts
        for s in h.sessions
    }


def percentiles(values: list[float]) -> Percentiles:
    ordered = sorted(values)

    def rank(p: int) -> float | None:
        if not ordered:
            return None
        return round(ordered[max(0, -(-p * len(ordered) // 100) - 1)], 3)

    return Percentiles(count=len(ordered), p50=rank(50), p95=rank(95))


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def rates(key: str, outcomes: Counter[str]) -> RunRates:
    runs = sum(outcomes.values())
    done, err, cancel = outcomes["completed"], outcomes["errored"], outcomes["cancelled"]
    return RunRates(
        key=key,
        runs=runs,
        completed=done,
        errored=err,
        cancelled=cancel,
        completion_rate=ratio(done, runs),
        error_rate=ratio(err, runs),
        cancel_rate=ratio(cancel, runs),
    )


def counts(counter: Counter[str]) -> list[Count]:
    return [Count(key=k, count=n) for k, n in sorted(counter.items(), key=lambda i: (-i[1], i[0]))]


@dataclass
class Tally:
    """One pass over the events of a range."""

    events: int = 0
    run_ends: dict[RunKey, tuple[str, bool, str, str, str, float]] = field(default_factory=dict)
    by_type: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    operator: Counter[str] = field(default_factory=Counter)
    emitted: Counter[str] = field(default_factory=Counter)
    synthesized: Counter[str] = field(default_factory=Counter)
    cancel_ms: list[float] = field(default_factory=list)
    rtt_ms: list[float] = field(default_factory=list)
    reactions: ReactionTally = field(default_factory=ReactionTally)

    def add(self, e: StoredEvent) -> None:
        self.events += 1
        if e.event_type.startswith("reaction."):
            self.reactions.add(e)
        self.by_type[e.event_type] += 1
        self.by_source[e.source_kind.value] += 1
        rule = synth_rule(e.tags, e.idempotency_key)
        if rule is not None:
            self.rules[rule] += 1
        if e.event_type in ("run.completed", "tool_result"):
            (self.emitted if rule is None else self.synthesized)[e.event_type] += 1
        if e.operator_action_required:
            self.operator[f"{e.tenant}/{e.host}/{e.session}"] += 1
        outcome = run_outcome(e.event_type)
        if outcome is not None:
            key = (e.tenant, e.host, e.session, e.run_id) if e.run_id else ("#", str(e.id))
            held = self.run_ends.get(key)
            if held is None or (held[1] and rule is None):
                self.run_ends[key] = (outcome, rule is not None, e.tenant, e.host, e.session, e.ts)
        elif e.event_type == "validation_error":
            self.reasons[text(e.payload, "reason")] += 1
        elif e.event_type == "command":
            self.commands[f"{text(e.payload, 'verb')}:{text(e.payload, 'outcome')}"] += 1
            if (rtt := number(e.payload, "round_trip_ms")) is not None:
                self.rtt_ms.append(rtt)
        if e.event_type == "run.cancelled" and (ms := number(e.payload, "latency_ms")) is not None:
            self.cancel_ms.append(ms)


def down_periods(
    transitions: list[Transition], since: float | None, until: float | None
) -> list[DownPeriod]:
    opened: dict[tuple[str, str], Transition] = {}
    out: list[DownPeriod] = []

    def close(start: Transition, up_at: float | None) -> None:
        out.append(
            DownPeriod(
                tenant=start.tenant,
                host=start.host,
                down_at=start.at,
                up_at=up_at,
                duration_s=None if up_at is None else round(up_at - start.at, 3),
                detection_s=None if start.silent_s is None else round(start.silent_s, 3),
            )
        )

    for t in sorted(transitions, key=lambda t: t.at):
        key = (t.tenant, t.host)
        if t.new is HostState.DOWN:
            if (since is None or t.at >= since) and (until is None or t.at < until):
                opened.setdefault(key, t)
        elif key in opened:
            close(opened.pop(key), t.at)
    for start in opened.values():
        close(start, None)
    return sorted(out, key=lambda d: (d.down_at, d.tenant, d.host))


def _grouped(tally: Tally, runtimes: dict[RunKey, str]) -> dict[str, dict[str, Counter[str]]]:
    groups: dict[str, dict[str, Counter[str]]] = {
        g: {} for g in ("tenant", "host", "session", "runtime")
    }
    for outcome, _synth, tenant, host, session, _ts in tally.run_ends.values():
        keys = {
            "tenant": tenant,
            "host": f"{tenant}/{host}",
            "session": f"{tenant}/{host}/{session}",
            "runtime": runtimes.get((tenant, host, session), "unknown"),
        }
        for group, key in keys.items():
            groups[group].setdefault(key, Counter())[outcome] += 1
    return groups


def baseline(
    inputs: Inputs, since: float | None, until: float | None, tenant: str | None
) -> BaselineReport:
    return _baseline(inputs, since, until, tenant)[0]


# Long on purpose: one report, field by field in BaselineReport's order.
def _baseline(
    inputs: Inputs, since: float | None, until: float | None, tenant: str | None
) -> tuple[BaselineReport, Tally]:
    tally = Tally()
    for event in inputs.events(since, until):
        tally.add(event)
    groups = _grouped(tally, runtime_index(inputs.hosts))
    truncated: list[Count] = []

    def listing(group: str) -> list[RunRates]:
        rows = sorted(
            (rates(k, c) for k, c in groups[group].items()), key=lambda r: (-r.runs, r.key)
        )
        if len(rows) > MAX_ROWS:
            truncated.append(Count(key=f"by_{group}", count=len(rows) - MAX_ROWS))
        return rows[:MAX_ROWS]

    def top(name: str, counter: Counter[str]) -> list[Count]:
        rows = counts(counter)
        if len(rows) > MAX_ROWS:
            truncated.append(Count(key=name, count=len(rows) - MAX_ROWS))
        return rows[:MAX_ROWS]

    overall: Counter[str] = Counter(end[0] for end in tally.run_ends.values())
    downs = down_periods(inputs.transitions, since, until)
    detection = [d.detection_s for d in downs if d.detection_s is not None]
    em, sy = tally.emitted, tally.synthesized
    by_tenant, by_host = listing("tenant"), listing("host")
    by_session, by_runtime = listing("session"), listing("runtime")
    report = BaselineReport(
        since=since,
        until=until,
        tenant=tenant,
        events=tally.events,
        totals=rates("all", overall),
        by_tenant=by_tenant,
        by_host=by_host,
        by_session=by_session,
        by_runtime=by_runtime,
        cancel_latency_ms=percentiles(tally.cancel_ms),
        command_round_trip_ms=percentiles(tally.rtt_ms),
        compliance=Compliance(
            run_completions_emitted=em["run.completed"],
            run_completions_synthesized=sy["run.completed"],
            run_completions_emitted_share=ratio(
                em["run.completed"], em["run.completed"] + sy["run.completed"]
            ),
            tool_results_emitted=em["tool_result"],
            tool_results_synthesized=sy["tool_result"],
            tool_results_emitted_share=ratio(
                em["tool_result"], em["tool_result"] + sy["tool_result"]
            ),
        ),
        validation_errors=top("validation_errors", tally.reasons),
        events_by_type=top("events_by_type", tally.by_type),
        events_by_source=counts(tally.by_source),
        synthesized_by_rule=counts(tally.rules),
        commands=top("commands", tally.commands),
        operator_action_sessions=top("operator_action_sessions", tally.operator),
        sequence_gaps=sum(g.missing for g in inputs.gaps),
        gap_boots=inputs.gaps[:MAX_ROWS],
        host_down=downs[:MAX_ROWS],
        detection_s=percentiles(detection),
        truncated=truncated,
        reactions=tally.reactions.rates(),
    )
    return report, tally
