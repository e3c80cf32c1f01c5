"""The synthesis engine: events the agents should have emitted, inferred from what we saw.

Pure logic: the daemon feeds it every stored event, every heartbeat snapshot and a clock
tick, and stores what comes back (events, plus ``supersedes`` links when the real event
turns up late). No I/O, no wall clock: time is always an argument, so tests and replays
after a restart see the same results. Keys, provenance and event shapes are in
``controller.events.synthesis.rules``.

Memory: ``_open`` holds what is open per session (a run the screen shows, a grace period,
unanswered tool calls, a working period in heartbeats) and drops a session once nothing
is; ``_memos`` holds a few recent facts per session (unmatched run ends, our synthesized
events) that a late real event needs. Both are LRU tables capped at ``max_sessions``.
"""

# Long on purpose: one state machine over one per-session memory; pure parts in rules.
from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable

import msgspec

from controller.events.synthesis.rules import (
    IN_RUN_STATES,
    MAX_OPEN_CALLS,
    MAX_PENDING,
    RULES,
    RUN_COMPLETED,
    RUN_ENDS,
    RUN_OVER_STATES,
    STALE,
    LinkRequest,
    Memo,
    OpenCall,
    OpenState,
    Pending,
    SessionKey,
    SynthRecord,
    answers,
    event_key,
    is_synthesized,
    lru_get,
    make_run_completed,
    make_stale,
    make_tool_result,
    pick_call,
    record_of,
    run_completed_key,
    run_id_of,
    same_run,
    tool_of,
    tool_result_key,
)
from protocol.events import Event, LinkType, SourceKind
from protocol.heartbeat import SessionSnapshot, SessionState

__all__ = ["LinkRequest", "SynthesisConfig", "Synthesizer"]

Result = tuple[list[Event], list[LinkRequest]]


class SynthesisConfig(msgspec.Struct, frozen=True):
    completion_grace_s: float = 10.0
    stale_after_s: float = 300.0
    max_sessions: int = 100_000  # per table (open state, memory); least recently used go


class Synthesizer:
    # B008: the config is a frozen Struct, so one shared default instance is safe.
    def __init__(self, config: SynthesisConfig = SynthesisConfig()) -> None:  # noqa: B008
        self.config = config
        self.counters: dict[str, int] = dict.fromkeys(RULES, 0)
        self.dropped: dict[str, int] = {"sessions": 0, "memos": 0, "tool_calls": 0, "pending": 0}
        self._open: OrderedDict[SessionKey, OpenState] = OrderedDict()
        self._memos: OrderedDict[SessionKey, Memo] = OrderedDict()
        self._wakeups: list[tuple[float, int, SessionKey]] = []
        self._order = itertools.count()
        self._clock: float | None = None  # the latest `now` we were given

    # -- inputs ------------------------------------------------------------------------------

    def on_event(self, event: Event) -> Result:
        sk = (event.tenant, event.host, event.session)
        if is_synthesized(event):
            self._note(sk, event)
            self._tidy(sk)
            return [], []
        kind = event.event_type
        if kind == "session.state":
            # Only the host agent reads screens; an agent emitting session.state is ignored.
            return (
                (self._on_screen(sk, event), [])
                if event.source_kind == SourceKind.SYSTEM
                else ([], [])
            )
        if kind == "tool_call":
            return self._on_tool_call(sk, event), []
        if kind == "tool_result":
            return [], self._on_tool_result(sk, event)
        if kind in RUN_ENDS:
            return self._on_run_end(sk, event)
        if kind == STALE:
            return [], self._on_agent_stale(sk, event)
        entry = self._open.get(sk)
        if entry is not None and entry.in_run and entry.run_id is None:
            entry.run_id = run_id_of(event)  # e.g. run.started names the run the screen shows
        return [], []

    def on_snapshot(self, tenant: str, host: str, snap: SessionSnapshot, now: float) -> list[Event]:
        self._advance(now)
        sk = (tenant, host, snap.name)
        if snap.state != SessionState.WORKING:
            self._end_stale_period(sk)
            return []
        period = snap.state_since if snap.state_since is not None else snap.last_output_at
        if period is None:
            return []  # no clock to measure silence against
        # Silence counts from the later of last output and entering working: output from
        # before the run started says nothing about whether the run is stuck.
        silent_since = max(t for t in (snap.last_output_at, snap.state_since) if t is not None)
        entry = self._entry(sk)
        if entry.stale_period != period:
            entry.stale_period, entry.stale_done = period, False
        if entry.stale_done or now - silent_since <= self.config.stale_after_s:
            return []
        entry.stale_done = True
        memo = self._memos.get(sk)
        if memo is not None and memo.agent_stale_ts is not None and memo.agent_stale_ts >= period:
            return []
        event = make_stale(
            sk,
            period=period,
            state_since=snap.state_since,
            last_output_at=snap.last_output_at,
            silent_since=silent_since,
            stale_after_s=self.config.stale_after_s,
        )
        return self._emit(sk, [event])

    def tick(self, now: float) -> list[Event]:
        self._advance(now)
        out: list[Event] = []
        while self._wakeups and self._wakeups[0][0] <= now:
            sk = heapq.heappop(self._wakeups)[2]
            entry = self._open.get(sk)
            if entry is None:
                continue  # resolved or evicted since; wake-ups are not cancelled eagerly
            due = [p for p in entry.pending if p.deadline <= now]
            entry.pending = [p for p in entry.pending if p.deadline > now]
            events = [
                make_run_completed(
                    sk,
                    run_id=p.run_id,
                    old=p.old,
                    new=p.new,
                    working_since=p.working_since,
                    idle_at=p.idle_at,
                    grace_s=self.config.completion_grace_s,
                    signal_key=p.signal_key,
                )
                for p in due
            ]
            out += self._emit(sk, events)
            self._tidy(sk)
        return out

    # -- rule 1: run.completed from the screen ---------------------------------------------

    def _on_screen(self, sk: SessionKey, event: Event) -> list[Event]:
        old, new = str(event.payload.get("old")), str(event.payload.get("new"))
        run_id = run_id_of(event)
        if new in IN_RUN_STATES:
            entry = self._entry(sk)
            if not entry.in_run:
                entry.in_run = True
                # Coming from working/blocked means we missed the start: since is unknown.
                entry.working_since = None if old in IN_RUN_STATES else event.ts
                entry.run_id = run_id
            entry.run_id = entry.run_id or run_id
            return []
        known = self._open.get(sk)
        if new not in RUN_OVER_STATES or not (
            (known is not None and known.in_run) or old in IN_RUN_STATES
        ):
            return []
        entry = known or self._entry(sk)
        before = f"screen:{old}->{new}"
        signal = event_key(event)
        out = self._close_calls(sk, entry, lambda _c: True, before, event.ts, signal)
        run_id = run_id or entry.run_id
        if new == "idle" and not self._consume_end(sk, run_id, entry.working_since):
            # Grace counts from when we learned of the transition when that is later than
            # its ts: a backlog replayed after downtime still gets the full grace period.
            start = event.ts if self._clock is None else max(event.ts, self._clock)
            pending = Pending(
                key=run_completed_key(sk, run_id, event.ts),
                run_id=run_id,
                old=old,
                new=new,
                working_since=entry.working_since,
                idle_at=event.ts,
                deadline=start + self.config.completion_grace_s,
                signal_key=signal,
            )
            self._add_pending(sk, entry, pending)
        entry.in_run, entry.working_since, entry.run_id = False, None, None
        memo = self._memos.get(sk)
        if memo is not None:
            memo.ends.clear()  # ends not matched by now belong to no later period
        self._tidy(sk)
        return out

    def _consume_end(self, sk: SessionKey, run_id: str | None, since: float | None) -> bool:
        memo = self._memos.get(sk)
        if memo is None:
            return False
        for end in memo.ends:
            if same_run(run_id, end[0], end[1], since):
                memo.ends.remove(end)
                return True
        return False

    def _add_pending(self, sk: SessionKey, entry: OpenState, pending: Pending) -> None:
        if len(entry.pending) >= MAX_PENDING:
            entry.pending.pop(0)
            self.dropped["pending"] += 1
        entry.pending.append(pending)
        heapq.heappush(self._wakeups, (pending.deadline, next(self._order), sk))

    def _on_run_end(self, sk: SessionKey, event: Event) -> Result:
        run_id, ts, key = run_id_of(event), event.ts, event_key(event)
        entry = self._open.get(sk)
        out: list[Event] = []
        links: list[LinkRequest] = []
        if entry is not None:
            out = self._close_calls(
                sk,
                entry,
                lambda c: run_id is None or c.run_id is None or c.run_id == run_id,
                event.event_type,
                ts,
                key,
            )
            waiting = [p for p in entry.pending if same_run(p.run_id, run_id, ts, p.working_since)]
            if waiting:
                entry.pending.remove(waiting[0])
                self._tidy(sk)
                return out, links
        if (
            entry is not None
            and entry.in_run
            and same_run(entry.run_id, run_id, ts, entry.working_since)
        ):
            self._memo(sk).ends.append((run_id, ts))  # the screen has yet to go idle
        elif link := self._supersede(
            sk, key, lambda r: r.rule == RUN_COMPLETED and same_run(r.run_id, run_id, ts, r.since)
        ):
            links.append(link)
        else:
            self._memo(sk).ends.append((run_id, ts))  # maybe we joined mid-run
        self._tidy(sk)
        return out, links

    # -- rule 2: stale ----------------------------------------------------------------------

    def _on_agent_stale(self, sk: SessionKey, event: Event) -> list[LinkRequest]:
        ts = event.ts
        entry = self._open.get(sk)
        if entry is not None and entry.stale_period is not None and ts >= entry.stale_period:
            entry.stale_done = True
        link = self._supersede(
            sk, event_key(event), lambda r: r.rule == STALE and (r.since is None or ts >= r.since)
        )
        if link is not None:
            return [link]
        memo = self._memo(sk)
        memo.agent_stale_ts = ts if memo.agent_stale_ts is None else max(memo.agent_stale_ts, ts)
        return []

    def _end_stale_period(self, sk: SessionKey) -> None:
        entry = self._open.get(sk)
        if entry is not None and entry.stale_period is not None:
            entry.stale_period, entry.stale_done = None, False
        memo = self._memos.get(sk)
        if memo is not None:
            memo.agent_stale_ts = None
        self._tidy(sk)

    # -- rule 3: tool_result ---------------------------------------------------------------

    def _on_tool_call(self, sk: SessionKey, event: Event) -> list[Event]:
        run_id, key = run_id_of(event), event_key(event)
        entry = self._entry(sk)
        out = self._close_calls(sk, entry, lambda c: c.run_id == run_id, "tool_call", event.ts, key)
        if len(entry.calls) >= MAX_OPEN_CALLS:
            entry.calls.pop(0)
            self.dropped["tool_calls"] += 1
        entry.calls.append(OpenCall(key=key, tool=tool_of(event), run_id=run_id, ts=event.ts))
        if entry.in_run and entry.run_id is None:
            entry.run_id = run_id
        return out

    def _on_tool_result(self, sk: SessionKey, event: Event) -> list[LinkRequest]:
        run_id, tool = run_id_of(event), tool_of(event)
        targets = {link.target for link in event.links if link.type == LinkType.CAUSED_BY}
        entry = self._open.get(sk)
        open_match = pick_call(entry.calls if entry else [], targets, run_id, tool)
        if open_match is not None and entry is not None:
            entry.calls.remove(open_match)
            self._tidy(sk)
            return []
        key = event_key(event)
        link = self._supersede(sk, key, lambda r: answers(r, targets, run_id, tool))
        return [link] if link is not None else []

    def _close_calls(
        self,
        sk: SessionKey,
        entry: OpenState,
        which: Callable[[OpenCall], bool],
        before: str,
        ts: float,
        signal_key: str | None,
    ) -> list[Event]:
        closing = [c for c in entry.calls if which(c)]
        if not closing:
            return []
        entry.calls = [c for c in entry.calls if not which(c)]
        events = [
            make_tool_result(
                sk,
                call_key=c.key,
                tool=c.tool,
                run_id=c.run_id,
                call_ts=c.ts,
                before=before,
                ts=ts,
                signal_key=signal_key,
            )
            for c in closing
        ]
        return self._emit(sk, events)

    # -- synthesized events and their supersession -------------------------------------------

    def _emit(self, sk: SessionKey, events: list[Event]) -> list[Event]:
        """Count and remember what is new; a key already synthesized (replay) is not repeated."""
        fresh = []
        for event in events:
            memo = self._memos.get(sk)
            if memo is not None and any(r.key == event.idempotency_key for r in memo.records):
                continue
            self._note(sk, event)
            self.counters[event.event_type] += 1
            fresh.append(event)
        return fresh

    def _note(self, sk: SessionKey, event: Event) -> None:
        record = record_of(event)
        if record is None:
            return
        memo = self._memo(sk)
        if all(r.key != record.key for r in memo.records):
            memo.records.append(record)
        entry = self._open.get(sk)
        if entry is None:
            return
        # A stored synthesized event replayed after a restart settles what it stood for.
        entry.pending = [p for p in entry.pending if p.key != record.key]
        entry.calls = [c for c in entry.calls if tool_result_key(sk, c.key) != record.key]
        if record.rule == STALE and record.since == entry.stale_period:
            entry.stale_done = True

    def _supersede(
        self, sk: SessionKey, real_key: str, match: Callable[[SynthRecord], bool]
    ) -> LinkRequest | None:
        memo = self._memos.get(sk)
        if memo is None:
            return None
        record = next((r for r in memo.records if not r.superseded and match(r)), None)
        if record is None:
            return None
        # Kept, marked: its key must still stop a replay from synthesizing it again.
        record.superseded = True
        return LinkRequest(from_key=real_key, to_key=record.key, type=LinkType.SUPERSEDES)

    # -- bounded per-session tables ------------------------------------------------------------

    def _advance(self, now: float) -> None:
        self._clock = now if self._clock is None else max(self._clock, now)

    def _entry(self, sk: SessionKey) -> OpenState:
        entry, evicted = lru_get(self._open, sk, OpenState, self.config.max_sessions)
        self.dropped["sessions"] += evicted
        return entry

    def _memo(self, sk: SessionKey) -> Memo:
        memo, evicted = lru_get(self._memos, sk, Memo, self.config.max_sessions)
        self.dropped["memos"] += evicted
        return memo

    def _tidy(self, sk: SessionKey) -> None:
        entry = self._open.get(sk)
        if entry is not None and entry.empty():
            del self._open[sk]
        memo = self._memos.get(sk)
        if memo is not None and memo.empty():
            del self._memos[sk]

    @property
    def tracked(self) -> tuple[int, int]:
        """(sessions with open state, sessions with remembered history), for metrics."""
        return len(self._open), len(self._memos)
