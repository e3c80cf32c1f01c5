"""Where the host agent's own events come from: one tenant, one host, one boot.

Every event the agent makes (state changes, run transitions, leases, command audit) carries
the same three ids and seq 0 (the outbox numbers it); `Origin.event` is the one place that
fills them in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from protocol.events import Event, SourceKind


@dataclass(frozen=True, slots=True)
class Origin:
    tenant: str
    host: str
    boot_id: str

    def event(
        self,
        session: str,
        event_type: str,
        summary: str,
        source: SourceKind,
        *,
        ts: float | None = None,
        **fields: Any,
    ) -> Event:
        """A draft event (seq 0) from this agent; ``ts`` defaults to now."""
        return Event(
            tenant=self.tenant,
            host=self.host,
            session=session,
            boot_id=self.boot_id,
            seq=0,
            ts=time.time() if ts is None else ts,
            event_type=event_type,
            summary=summary,
            source_kind=source,
            **fields,
        )
