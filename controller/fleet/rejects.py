"""What happens to a heartbeat or lifecycle notice the controller refuses (too large, not
JSON, wrong schema, impersonating another host): it is dropped, counted (overall and per
host), logged at most once per 10 s, and turned into a `validation_error` event — at most
one per (tenant, host, kind) every 10 s, so a hostile host cannot flood the store."""

from __future__ import annotations

import logging
import time

from controller.events.system import Publish, system_event
from controller.fleet.ratelog import RateLimitedLog
from protocol import subjects
from protocol.emission import excerpt
from protocol.events import Severity

log = logging.getLogger(__name__)

EVENT_EVERY_S = 10.0
MAX_HOST_COUNTERS = 10_000


class Rejects:
    def __init__(self, counters: dict[str, int], publish: Publish) -> None:
        self.counters = counters
        self.publish = publish
        self.per_host: dict[str, int] = {}
        self._last_event: dict[tuple[str, str, str], float] = {}
        self._log = RateLimitedLog(log)

    async def reject(self, subject: str, data: bytes, kind: str, reason: str) -> None:
        name = {"hb": "malformed_heartbeats", "lc": "malformed_lifecycle"}.get(kind, kind)
        self.counters[name] = self.counters.get(name, 0) + 1
        self._log.warning(kind, "refused %s on %s: %s", kind, subject, reason)
        try:
            where = subjects.parse(subject)
        except subjects.SubjectError:
            return  # no valid host to count it against, or to file an event under
        key = f"{where.tenant}/{where.host}/{kind}"
        if key in self.per_host or len(self.per_host) < MAX_HOST_COUNTERS:
            self.per_host[key] = self.per_host.get(key, 0) + 1
        now = time.time()
        slot = (where.tenant, where.host, kind)
        if now - self._last_event.get(slot, 0.0) < EVENT_EVERY_S:
            return
        self._last_event[slot] = now
        event_key = f"invalid:{kind}:{where.tenant}:{where.host}:{int(now)}"
        event = system_event(
            where.tenant,
            where.host,
            "host",
            event_key,
            ts=now,
            event_type="validation_error",
            summary=f"refused {kind} message from {where.host}: {reason}"[:500],
            severity=Severity.WARNING,
            provenance="controller intake",
            payload={
                "reason": f"invalid_{kind}",
                "detail": reason[:500],
                "excerpt": excerpt(data[:2000].decode("utf-8", errors="replace")),
                "refused_since_last": self.per_host.get(key, 0),
            },
            tags=["validation_error", f"invalid_{kind}"],
        )
        try:
            await self.publish(event)
        except Exception as exc:
            log.debug("cannot publish the validation_error for %s: %s", subject, exc)
