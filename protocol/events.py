"""Events as they travel from a host agent to the controller (JetStream, fleet.<t>.evt.>).

An agent's emission (see protocol/emission.py) is coerced into this shape by the host agent;
the host agent also produces events of its own (state changes, audit, validation errors).
The controller stores them in the events table, one row per (host, boot_id, seq).
"""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import Annotated, Any

import msgspec

from protocol.codec import Message
from protocol.ids import BulkId, check_ids

MAX_SUMMARY_CHARS = 2000
MAX_EXCERPT_CHARS = 500


class SourceKind(str, Enum):
    AGENT = "agent"  # emitted by the agent itself through the emission contract
    SYSTEM = "system"  # observed, synthesized or validated by agentfleet
    OPERATOR = "operator"  # caused by an operator's command (audit)


class Severity(str, Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class LinkType(str, Enum):
    SPAWNED = "spawned"
    BLOCKS = "blocks"
    BLOCKED_BY = "blocked_by"
    SUPERSEDES = "supersedes"
    RESOLVES = "resolves"
    CAUSED_BY = "caused_by"
    DUPLICATES = "duplicates"


class EventLink(msgspec.Struct, frozen=True, kw_only=True):
    """A typed edge from the event carrying it to another event, named by idempotency key."""

    type: LinkType
    target: str


# Event types the product knows; anything else is accepted with attention_candidate = 0, and
# never opens an attention item (controller/attention/rules.py: event_condition). Every type
# agentfleet itself emits is here (docs/protocol.md lists them); attention.* events are still
# never a cause of attention (controller/attention/live.py: OWN_TYPES).
KNOWN_EVENT_TYPES = frozenset(
    {
        "run.started",
        "run.completed",
        "run.state",
        "run.cancel_requested",
        "run.cancelled",
        "run.error",
        "tool_call",
        "tool_result",
        "blocked",  # a runtime's hook: it waits for the operator (agent/hooks/translate.py)
        "stale",
        "session.state",
        "session.unrepresentable",
        "validation_error",
        "command",
        "operator.answer",
        "lease.acquired",
        "lease.released",
        "lease.expired",
        "attention.opened",
        "attention.resolved",
        "attention.acked",
        "attention.snoozed",
        "reaction.match",
        "reaction.skip",
        "reaction.delivery",
        "report.weekly",
        "report.inbox",
    }
)
# Types that change what every controller replica holds when it stores them (an ack names an
# operator): only a controller may publish them. The broker denies them to hosts
# (controller/natsserver/config.py: host_permissions), so a host cannot ack its own items.
CONTROLLER_ONLY_TYPES = (
    "attention.opened",
    "attention.resolved",
    "attention.acked",
    "attention.snoozed",
)


_ID_KINDS = ("tenant", "host", "session", "boot")


class Event(Message, frozen=True, tag="event"):
    tenant: BulkId
    host: BulkId
    session: BulkId
    boot_id: BulkId
    seq: Annotated[int, msgspec.Meta(ge=0)]
    ts: float  # when it happened, unix time (host clock)
    event_type: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    summary: Annotated[str, msgspec.Meta(max_length=MAX_SUMMARY_CHARS)]
    source_kind: SourceKind = SourceKind.AGENT
    tags: list[str] = []
    payload: dict[str, Any] = {}
    severity: Severity = Severity.INFO
    confidence: float | None = None
    provenance: str | None = None  # for system events: the signal they were inferred from
    idempotency_key: str | None = None
    dedupe_key: str | None = None
    attention_candidate: bool = False
    operator_action_required: bool = False
    risk_detected: bool = False
    artifact_refs: list[str] = []
    run_id: str | None = None
    links: list[EventLink] = []

    def __post_init__(self) -> None:
        check_ids([self.tenant, self.host, self.session, self.boot_id], _ID_KINDS)


def derived_boot_id(key: str) -> str:
    """boot_id for events the controller derives (synthesized, validation errors of stream
    messages): stable for a given idempotency key, so a replay derives the same row. Such
    events carry seq 0, which sequence-gap accounting ignores."""
    return "s" + hashlib.sha256(key.encode()).hexdigest()[:15]
