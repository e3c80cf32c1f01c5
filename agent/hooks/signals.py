"""Which signal decides a session's state: hook/contract > screen rule > title.

Pure. The runtime's own word (a hook, notify or extension event) is the best witness while it
is fresh; the screen is the fallback. A hook state stops deciding when

- it is older than its TTL (`HOOK_TTL_S`: a runtime can go quiet without saying so, e.g.
  Claude Code fires no Stop on a user interrupt), or
- the screen has since changed to a different state (`SETTLE_S` after the hook): something
  happened the runtime did not report (an interrupt, a dialog answered in the pane, a new
  prompt to a runtime without a start hook), or
- the hook says idle but the screen still shows work `IDLE_HOOK_HOLD_S` later: the next turn
  began before the screen ever read idle.

Each hook signal carries the inbox's sequence number (arrival order per session) and the
time the runtime sent it, so `fleet explain` can show "hook Stop #12, 3.2 s ago".
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.heartbeat import SessionState

# How long a hook state holds without news. A permission dialog waits for the operator as
# long as it takes; a busy or idle claim is re-checked against the screen sooner.
HOOK_TTL_S: dict[SessionState, float] = {
    SessionState.WORKING: 60.0,
    SessionState.IDLE: 60.0,
    SessionState.BLOCKED: 900.0,
}
# A screen change this long after the hook outranks it. After "working" or "blocked" the
# screen may take a moment, or misread a dialog, before it shows the same. After "idle"
# (the turn ended) a busy screen is new activity the runtime may have no hook for (Codex has
# no start signal): it wins at once, beyond the screen's debounce (a last spinner frame).
SETTLE_S: dict[SessionState, float] = {
    SessionState.WORKING: 2.0,
    SessionState.BLOCKED: 2.0,
    SessionState.IDLE: 0.5,
}

DEFINITIVE = (SessionState.IDLE, SessionState.WORKING, SessionState.BLOCKED)

# "The turn ended" against a screen that still shows work: the screen may lag the hook by a
# poll and its debounce, no longer. Past this the screen is right: the next turn began before
# the screen ever read idle (a prompt typed or queued right after the answer; seen with
# Codex, whose notify is its only signal, so no start hook would correct it).
IDLE_HOOK_HOLD_S = 2.5


@dataclass(frozen=True, slots=True)
class HookState:
    state: SessionState
    seq: int  # the inbox's arrival number for this session
    at: float  # when the runtime sent it (host clock)
    event: str  # e.g. "claude:Stop", "codex:agent-turn-complete", "pi:agent_end"


@dataclass(frozen=True, slots=True)
class ScreenView:
    """What the screen rules report: the debounced state, since when, and how it was read."""

    state: SessionState
    since: float | None
    source: str = "screen"  # "screen" | "title" | "default" (agent.discovery.detect.Match)


@dataclass(frozen=True, slots=True)
class Resolved:
    state: SessionState
    source: str  # "hook", or the screen's source
    reason: str
    seq: int | None = None
    age_s: float | None = None


def newer(current: HookState | None, incoming: HookState) -> HookState:
    """The state to keep: a later sequence number wins (lines can be read out of order)."""
    return incoming if current is None or incoming.seq > current.seq else current


def resolve(hook: HookState | None, screen: ScreenView, now: float) -> Resolved:
    if hook is None:
        return Resolved(screen.state, screen.source, f"no hook signal; {screen.source}")
    age = max(0.0, now - hook.at)
    ttl = HOOK_TTL_S.get(hook.state, 0.0)
    if age > ttl:
        why = f"hook {hook.event} #{hook.seq} stale ({age:.1f}s > {ttl:.0f}s); {screen.source}"
        return Resolved(screen.state, screen.source, why, hook.seq, age)
    overtaken = (
        screen.state in DEFINITIVE
        and screen.state is not hook.state
        and screen.since is not None
        and screen.since > hook.at + SETTLE_S.get(hook.state, 0.0)
    )
    if overtaken:
        why = f"screen became {screen.state.value} after hook {hook.event} #{hook.seq}"
        return Resolved(screen.state, screen.source, why, hook.seq, age)
    if (
        hook.state is SessionState.IDLE
        and screen.state is SessionState.WORKING
        and age > IDLE_HOOK_HOLD_S
    ):
        why = f"screen still {screen.state.value} {age:.1f}s after hook {hook.event} #{hook.seq}"
        return Resolved(screen.state, screen.source, why, hook.seq, age)
    return Resolved(
        hook.state, "hook", f"hook {hook.event} #{hook.seq}, {age:.1f}s ago", hook.seq, age
    )
