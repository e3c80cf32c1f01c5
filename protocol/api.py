"""The controller's API (fleet.ctl.<verb>), as called by the `fleet` CLI.

Every reply is either the verb's reply struct or an ApiError; large listings are paged so no
reply exceeds the server's max payload. ``VERBS`` at the end is the one table of verbs: the
controller's router and the CLI's client both take a verb from it, never a bare string.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Generic, TypeVar

import msgspec

from protocol import subjects
from protocol.attention import (
    AttentionActReply,
    AttentionActRequest,
    AttentionListReply,
    AttentionListRequest,
    FeedReply,
    FeedRequest,
)
from protocol.codec import Message
from protocol.commands import (
    Answer,
    Cancel,
    CommandRequest,
    CommandResult,
    Explain,
    Release,
    Send,
    Spawn,
    Stop,
    Takeover,
    Watch,
)
from protocol.events_api import (
    EventLinkReply,
    EventLinkRequest,
    EventShowReply,
    EventShowRequest,
    EventsReply,
    EventsSearchRequest,
    EventsTailRequest,
    RebuildReply,
    RebuildRequest,
)
from protocol.heartbeat import SessionSnapshot
from protocol.reports_api import (
    BaselineReply,
    BaselineRequest,
    MetricsReply,
    MetricsRequest,
    WeeklyReply,
    WeeklyRequest,
)

Req = TypeVar("Req")
MAX_INT = 2**63 - 1  # SQLite's and a sane index's limit: larger is `bad_request`, not `internal`
Rep = TypeVar("Rep")


class HostState(str, Enum):
    OK = "ok"
    SUSPECT = "suspect"
    DOWN = "down"
    STOPPED = "stopped"


class Flag(str, Enum):
    DRIFT = "DRIFT"
    DEAD = "DEAD"
    MISSING = "MISSING"
    BOOT_DISABLED = "BOOT-DISABLED"
    UNMANAGED = "UNMANAGED"


class ErrorCode(str, Enum):
    BAD_REQUEST = "bad_request"
    BAD_QUERY = "bad_query"
    NOT_FOUND = "not_found"
    UNKNOWN_VERB = "unknown_verb"
    INTERNAL = "internal"
    BUSY = "busy"  # too many requests of this kind in progress; nothing was done
    FORBIDDEN = "forbidden"  # the operator's role or tenants do not allow this request


class ApiError(Message, frozen=True, tag="error"):
    code: ErrorCode
    message: str


class PsRequest(Message, frozen=True, tag="ps.request"):
    tenant: str | None = None
    host: str | None = None
    state: str | None = None  # host state or session state to keep
    problems: bool = False  # only rows with a problem (host not ok, or any flag)
    cursor: Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)] = 0  # index of the page's first row
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_INT)] = 1000


class HostRow(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    host: str
    state: HostState
    boot_id: str
    last_seen: float  # controller clock, unix time
    agent_version: str
    interval_s: float
    restored: bool = False  # known from the controller's store, no heartbeat yet since restart


class PsRow(msgspec.Struct, frozen=True, kw_only=True):
    """One line of `fleet ps`: a session on a host, or a host with no sessions."""

    tenant: str
    host: str
    host_state: HostState
    heartbeat_age_s: float
    session: SessionSnapshot | None
    flags: list[Flag] = []


class PsReply(Message, frozen=True, tag="ps.reply"):
    rows: list[PsRow]
    total: int  # rows matching the filters, all pages
    next_cursor: int | None
    hosts_by_state: dict[str, int] = {}
    generated_at: float = 0.0


class StatusRequest(Message, frozen=True, tag="status.request"):
    pass


class StatusReply(Message, frozen=True, tag="status.reply"):
    controller_version: str
    started_at: float
    tenants: list[str]
    hosts: int
    counters: dict[str, int] = {}
    # Recent latency percentiles in ms, e.g. heartbeat_lag_p50 (sent_at → processed).
    latencies_ms: dict[str, float] = {}
    # Controller replicas (issue 18): who answered, who is up, who leads; empty/None for a
    # controller without a replica id.
    replica: str = ""
    replicas: list[str] = []
    leader: str | None = None


class Role(str, Enum):
    """What an operator may do (docs/security.md, *Operators*); each role includes the ones
    before it."""

    VIEWER = "viewer"  # read: ps, events, reports, watch, explain
    OPERATOR = "operator"  # also steer the sessions of its tenants
    ADMIN = "admin"  # everything, every tenant, `release --force` of another's lease

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class ApiVerb(Generic[Req, Rep]):
    """One controller verb: its name (the subject's tail), what it takes, what it answers
    (besides an ApiError, which any verb may answer), and the least role that may ask it
    (admin unless said otherwise: a new verb is closed until someone decides)."""

    name: str
    request: type[Req]
    reply: type[Rep]
    role: Role = Role.ADMIN
    # A read that is safe to ask again: the client gives one replica this long, then asks
    # again (the queue group picks anew), so a paused replica costs a retry, not a failure.
    retry_after_s: float | None = None

    @property
    def subject(self) -> str:
        return subjects.controller_api(self.name)

    def subject_for(self, operator: str | None) -> str:
        """The subject an operator asks on; None: the unauthenticated one (no-auth fleets)."""
        return self.subject if operator is None else subjects.operator_api(operator, self.name)


# Far above a healthy replica's answer to a bounded read (a ps page: p95 80 ms at 50,000
# hosts); with two replicas and one paused, each draw misses with p = 1/2: ~10 draws within
# the CLI's 3 s leave 1 in 1,000 calls unanswered.
READ_RETRY_S = 0.25
PS = ApiVerb("ps", PsRequest, PsReply, Role.VIEWER, READ_RETRY_S)
STATUS = ApiVerb("status", StatusRequest, StatusReply, Role.VIEWER, READ_RETRY_S)
# cmd: each command verb needs its own role (COMMAND_ROLES), checked by the controller.
CMD = ApiVerb("cmd", CommandRequest, CommandResult, Role.VIEWER)
EVENTS_SEARCH = ApiVerb("events.search", EventsSearchRequest, EventsReply, Role.VIEWER)
EVENTS_TAIL = ApiVerb("events.tail", EventsTailRequest, EventsReply, Role.VIEWER)
EVENTS_SHOW = ApiVerb("events.show", EventShowRequest, EventShowReply, Role.VIEWER)
EVENTS_LINK = ApiVerb("events.link", EventLinkRequest, EventLinkReply)
STORE_REBUILD = ApiVerb("store.rebuild", RebuildRequest, RebuildReply)
REPORT_BASELINE = ApiVerb("report.baseline", BaselineRequest, BaselineReply, Role.VIEWER)
REPORT_WEEKLY = ApiVerb("report.weekly", WeeklyRequest, WeeklyReply, Role.VIEWER)
METRICS = ApiVerb("metrics", MetricsRequest, MetricsReply)
ATTENTION_LIST = ApiVerb(
    "attention.list", AttentionListRequest, AttentionListReply, Role.VIEWER, READ_RETRY_S
)
ATTENTION_ACT = ApiVerb("attention.act", AttentionActRequest, AttentionActReply, Role.OPERATOR)
# feed: renew every 2 s to keep updates coming
FEED = ApiVerb("feed", FeedRequest, FeedReply, Role.VIEWER)

VERBS: dict[str, ApiVerb[Any, Any]] = {
    verb.name: verb
    for verb in (
        PS,
        STATUS,
        CMD,
        EVENTS_SEARCH,
        EVENTS_TAIL,
        EVENTS_SHOW,
        EVENTS_LINK,
        STORE_REBUILD,
        REPORT_BASELINE,
        REPORT_WEEKLY,
        METRICS,
        ATTENTION_LIST,
        ATTENTION_ACT,
        FEED,
    )
}

# The least role for each command verb (`cmd`'s body). Watch and explain only read; `release`
# of another operator's lease (`force`) is an admin's, checked where the body is.
COMMAND_ROLES: dict[type[Any], Role] = {
    Watch: Role.VIEWER,
    Explain: Role.VIEWER,
    Send: Role.OPERATOR,
    Cancel: Role.OPERATOR,
    Spawn: Role.OPERATOR,
    Stop: Role.OPERATOR,
    Takeover: Role.OPERATOR,
    Release: Role.OPERATOR,
    Answer: Role.OPERATOR,
}
