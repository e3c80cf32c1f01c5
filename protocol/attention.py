"""The attention queue and the live feed on the wire: what needs a human, and the pushed
updates `fleet top` draws from (docs/protocol.md, "Attention queue" and "Live feed")."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import msgspec

from protocol.codec import Message
from protocol.events import Severity


class AttentionKind(str, Enum):
    BLOCKED = "blocked"  # a dialog waits for an answer
    ACTION_REQUIRED = "operator_action_required"
    RISK = "risk_detected"
    CANDIDATE = "attention_candidate"  # a known event type at warning or worse
    REVIEW = "review"  # a run finished with artifact_refs for someone to look at
    STUCK = "stuck"  # working, no output for the runtime's stuck_after_s
    DEAD = "dead"  # the pane's process exited, or the session is missing
    RESTARTING = "restarting"  # dead, and the supervisor has restarted it before
    DRIFT = "drift"
    HOST_DOWN = "host_down"


class ItemState(str, Enum):
    OPEN = "open"
    ACKED = "acked"  # seen by someone; stays until the condition ends
    SNOOZED = "snoozed"  # hidden until snoozed_until, then open again
    RESOLVED = "resolved"  # the condition ended (``resolution`` says how)


class AttentionItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # short and stable for one occurrence of a condition
    kind: AttentionKind
    severity: Severity
    tenant: str
    host: str
    session: str | None  # None for a host-level item
    why: str  # one line: what is wrong
    question: str | None = None  # a blocked dialog's question, as its screen shows it
    since: float  # unix time the condition began (controller clock, or the event's ts)
    state: ItemState = ItemState.OPEN
    acked_by: str | None = None
    snoozed_until: float | None = None
    resolved_at: float | None = None
    resolution: str | None = None  # why it resolved itself ("dialog answered", …)
    cause: str | None = None  # idempotency key of the event that caused it, if one did
    event_key: str = ""  # idempotency key of the item's own `attention.opened` event


class AttentionListRequest(Message, frozen=True, tag="attention.list.request"):
    tenant: str | None = None
    host: str | None = None
    include_all: bool = False  # also acked, snoozed and recently resolved items


class AttentionListReply(Message, frozen=True, tag="attention.list.reply"):
    items: list[AttentionItem]  # most severe first, then newest first
    open: int = 0  # items needing a human now (open, or snoozed past their time)
    generated_at: float = 0.0


class AttentionAction(str, Enum):
    ACK = "ack"
    SNOOZE = "snooze"


class AttentionActRequest(Message, frozen=True, tag="attention.act.request"):
    id: str
    action: AttentionAction
    tenant: str | None = None  # set: only an item of this tenant (how access scopes it)
    snooze_s: Annotated[float, msgspec.Meta(ge=0, le=30 * 86400)] = 0.0
    by: str = ""


class AttentionActReply(Message, frozen=True, tag="attention.act.reply"):
    item: AttentionItem


# -- the live feed (`fleet top`): the CLI names a subject in its own inbox, the controller
# pushes these there while the CLI keeps renewing (as `watch` does: the CLI may not see tenant
# subjects).
class FeedRequest(Message, frozen=True, tag="feed.request"):
    deliver: str
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 6.0
    tenant: str | None = None
    host: str | None = None


class FeedReply(Message, frozen=True, tag="feed.reply"):
    ttl_s: float


class SessionDelta(Message, frozen=True, tag="feed.session"):
    tenant: str
    host: str
    session: str
    state: str
    since: float
    rule: str | None = None
    line: str | None = None


class HostDelta(Message, frozen=True, tag="feed.host"):
    tenant: str
    host: str
    state: str
    since: float


class FeedEvent(Message, frozen=True, tag="feed.event"):
    tenant: str
    host: str
    session: str
    ts: float
    event_type: str
    source_kind: str
    summary: str
    flags: list[str] = []  # attention, action, risk, the severity when warning or worse


class AttentionChanged(Message, frozen=True, tag="feed.attention"):
    item: AttentionItem


FeedMessage = SessionDelta | HostDelta | FeedEvent | AttentionChanged
