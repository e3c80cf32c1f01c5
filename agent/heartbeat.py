"""Heartbeat numbering and timing: a new boot_id each start, a monotonic seq, jittered period."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

from protocol.heartbeat import JITTER, Heartbeat, SessionSnapshot


def new_boot_id() -> str:
    return uuid.uuid4().hex[:16]


def jittered(interval_s: float, jitter: float = JITTER) -> float:
    """The next wait: interval ±jitter, so a fleet restarted together spreads out."""
    return interval_s * random.uniform(1 - jitter, 1 + jitter)


@dataclass
class HeartbeatClock:
    tenant: str
    host: str
    interval_s: float
    agent_version: str
    boot_id: str = field(default_factory=new_boot_id)
    seq: int = 0

    def next(self, sessions: list[SessionSnapshot], now: float) -> Heartbeat:
        self.seq += 1
        return Heartbeat(
            tenant=self.tenant,
            host=self.host,
            boot_id=self.boot_id,
            seq=self.seq,
            sent_at=now,
            interval_s=self.interval_s,
            agent_version=self.agent_version,
            sessions=sessions,
        )
