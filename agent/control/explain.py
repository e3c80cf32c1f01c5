"""`fleet explain`: which signal gives a session its state, and what each signal says.

Precedence is agent/hooks/signals.py's: hook/contract > screen rule > title. The hook part
is the discovery pass's last decision (what `fleet ps` shows) and the latest hook state it
weighed; the screen and the title are read fresh, as the operator sees them now.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

from agent.control.screenproof import excerpt
from agent.discovery.detect import Match, classify
from agent.discovery.runtimes import RuntimeSpec
from agent.hooks.signals import HookState, Resolved

# HookReceiver.account: (the last pass's decision, the latest hook state) of a session.
Signals = Callable[[str], tuple[Resolved | None, HookState | None]]


class Explanation(TypedDict):
    """What `explain` answers, as the keyword arguments of the command's result."""

    message: str
    screen: str
    details: dict[str, Any]


def hook_view(hook: HookState | None, decides: bool, now: float) -> dict[str, object] | None:
    if hook is None:
        return None
    return {
        "state": hook.state.value,
        "seq": hook.seq,
        "age_s": round(max(0.0, now - hook.at), 1),
        "event": f"hook:{hook.event}",
        "decides": decides,
    }


def screen_view(match: Match) -> dict[str, object]:
    return {
        "state": match.state.value,
        "rule": match.rule,
        "source": match.source,
        "line_no": match.line_no,
        "line": match.line,
    }


def explanation(
    session: str,
    spec: RuntimeSpec,
    match: Match,
    lines: list[str],
    title: str,
    signals: tuple[Resolved | None, HookState | None],
    now: float,
) -> Explanation:
    decided, hook = signals
    by_hook = hook is not None and decided is not None and decided.source == "hook"
    # A hook that no longer decides expired (TTL) or was overtaken by a screen change: the
    # signals module's reason says which.
    expired = hook is not None and decided is not None and not by_hook
    state = decided.state if by_hook and decided is not None else match.state
    title_match = classify([], title, spec.rules) if title else None
    hook_part = hook_view(hook, by_hook, now)
    lines_out = [
        f"{session} is {state.value}, decided by "
        + (f"hook:{hook.event}" if by_hook and hook else _screen_words(match))
        + f" [runtime {spec.name}]",
        "  hook:   " + _hook_words(hook_part, expired, decided),
        "  screen: " + _screen_words(match) + f" -> {match.state.value}",
        "  title:  " + _title_words(title, title_match),
    ]
    return {
        "message": "\n".join(lines_out),
        "screen": excerpt(lines),
        "details": {
            "state": state.value,
            "decided_by": "hook" if by_hook else match.source,
            "reason": decided.reason if decided is not None else None,
            "hook": hook_part,
            "hook_expired": expired,
            # The screen rule's fields at the top level too, as before the hooks.
            **{k: v for k, v in screen_view(match).items() if k != "state"},
            "screen_rule": screen_view(match),
            "title": {
                "text": title,
                "rule": title_match.rule if title_match else None,
                "state": title_match.state.value if title_match else None,
            },
            "runtime": spec.name,
        },
    }


def _screen_words(match: Match) -> str:
    if match.source == "screen":
        return f"screen rule {match.rule!r}, row {match.line_no}: {match.line!r}"
    if match.source == "title":
        return f"title rule {match.rule!r}: {match.line!r}"
    return f"{match.rule} (no rule matched)"


def _hook_words(part: dict[str, object] | None, expired: bool, decided: Resolved | None) -> str:
    if part is None:
        return "none"
    said = f"{part['event']} #{part['seq']}, {part['age_s']}s ago: {part['state']}"
    if expired and decided is not None:
        return f"{said} (expired to the screen: {decided.reason})"
    return said


def _title_words(title: str, found: Match | None) -> str:
    if not title:
        return "none"
    if found is None or found.source != "title":
        return f"{title!r} (no title rule)"
    return f"{title!r} (title rule {found.rule!r} -> {found.state.value})"
