"""Which reaction rules fire for an event, with cooldown and dedupe: pure, clock injected.

A rule is a *candidate* for an event when its `event_type` globs match; each candidate
either matches (`reaction.match`) or is skipped with a reason category (`reaction.skip`:
`target`, `severity`, `text`, `state`, `cooldown`, `blocked_dialog`). An attention candidate
that no rule considers is a skip with reason `no_rule`; any other event with no candidate
rule records nothing (that would be one more event for every event).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.reactions.rules import Action, ReactionsFile, Rule, mismatch
from protocol.events import Event

OWN_TYPES = ("reaction.",)  # never reacted to: a rule on them would feed itself


@dataclass(frozen=True, slots=True)
class Decision:
    event: Event
    rule: Rule | None
    reason: str | None  # None: matched
    candidates: int
    dedupe_key: str = ""

    @property
    def matched(self) -> bool:
        return self.reason is None


@dataclass
class ReactionEngine:
    config: ReactionsFile = field(default_factory=ReactionsFile)
    wall: Callable[[], float] = time.time
    _fired: dict[tuple[str, str], float] = field(default_factory=dict)  # (rule, key) -> at

    def decide(self, event: Event, session_state: str | None) -> list[Decision]:
        if event.event_type.startswith(OWN_TYPES):
            return []
        candidates = [
            r for r in self.config.rules if mismatch(r, event, session_state) != "event_type"
        ]
        if not candidates:
            if event.attention_candidate:
                return [Decision(event, None, "no_rule", 0)]
            return []
        now = self.wall()
        out = []
        for rule in candidates:
            key = event.dedupe_key or (
                f"{rule.name}:{event.tenant}/{event.host}/{event.session}:{event.event_type}"
            )
            reason = mismatch(rule, event, session_state)
            if reason is None:
                last = self._fired.get((rule.name, key))
                if last is not None and now - last < rule.cooldown_s:
                    reason = "cooldown"
                elif rule.action is Action.REPLY and session_state == "blocked" and not rule.choice:
                    reason = "blocked_dialog"
                else:
                    self._fired[(rule.name, key)] = now
            out.append(Decision(event, rule, reason, len(candidates), key))
        self._forget(now)
        return out

    def _forget(self, now: float) -> None:
        if len(self._fired) < 10_000:
            return
        longest = max((r.cooldown_s for r in self.config.rules), default=0.0)
        self._fired = {k: t for k, t in self._fired.items() if now - t < longest}
