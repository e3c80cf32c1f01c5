"""Host heartbeat: who is alive, since when, and a snapshot of every session; or, when
nothing changed, a keepalive naming the last snapshot by its digest (issue 18)."""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import Annotated

import msgspec

from protocol.codec import Message
from protocol.ids import BulkId, check_ids

# Heartbeats older than this many intervals are suspect, past DOWN_AFTER down (DESIGN.md).
SUSPECT_AFTER_INTERVALS = 3
DOWN_AFTER_INTERVALS = 6
DEFAULT_INTERVAL_S = 5.0
JITTER = 0.2
# A full snapshot goes out at least every this many heartbeats even when nothing changed, so
# a controller that missed one (or a keepalive's digest it could not check) is never far off.
FULL_EVERY = 12


class SessionKind(str, Enum):
    CORE = "core"
    EPHEMERAL = "ephemeral"


class PaneState(str, Enum):
    ALIVE = "alive"
    DEAD = "dead"
    MISSING = "missing"


class SessionState(str, Enum):
    """What the session is doing, as read from its screen (rules in agent/runtimes/)."""

    UNKNOWN = "unknown"
    IDLE = "idle"
    WORKING = "working"
    BLOCKED = "blocked"
    EXITED = "exited"
    MISSING = "missing"


class BootEnabled(str, Enum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


# gc=False: only scalars and strings inside, so no reference cycles are possible; a controller
# holds 500,000 of these at fleet scale and the cyclic GC need not walk them (see
# docs/benchmarks.md: a full collection over them took ~0.5 s).
class SessionSnapshot(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    name: BulkId  # pattern checked by the heartbeat that carries it
    runtime_configured: str | None  # None: not in the roster (unmanaged)
    runtime_observed: str | None  # None: nothing recognisable runs in the pane
    kind: SessionKind = SessionKind.CORE
    managed: bool = True
    pane: PaneState = PaneState.ALIVE
    pid: int | None = None
    state: SessionState = SessionState.UNKNOWN
    state_since: float | None = None  # unix time of the last state change
    last_output_at: float | None = None
    boot_enabled: BootEnabled = BootEnabled.UNKNOWN
    exit_status: int | None = None  # of a dead pane that exited
    exit_signal: int | None = None  # of a dead pane that was killed
    restarts: int = 0

    @property
    def drift(self) -> bool:
        return (
            self.managed
            and self.pane is PaneState.ALIVE
            and self.runtime_observed is not None
            and self.runtime_configured is not None
            and self.runtime_observed != self.runtime_configured
        )


_ID_KINDS = ("tenant", "host", "boot", "session")
Digest = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]
_sessions_encoder = msgspec.json.Encoder()


def snapshot_digest(sessions: list[SessionSnapshot]) -> str:
    """What a keepalive names the snapshot by: 64 bits of BLAKE2b over its encoding (enough
    to tell one host's successive snapshots apart; it is not a security boundary, the
    subject check is).

    Output times are left out: a working session prints every second, and with them in the
    digest every heartbeat of a busy host was a full one. The periodic full snapshot (every
    FULL_EVERY beats) carries them, so `last_output_at` lags by at most that much (60 s at
    5 s), well under the silence rules' minutes (stuck 10 min, stale 5 min by default)."""
    quiet = [s if s.last_output_at is None else _no_output(s) for s in sessions]
    return hashlib.blake2b(_sessions_encoder.encode(quiet), digest_size=8).hexdigest()


def _no_output(snap: SessionSnapshot) -> SessionSnapshot:
    return msgspec.structs.replace(snap, last_output_at=None)


class Heartbeat(Message, frozen=True, tag="heartbeat"):
    tenant: BulkId
    host: BulkId
    boot_id: BulkId
    seq: Annotated[int, msgspec.Meta(ge=0)]
    sent_at: float
    interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)]
    agent_version: str
    sessions: list[SessionSnapshot] = []
    # `snapshot_digest(sessions)`, which later keepalives name; None from agents that send
    # only full heartbeats (before issue 18), which never send a keepalive either.
    digest: Digest | None = None

    def __post_init__(self) -> None:
        # Runs on decode too, where msgspec turns the IdError into a validation error.
        check_ids(
            [self.tenant, self.host, self.boot_id, *[s.name for s in self.sessions]], _ID_KINDS
        )


class Keepalive(Message, frozen=True, tag="heartbeat.keepalive"):
    """A heartbeat that says: alive, and the sessions are still the snapshot named
    ``digest``. For liveness it counts exactly as a heartbeat (DESIGN.md); a controller
    that holds another digest asks for a full one (``SnapshotWanted``)."""

    tenant: BulkId
    host: BulkId
    boot_id: BulkId
    seq: Annotated[int, msgspec.Meta(ge=0)]
    sent_at: float
    interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)]
    digest: Digest

    def __post_init__(self) -> None:
        check_ids([self.tenant, self.host, self.boot_id], _ID_KINDS)


# What arrives on a heartbeat subject; old agents send only the first (schema_version 1).
HostBeat = Heartbeat | Keepalive


class SnapshotWanted(Message, frozen=True, tag="heartbeat.want"):
    """Controller → host agent, published on the host's command subject with no reply
    wanted: send a full heartbeat now. The answer is that heartbeat, which every controller
    replica receives. The command server, the subject's one subscriber, tells it from a
    command by its first bytes (`SNAPSHOT_WANTED`: msgspec writes the tag first)."""

    tenant: BulkId
    host: BulkId
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


SNAPSHOT_WANTED = b'{"msg":"heartbeat.want"'
