"""What a hook signal means: a state for the session and, maybe, an event for the outbox.

| runtime | signal | state | event |
| --- | --- | --- | --- |
| claude | SessionStart | idle | — |
| claude | UserPromptSubmit | working | `run.started` |
| claude | PreToolUse / PostToolUse | working | `tool_call` / `tool_result` |
| claude | Notification permission_prompt, elicitation_dialog | blocked | `blocked` (action) |
| claude | Notification idle_prompt | idle | — |
| claude | Stop | idle | `run.completed` |
| claude | SubagentStop | working | `tool_result` (the Task tool's subagent ended) |
| codex | notify agent-turn-complete | idle | `run.completed` |
| pi | agent_start / agent_end | working / idle | `run.started` / `run.completed` |
| pi | agent_end, stopReason aborted / error | idle | — / `run.error` |
| pi | tool_execution_start / _end | working | `tool_call` / `tool_result` |
| pi | session_start / turn_end | idle / — | — |

Claude fires no Stop on a user interrupt, and pi's interrupted agent_end says "aborted": the
cancel command and the screen end such a run (as cancelled), never the hook (as completed).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from agent.hooks.inbox import HookSignal
from protocol.events import MAX_SUMMARY_CHARS, Event, Severity, SourceKind
from protocol.heartbeat import SessionState

W, IDLE, B = SessionState.WORKING, SessionState.IDLE, SessionState.BLOCKED
BLOCKING_NOTIFICATIONS = ("permission_prompt", "elicitation_dialog")


@dataclass(frozen=True, slots=True)
class Meaning:
    state: SessionState | None
    event_type: str | None = None
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    action_required: bool = False
    run_id: str | None = None


def _claude(sig: HookSignal) -> Meaning:
    p = sig.payload
    tool = str(p.get("tool_name") or "")
    if sig.event == "SessionStart":
        return Meaning(IDLE, details={"source": p.get("source")})
    if sig.event == "UserPromptSubmit":
        return Meaning(W, "run.started", "prompt submitted", {"prompt": _cut(p.get("prompt"))})
    if sig.event == "PreToolUse":
        return Meaning(W, "tool_call", f"tool {tool}", {"tool": tool, "input": p.get("tool_input")})
    if sig.event == "PostToolUse":
        return Meaning(W, "tool_result", f"tool {tool} done", {"tool": tool})
    if sig.event == "Notification":
        kind = str(p.get("notification_type") or "")
        message = str(p.get("message") or kind)
        if kind in BLOCKING_NOTIFICATIONS:
            return Meaning(B, "blocked", message, {"notification": kind}, action_required=True)
        if kind == "idle_prompt":
            return Meaning(IDLE)
        return Meaning(None)
    if sig.event == "Stop":
        return Meaning(IDLE, "run.completed", "turn finished")
    if sig.event == "SubagentStop":
        return Meaning(W, "tool_result", "subagent finished", {"tool": "Task"})
    return Meaning(None)


# Codex runs a side turn in a thread of its own to title a new thread, and notifies for it too
# (seen on 0.171: same client and cwd, another thread-id, this prompt).
CODEX_TITLE_PROMPT = "Generate a concise, single-line task title"


def _codex(sig: HookSignal) -> Meaning:
    if sig.event == "agent-turn-complete":
        p = sig.payload
        inputs = p.get("input-messages")
        if isinstance(inputs, list) and any(
            isinstance(m, str) and m.startswith(CODEX_TITLE_PROMPT) for m in inputs
        ):
            return Meaning(None)  # not the user's turn
        last = _cut(p.get("last-assistant-message"))
        return Meaning(
            IDLE,
            "run.completed",
            "turn finished",
            {"last_message": last},
            run_id=_str(p.get("turn-id")),
        )
    return Meaning(None)


def _pi(sig: HookSignal) -> Meaning:
    p = sig.payload
    tool = str(p.get("toolName") or "")
    table = {
        "session_start": Meaning(IDLE),
        "agent_start": Meaning(W, "run.started", "prompt submitted"),
        "agent_end": _pi_end(str(p.get("stopReason") or "")),
        "tool_execution_start": Meaning(
            W, "tool_call", f"tool {tool}", {"tool": tool, "input": p.get("args")}
        ),
        "tool_execution_end": Meaning(
            W, "tool_result", f"tool {tool} done", {"tool": tool, "error": bool(p.get("isError"))}
        ),
    }
    return table.get(sig.event, Meaning(None))


def _pi_end(stop_reason: str) -> Meaning:
    if stop_reason == "aborted":
        # An interrupt: the cancel command (or the screen) ends that run, as a cancel.
        return Meaning(IDLE)
    if stop_reason == "error":
        return Meaning(IDLE, "run.error", "turn failed")
    return Meaning(IDLE, "run.completed", "turn finished")


def meaning(sig: HookSignal) -> Meaning:
    by_runtime = {"claude": _claude, "codex": _codex, "pi": _pi}
    fn = by_runtime.get(sig.runtime)
    m = fn(sig) if fn else Meaning(None)
    if sig.runtime == "claude" and m.run_id is None and m.event_type:
        # Claude's prompt_id names the turn: one run id from UserPromptSubmit to Stop.
        return replace(m, run_id=_str(sig.payload.get("prompt_id")))
    return m


def to_event(
    sig: HookSignal, m: Meaning, *, tenant: str, host: str, boot_id: str, run_id: str | None
) -> Event | None:
    """The outbox event for one signal (None when it only moves the state); `run_id` is the
    agent's id for the session's current run, else the runtime's own."""
    if m.event_type is None:
        return None
    return Event(
        tenant=tenant,
        host=host,
        session=sig.session,
        boot_id=boot_id,
        seq=0,
        ts=sig.at,
        event_type=m.event_type,
        summary=f"{sig.session}: {m.summary}"[:MAX_SUMMARY_CHARS],
        source_kind=SourceKind.AGENT,  # the runtime said it, not the screen
        provenance=f"hook:{sig.runtime}:{sig.event}",
        payload={**m.details, "hook": sig.event, "hook_seq": sig.seq},
        severity=Severity.WARNING if m.action_required else Severity.INFO,
        attention_candidate=m.action_required,
        operator_action_required=m.action_required,
        run_id=run_id or m.run_id,
        tags=["hook"],
    )


def _cut(value: object, limit: int = 500) -> str | None:
    if value is None:
        return None
    s = str(value)
    return s if len(s) <= limit else s[:limit] + "…"


def _str(value: object) -> str | None:
    return str(value) if value else None
