"""Reaction match/skip rates for the baseline report, from the stored ``reaction.*`` events
(controller/reactions/runner.py records every decision and every delivery)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from controller.reports.metrics import text
from protocol.events_api import StoredEvent
from protocol.reports_api import Count, ReactionRates

TOP_REASONS: Final = 10


@dataclass
class ReactionTally:
    matched: int = 0
    skipped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    def add(self, e: StoredEvent) -> None:
        if e.event_type == "reaction.match":
            self.matched += 1
        elif e.event_type == "reaction.skip":
            self.skipped += 1
            self.reasons[text(e.payload, "reason")] += 1
        elif e.event_type == "reaction.delivery":
            self.outcomes[text(e.payload, "outcome")] += 1

    def rates(self) -> ReactionRates:
        decisions = self.matched + self.skipped
        top = sorted(self.reasons.items(), key=lambda i: (-i[1], i[0]))[:TOP_REASONS]
        return ReactionRates(
            decisions=decisions,
            matched=self.matched,
            skipped=self.skipped,
            match_rate=round(self.matched / decisions, 4) if decisions else None,
            skip_rate=round(self.skipped / decisions, 4) if decisions else None,
            skip_reasons=[Count(key=k, count=n) for k, n in top],
            delivered=self.outcomes["delivered"],
            failed=self.outcomes["failed"],
        )
