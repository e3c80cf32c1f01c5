"""Host liveness from the controller's own clock (DESIGN.md: never from TCP state).

ok → suspect after 3 missed intervals → down after 6; `stopped` after a graceful shutdown.
"""

from __future__ import annotations

import statistics

from protocol.api import HostState
from protocol.heartbeat import DOWN_AFTER_INTERVALS, SUSPECT_AFTER_INTERVALS

# A controller further behind than this is overloaded past what liveness can excuse.
MAX_BEHIND_S = 60.0


def state_for_age(age_s: float, interval_s: float) -> HostState:
    if age_s > DOWN_AFTER_INTERVALS * interval_s:
        return HostState.DOWN
    if age_s > SUSPECT_AFTER_INTERVALS * interval_s:
        return HostState.SUSPECT
    return HostState.OK


class Behind:
    """How far behind the heartbeats it processes the controller runs: the median lag
    (controller clock minus `sent_at`) over the hosts whose heartbeats it processed since the
    last tick, one per host (their latest), the first SAMPLE hosts. A median over hosts, so
    that a few hosts with wrong clocks, or one sending a flood of backdated heartbeats, cannot
    move it; clamped to [0, MAX_BEHIND_S], so that a fleet of wrong clocks cannot hide a dead
    host for long."""

    SAMPLE = 512

    def __init__(self) -> None:
        self._lags: dict[tuple[str, str], float] = {}

    def observe(self, key: tuple[str, str], lag_s: float) -> None:
        if key in self._lags or len(self._lags) < self.SAMPLE:
            self._lags[key] = lag_s

    def take(self) -> float:
        lags, self._lags = self._lags, {}
        if not lags:
            return 0.0
        return min(MAX_BEHIND_S, max(0.0, statistics.median(lags.values())))
