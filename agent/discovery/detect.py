"""What a session is doing, read from its screen and pane title by a runtime's rules.

``classify`` is pure: one screen in, one :class:`Match` out, with the rule and line that
decided it so `fleet explain` can show its reasoning. :class:`StateTracker` adds time:
a screen caught mid-redraw must not flap the reported state.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from agent.discovery.runtimes import DetectionRules, Rule, compile_pattern
from protocol.heartbeat import SessionState

__all__ = ["Match", "StateTracker", "bottom_lines", "classify"]

SOURCE_SCREEN = "screen"
SOURCE_TITLE = "title"
SOURCE_DEFAULT = "default"
NO_MATCH_RULE = "no-match"

# Evaluation order: a question on screen outranks a spinner (TUIs keep spinners up
# while asking), and anything busy outranks the input box that many TUIs always show.
_ORDER: tuple[tuple[SessionState, str, str], ...] = (
    (SessionState.BLOCKED, "blocked", "title_blocked"),
    (SessionState.WORKING, "busy", "title_busy"),
    (SessionState.IDLE, "idle", "title_idle"),
)


class Match(msgspec.Struct, frozen=True):
    state: SessionState
    rule: str  # the rule's name, or "no-match"
    source: str  # "screen" | "title" | "default"
    line_no: int | None = None  # 1-based row of the visible screen that matched
    line: str | None = None  # that row's text, or the title when source is "title"


def bottom_lines(screen: Sequence[str], n: int) -> list[tuple[int, str]]:
    """The bottom ``n`` non-empty rows as (1-based row, text), top to bottom."""
    if isinstance(screen, str):  # a whole capture passed as one string
        screen = screen.splitlines()
    picked: list[tuple[int, str]] = []
    for index in range(len(screen) - 1, -1, -1):
        text = screen[index].rstrip()
        if text.strip():
            picked.append((index + 1, text))
            if len(picked) >= n:
                break
    picked.reverse()
    return picked


def classify(screen: Sequence[str], title: str, rules: DetectionRules) -> Match:
    """The state a screen shows: blocked > busy > idle, else UNKNOWN.

    ``screen`` is the visible pane as plain text rows (capture-pane without escapes).
    Within a state, screen rules are tried before title rules, each rule against the
    rows bottom-up, so the reported row is the most recent occurrence; a rule's
    ``unless_below`` voids the rows above the lowest row it matches (a menu-like prompt in
    the history above the live input box). Precedence and the rules: docs/runtimes.md.
    """
    window = bottom_lines(screen, rules.bottom_lines)
    for state, screen_kind, title_kind in _ORDER:
        found = _search_screen(window, getattr(rules, screen_kind), state)
        if found is None and title:
            found = _search_title(title, getattr(rules, title_kind), state)
        if found is not None:
            return found
    return Match(SessionState.UNKNOWN, NO_MATCH_RULE, SOURCE_DEFAULT)


def _search_screen(
    window: list[tuple[int, str]], rules: list[Rule], state: SessionState
) -> Match | None:
    for rule in rules:
        regex = compile_pattern(rule.pattern)
        veto = compile_pattern(rule.unless_below) if rule.unless_below else None
        for line_no, text in reversed(window):
            if regex.search(text):
                return Match(state, rule.name, SOURCE_SCREEN, line_no, text)
            # Rows are read bottom-up: once the veto row is seen, every row above it is
            # above it on screen too, so this rule cannot match any more.
            if veto is not None and veto.search(text):
                break
    return None


def _search_title(title: str, rules: list[Rule], state: SessionState) -> Match | None:
    for rule in rules:
        if compile_pattern(rule.pattern).search(title):
            return Match(state, rule.name, SOURCE_TITLE, None, title)
    return None


class StateTracker:
    """Debounced state of one session: a new state is reported once it held ``debounce_s``.

    Starts at UNKNOWN (nothing reported yet). ``since`` is when the reported state was
    first seen, not when the debounce let it through, so state ages are not skewed.
    """

    def __init__(self, rules: DetectionRules) -> None:
        self.rules = rules
        self._state = SessionState.UNKNOWN
        self._since: float | None = None
        self._pending: SessionState | None = None
        self._pending_since = 0.0
        self._last_match: Match | None = None

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def since(self) -> float | None:
        return self._since

    @property
    def last_match(self) -> Match | None:
        """The latest classification; it may show a state not yet reported (``pending``)."""
        return self._last_match

    @property
    def pending(self) -> SessionState | None:
        """A state seen but not yet held for ``debounce_s``, if any."""
        return self._pending

    def observe(self, screen: Sequence[str], title: str, now: float) -> tuple[SessionState, bool]:
        """(reported state, whether it changed with this observation)."""
        match = classify(screen, title, self.rules)
        self._last_match = match
        if match.state is self._state:
            self._pending = None
            return self._state, False
        if match.state is not self._pending:
            self._pending, self._pending_since = match.state, now
        if now - self._pending_since >= self.rules.debounce_s:
            self._state, self._since = match.state, self._pending_since
            self._pending = None
            return self._state, True
        return self._state, False
