"""Host liveness from the controller's own clock (DESIGN.md: never from TCP state).

ok → suspect after 3 missed intervals → down after 6; `stopped` after a graceful shutdown.
"""

from __future__ import annotations

from protocol.api import HostState
from protocol.heartbeat import DOWN_AFTER_INTERVALS, SUSPECT_AFTER_INTERVALS


def state_for_age(age_s: float, interval_s: float) -> HostState:
    if age_s > DOWN_AFTER_INTERVALS * interval_s:
        return HostState.DOWN
    if age_s > SUSPECT_AFTER_INTERVALS * interval_s:
        return HostState.SUSPECT
    return HostState.OK
