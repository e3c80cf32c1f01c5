"""Host lifecycle notices: startup, graceful shutdown, reconnected."""

from __future__ import annotations

from enum import Enum

from protocol.codec import Message
from protocol.ids import Id


class LifecycleKind(str, Enum):
    STARTUP = "startup"
    SHUTDOWN = "shutdown"
    RECONNECTED = "reconnected"


class Lifecycle(Message, frozen=True, tag="lifecycle"):
    tenant: Id
    host: Id
    boot_id: Id
    event: LifecycleKind
    sent_at: float
    agent_version: str
    interval_s: float = 5.0
