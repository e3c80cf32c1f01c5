"""Every event type agentfleet emits is known (`KNOWN_EVENT_TYPES`) and documented in the
docs/protocol.md table; an unknown type never opens an attention item, a known one can."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from agent.hooks.inbox import HookSignal
from agent.hooks.translate import meaning, to_event
from controller.attention.rules import event_condition
from protocol.attention import AttentionKind
from protocol.events import KNOWN_EVENT_TYPES, Event

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def documented_types() -> set[str]:
    text = DOC.read_text()
    table = text.split("Event types produced by agentfleet itself", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("| `")]
    # The first column names the types ("`a`, `b` with tag `synthesized`": a and b).
    cells = [row.split("|")[1].split(" with ")[0] for row in rows]
    return {t for cell in cells for t in re.findall(r"`([a-z_.]+)`", cell)}


def test_the_known_types_are_the_documented_ones() -> None:
    assert documented_types() == set(KNOWN_EVENT_TYPES)


def hook_event(runtime: str, event: str, **payload: object) -> Event:
    sig = HookSignal("s1", runtime, event, 100.0, 1, payload)
    ev = to_event(sig, meaning(sig), tenant="t", host="h", boot_id="b", run_id=None)
    assert ev is not None, (runtime, event)
    return ev


def test_every_hook_event_type_is_known() -> None:
    signals: list[tuple[str, str, dict[str, object]]] = [
        ("claude", "UserPromptSubmit", {}),
        ("claude", "PreToolUse", {"tool_name": "Bash"}),
        ("claude", "PostToolUse", {"tool_name": "Bash"}),
        ("claude", "Notification", {"notification_type": "permission_prompt"}),
        ("claude", "Stop", {}),
        ("codex", "agent-turn-complete", {"turn-id": "t1"}),
        ("pi", "agent_end", {"stopReason": "error"}),
        ("pi", "tool_execution_end", {"toolName": "bash"}),
    ]
    for runtime, name, payload in signals:
        assert hook_event(runtime, name, **payload).event_type in KNOWN_EVENT_TYPES, name


def test_a_blocked_hook_opens_an_action_required_item_and_an_unknown_type_none() -> None:
    ev = hook_event("claude", "Notification", notification_type="permission_prompt")
    assert ev.event_type == "blocked"
    cond = event_condition(ev)
    assert cond is not None and cond.kind is AttentionKind.ACTION_REQUIRED, cond
    # The same flags on a type the product does not know: stored, never pushed.
    assert event_condition(msgspec.structs.replace(ev, event_type="blocked.somehow")) is None
