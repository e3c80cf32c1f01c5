"""The controller's log lines for host changes, written once per liveness tick: one line per
change while few hosts change, one summary line when many do (a fleet starting up, a
partition, an overloaded controller). Logging 50,000 lines costs the CPU the controller is
short of exactly then (docs/benchmarks.md: 11-12 % of samples were `logging` in a cascade).
"""

from __future__ import annotations

import logging

from controller.fleet.state import Transition
from protocol.api import HostState
from protocol.lifecycle import Lifecycle

EACH_UP_TO = 20
_BAD = (HostState.SUSPECT, HostState.DOWN)


class HostChangeLog:
    def __init__(self, logger: logging.Logger, each_up_to: int = EACH_UP_TO) -> None:
        self.logger = logger
        self.each_up_to = each_up_to
        self._lines: list[tuple[str, str, tuple[object, ...]]] = []  # (summary key, fmt, args)
        self._bad = 0

    def transition(self, t: Transition) -> None:
        old = t.old.value if t.old else "new"
        self._lines.append(
            (
                f"{old} -> {t.new.value}",
                "host %s/%s: %s -> %s (%s)",
                (t.tenant, t.host, old, t.new.value, t.reason),
            )
        )
        self._bad += t.new in _BAD

    def notice(self, lc: Lifecycle) -> None:
        self._lines.append(
            (
                f"{lc.event.value} notices",
                "host %s/%s: %s (boot %s)",
                (lc.tenant, lc.host, lc.event.value, lc.boot_id),
            )
        )

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        bad, self._bad = self._bad, 0
        if len(lines) <= self.each_up_to:
            for _key, fmt, args in lines:
                self.logger.info(fmt, *args)
            return
        by_kind: dict[str, int] = {}
        for key, _fmt, _args in lines:
            by_kind[key] = by_kind.get(key, 0) + 1
        self.logger.log(
            logging.WARNING if bad else logging.INFO,
            "%d host changes in one tick: %s",
            len(lines),
            ", ".join(f"{n} {key}" for key, n in sorted(by_kind.items())),
        )
