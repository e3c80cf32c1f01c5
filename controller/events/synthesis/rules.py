"""The synthesis engine's parts: keys, event builders, matching rules, per-session shapes.

The functions here are pure, which is what makes a synthesized event byte-identical when a
restarted controller replays the same inputs; ``synthesis.engine`` holds the state.

Idempotency keys (``<sk>`` is ``<tenant>:<host>:<session>``, ts printed with ``repr``):
  run.completed  synth:run.completed:<sk>:run=<run_id>   or  ...:<sk>:idle@<idle ts>
  stale          synth:stale:<sk>:<state_since of the working period>
  tool_result    synth:tool_result:<sk>:<the tool_call's key>
Provenance: ``screen:<old>-><new>``, ``no output for <N>s while working``,
``tool_call without tool_result before <tool_call | run.completed | run.cancelled |
run.error | screen:<old>-><new>>``. boot_id is ``s`` + sha256(key)[:15], seq is 0, ts is
the signal's own time.
"""

# Long on purpose: the pure pieces of every rule beside the keys above; none long.
from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import msgspec

from controller.events.store.insert import default_idempotency_key
from controller.events.system import system_event
from protocol.events import Event, EventLink, LinkType, Severity, SourceKind

SYNTH_PREFIX: Final = "synth:"
SYNTH_TAG: Final = "synthesized"

RUN_COMPLETED: Final = "run.completed"
STALE: Final = "stale"
TOOL_RESULT: Final = "tool_result"
RULES: Final = (RUN_COMPLETED, STALE, TOOL_RESULT)

# The run's own end, whichever way it went: a run that was cancelled or failed must not
# get a made-up "completed", so all three answer rule 1.
RUN_ENDS: Final = frozenset({"run.completed", "run.cancelled", "run.error"})

# Screen states (SessionState values) as they appear in session.state payloads.
IN_RUN_STATES: Final = frozenset({"working", "blocked"})
# "unknown" is absent on purpose: the detector not recognising a screen does not end a run.
RUN_OVER_STATES: Final = frozenset({"idle", "exited", "missing"})

SessionKey = tuple[str, str, str]  # (tenant, host, session)
V = TypeVar("V")


class LinkRequest(msgspec.Struct, frozen=True):
    """An edge for the lead to add through the store: ``from_key`` -> ``to_key``."""

    from_key: str
    to_key: str
    type: LinkType


class SynthRecord(msgspec.Struct, kw_only=True):
    """A synthesized event remembered so that the real one, arriving late, can supersede it."""

    rule: str
    key: str
    run_id: str | None = None
    since: float | None = None  # run.completed: working since; stale: the working period
    call_key: str | None = None  # tool_result: the tool_call it stands in for
    tool: str | None = None
    superseded: bool = False  # a real event already took its place


# Per-session bounds: a misbehaving agent can only fill its own session's slots.
MAX_OPEN_CALLS = 64
MAX_PENDING = 8
MAX_RECORDS = 8  # synthesized events a late real event may still supersede
MAX_ENDS = 8


@dataclass(slots=True)
class Pending:  # a working->idle transition waiting out the grace period
    key: str
    run_id: str | None
    old: str
    new: str
    working_since: float | None
    idle_at: float
    deadline: float
    signal_key: str


@dataclass(slots=True)
class OpenCall:  # a tool_call still waiting for its tool_result
    key: str
    tool: str | None
    run_id: str | None
    ts: float


@dataclass(slots=True)
class OpenState:
    """What is open in one session; dropped as soon as nothing is."""

    in_run: bool = False
    working_since: float | None = None  # None: we joined mid-run
    run_id: str | None = None
    pending: list[Pending] = field(default_factory=list)
    calls: list[OpenCall] = field(default_factory=list)
    stale_period: float | None = None  # state_since of the working period snapshots show
    stale_done: bool = False

    def empty(self) -> bool:
        return not (self.in_run or self.pending or self.calls or self.stale_period is not None)


@dataclass(slots=True)
class Memo:
    """Recent history of one session that outlives its open state, bounded per session."""

    ends: deque[tuple[str | None, float]] = field(default_factory=lambda: deque(maxlen=MAX_ENDS))
    records: deque[SynthRecord] = field(default_factory=lambda: deque(maxlen=MAX_RECORDS))
    agent_stale_ts: float | None = None

    def empty(self) -> bool:
        return not (self.ends or self.records or self.agent_stale_ts is not None)


def event_key(event: Event) -> str:
    """The key the store files ``event`` under, so links name what the store knows."""
    return event.idempotency_key or default_idempotency_key(event)


def is_synthesized(event: Event) -> bool:
    if event.source_kind != SourceKind.SYSTEM:  # != : in-process Structs may hold a str
        # An agent's own events are real even if it chose a key that looks like ours.
        return False
    return (event.provenance or "").startswith("synth") or (event.idempotency_key or "").startswith(
        SYNTH_PREFIX
    )


def run_id_of(event: Event) -> str | None:
    # Agents following the emission contract put run_id in the payload (see agent/stub.py);
    # the host agent may lift it onto the event. Accept either.
    if event.run_id:
        return event.run_id
    value = event.payload.get("run_id")
    return value if isinstance(value, str) and value else None


def tool_of(event: Event) -> str | None:
    value = event.payload.get("tool")
    return value if isinstance(value, str) and value else None


def num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def stamp(value: float) -> str:
    # repr is the shortest round-tripping form, so a ts decoded from JSON on replay prints
    # the same digits it did the first time.
    return repr(float(value))


def run_completed_key(sk: SessionKey, run_id: str | None, idle_at: float) -> str:
    what = f"run={run_id}" if run_id else f"idle@{stamp(idle_at)}"
    return f"{SYNTH_PREFIX}{RUN_COMPLETED}:{':'.join(sk)}:{what}"


def stale_key(sk: SessionKey, period: float) -> str:
    return f"{SYNTH_PREFIX}{STALE}:{':'.join(sk)}:{stamp(period)}"


def tool_result_key(sk: SessionKey, call_key: str) -> str:
    return f"{SYNTH_PREFIX}{TOOL_RESULT}:{':'.join(sk)}:{call_key}"


def _synth_event(
    sk: SessionKey,
    key: str,
    *,
    ts: float,
    event_type: str,
    summary: str,
    provenance: str,
    payload: dict[str, Any],
    run_id: str | None,
    severity: Severity = Severity.INFO,
    links: list[EventLink] | None = None,
) -> Event:
    tenant, host, session = sk
    return system_event(
        tenant,
        host,
        session,
        key,
        ts=ts,
        event_type=event_type,
        summary=summary,
        tags=[SYNTH_TAG],
        payload=payload,
        severity=severity,
        provenance=provenance,
        attention_candidate=severity is not Severity.INFO,
        run_id=run_id,
        links=links,
    )


def make_run_completed(
    sk: SessionKey,
    *,
    run_id: str | None,
    old: str,
    new: str,
    working_since: float | None,
    idle_at: float,
    grace_s: float,
    signal_key: str,
) -> Event:
    run = f"run {run_id}" if run_id else "run"
    return _synth_event(
        sk,
        run_completed_key(sk, run_id, idle_at),
        ts=idle_at,
        event_type=RUN_COMPLETED,
        summary=f"{run} presumed completed: screen went {old}->{new} and the agent "
        f"emitted no run.completed within {grace_s:g}s",
        provenance=f"screen:{old}->{new}",
        payload={
            "old": old,
            "new": new,
            "working_since": working_since,
            "idle_at": idle_at,
            "grace_s": grace_s,
            "signal_key": signal_key,
        },
        run_id=run_id,
    )


def make_stale(
    sk: SessionKey,
    *,
    period: float,
    state_since: float | None,
    last_output_at: float | None,
    silent_since: float,
    stale_after_s: float,
) -> Event:
    # ts is when the silence crossed the threshold, not when we noticed: a replay, or a
    # later heartbeat after a controller restart, then describes the same moment.
    return _synth_event(
        sk,
        stale_key(sk, period),
        ts=silent_since + stale_after_s,
        event_type=STALE,
        summary=f"session {sk[2]} is working but has shown no output for {stale_after_s:g}s",
        provenance=f"no output for {stale_after_s:g}s while working",
        payload={
            "working_since": period,
            "state_since": state_since,
            "last_output_at": last_output_at,
            "silent_since": silent_since,
            "stale_after_s": stale_after_s,
        },
        run_id=None,
        severity=Severity.WARNING,
    )


def make_tool_result(
    sk: SessionKey,
    *,
    call_key: str,
    tool: str | None,
    run_id: str | None,
    call_ts: float,
    before: str,
    ts: float,
    signal_key: str | None,
) -> Event:
    name = f"tool call {tool}" if tool else "tool call"
    return _synth_event(
        sk,
        tool_result_key(sk, call_key),
        ts=ts,
        event_type=TOOL_RESULT,
        summary=f"{name} ended without a tool_result before {before}",
        provenance=f"tool_call without tool_result before {before}",
        payload={
            "tool_call_key": call_key,
            "tool": tool,
            "call_ts": call_ts,
            "before": before,
            "signal_key": signal_key,
        },
        run_id=run_id,
        # Shaped like a real result, so anything walking caused_by edges finds the pair.
        links=[EventLink(type=LinkType.CAUSED_BY, target=call_key)],
    )


def record_of(event: Event) -> SynthRecord | None:
    """What to remember about a synthesized event, ours now or stored by an earlier run."""
    key = event.idempotency_key or ""
    p = event.payload
    if event.event_type == RUN_COMPLETED:
        return SynthRecord(
            rule=RUN_COMPLETED, key=key, run_id=event.run_id, since=num(p.get("working_since"))
        )
    if event.event_type == STALE:
        return SynthRecord(rule=STALE, key=key, since=num(p.get("working_since")))
    if event.event_type == TOOL_RESULT:
        call_key = p.get("tool_call_key")
        tool = p.get("tool")
        return SynthRecord(
            rule=TOOL_RESULT,
            key=key,
            run_id=event.run_id,
            call_key=call_key if isinstance(call_key, str) else None,
            tool=tool if isinstance(tool, str) else None,
        )
    return None


def same_run(a: str | None, b: str | None, ts: float, since: float | None) -> bool:
    """Rule 1's match: by run id when both have one, else by time within the session."""
    if a and b:
        return a == b
    return since is None or ts >= since


def _fits(run_id: str | None, tool: str | None, c_run: str | None, c_tool: str | None) -> bool:
    """A call (c_*) a result may answer: same run or either unknown; same tool if named."""
    same_run = run_id is None or c_run is None or c_run == run_id
    return same_run and (tool is None or c_tool == tool)


def pick_call(
    calls: list[OpenCall], targets: set[str], run_id: str | None, tool: str | None
) -> OpenCall | None:
    """The open call a tool_result answers: its caused_by target, else the oldest call of
    the same tool in the run, else the oldest call in the run (FIFO)."""
    if targets:
        # It names its call: no other call can be the one it answers.
        return next((c for c in calls if c.key in targets), None)
    return next((c for c in calls if _fits(run_id, tool, c.run_id, c.tool)), None) or next(
        (c for c in calls if _fits(run_id, None, c.run_id, c.tool)), None
    )


def answers(record: SynthRecord, targets: set[str], run_id: str | None, tool: str | None) -> bool:
    """Whether a late tool_result stands for the synthesized one in ``record``."""
    if record.rule != TOOL_RESULT:
        return False
    if targets:
        return record.call_key in targets
    return _fits(run_id, tool, record.run_id, record.tool)


def lru_get(
    table: OrderedDict[SessionKey, V], key: SessionKey, factory: Callable[[], V], cap: int
) -> tuple[V, int]:
    """Get or create ``table[key]`` as most recently used; evict the least recently used
    past ``cap``. Returns the value and how many were evicted (0 or 1)."""
    value = table.get(key)
    if value is not None:
        table.move_to_end(key)
        return value, 0
    value = table[key] = factory()
    if len(table) <= cap:
        return value, 0
    table.popitem(last=False)
    return value, 1
