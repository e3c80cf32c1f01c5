"""Commands: CLI → controller (fleet.ctl.cmd) → host agent (fleet.<t>.cmd.<host>) → tmux.

Every command carries `command_id`, `issued_by`, `issued_at` and `deadline`; the host agent
refuses an expired one and answers a repeated `command_id` with the first result.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import msgspec

from protocol.codec import Message
from protocol.ids import Id

MAX_SEND_CHARS = 16_000

# Bounds on what a request may ask (issue 15): out of range is a decode error, answered
# `bad_request`, never a surprise (a watch of ttl 1e9 streamed forever after its watcher left;
# a 100 KB takeover reason made the lease's audit events invalid).
Timeout = Annotated[float, msgspec.Meta(gt=0, le=3600)]
MAX_REASON_CHARS = 1000
MAX_LEASE_S = 86_400.0
MAX_WATCH_TTL_S = 60.0
MAX_SPAWN_TTL_S = 30 * 86_400.0


class Verb(msgspec.Struct, frozen=True, kw_only=True, tag_field="verb"):
    session: Id


class Send(Verb, frozen=True, tag="send"):
    text: Annotated[str, msgspec.Meta(max_length=MAX_SEND_CHARS)]
    verify: bool | None = None  # None: the runtime's default (verify interactive runtimes)
    timeout_s: Timeout = 10.0
    # `send --answer`: first answer the dialog a blocked session shows with this choice
    # (as `Answer`); without it a blocked session refuses the text.
    answer: Annotated[str, msgspec.Meta(min_length=1, max_length=16)] | None = None


class Cancel(Verb, frozen=True, tag="cancel"):
    timeout_s: Timeout = 10.0


class Watch(Verb, frozen=True, tag="watch"):
    """Start or renew a read-only watch lease; output flows on fleet.<t>.out.<h>.<s>."""

    watcher: Annotated[str, msgspec.Meta(max_length=200)]
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_WATCH_TTL_S)] = 6.0
    resync: bool = False  # ask for a fresh snapshot (e.g. the first one was missed)


class Takeover(Verb, frozen=True, tag="takeover"):
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON_CHARS)]
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_LEASE_S)] = 300.0


class Release(Verb, frozen=True, tag="release"):
    # An admin's `release --force`: whoever holds the lease (the controller lets only admins
    # send it; the release event names both the holder and who forced it).
    force: bool = False


class Spawn(Verb, frozen=True, tag="spawn"):
    # None: the host agent infers it from the command (shell, or a runtime whose process
    # patterns match), `stub` without a command.
    runtime: str | None = None
    command: list[str] | None = None
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_SPAWN_TTL_S)] | None = None
    env: dict[str, str] = {}


class Stop(Verb, frozen=True, tag="stop"):
    pass


class Explain(Verb, frozen=True, tag="explain"):
    pass


class Answer(Verb, frozen=True, tag="answer"):
    """Press exactly one key in the dialog a blocked session shows: a menu number, a letter
    or a key name (`answer_key`). Audited as an `operator.answer` event."""

    choice: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
    timeout_s: Timeout = 5.0


Body = Send | Cancel | Watch | Takeover | Release | Spawn | Stop | Explain | Answer

# Key names `answer` accepts (any case) and the tmux key each presses. Deliberately short:
# nothing that could quit or interrupt the runtime (no C-c, no C-d).
ANSWER_KEYS = {
    "enter": "Enter",
    "escape": "Escape",
    "esc": "Escape",
    "tab": "Tab",
    "btab": "BTab",
    "up": "Up",
    "down": "Down",
    "left": "Left",
    "right": "Right",
    "space": "Space",
}


def answer_key(choice: str) -> str | None:
    """The tmux key an operator's choice presses: one ASCII digit or letter as itself, or a
    name from ANSWER_KEYS; None when the choice is not one of those."""
    c = choice.strip()
    if len(c) == 1 and c.isascii() and c.isalnum():
        return c
    return ANSWER_KEYS.get(c.lower())


class Command(Message, frozen=True, tag="command"):
    command_id: Annotated[str, msgspec.Meta(min_length=8, max_length=64)]
    tenant: Id
    host: Id
    issued_by: Annotated[str, msgspec.Meta(max_length=128)]
    issued_at: float
    deadline: float
    body: Body


class Outcome(str, Enum):
    OK = "ok"  # done (spawn, stop, takeover, release, watch, explain, answer)
    DELIVERED = "delivered"  # send: proven delivered (or sent, without --verify)
    NOT_VERIFIED = "not_verified"  # send: typed, but no proof the session took it
    QUEUED = "queued"  # send: the session was working; the runtime holds the prompt
    BLOCKED = "blocked"  # send: the session shows a dialog; nothing was typed
    NOOP = "noop"  # nothing to do (cancel of an idle session)
    CANCELLED = "cancelled"  # cancel: the run stopped
    EXPIRED = "expired"  # arrived after its deadline: not executed
    UNKNOWN_SESSION = "unknown_session"
    SESSION_DEAD = "session_dead"
    LEASE_HELD = "lease_held"  # someone else holds the takeover lease
    HOST_UNAVAILABLE = "host_unavailable"  # answered by the controller: host down/stopped
    TIMEOUT = "timeout"  # no answer from the host agent before the deadline
    FAILED = "failed"
    BAD_REQUEST = "bad_request"


# Outcomes that mean "it worked" for the CLI's exit code.
SUCCESS = frozenset(
    {Outcome.OK, Outcome.DELIVERED, Outcome.QUEUED, Outcome.NOOP, Outcome.CANCELLED}
)


class CommandResult(Message, frozen=True, tag="command.result"):
    command_id: str
    outcome: Outcome
    message: str
    tenant: str = ""
    host: str = ""
    session: str = ""
    screen: str | None = None  # what the pane showed, when that is the evidence
    details: dict[str, Any] = {}
    replayed: bool = False  # answered from the cache of a command_id seen before
    round_trip_ms: float | None = None  # filled in by the controller


class CommandRequest(Message, frozen=True, tag="cmd.request"):
    """CLI → controller: run ``body`` on the session ``target`` (SESSION, HOST/SESSION or
    TENANT/HOST/SESSION; for spawn TENANT/HOST)."""

    target: Annotated[str, msgspec.Meta(max_length=200)]
    body: Body
    issued_by: Annotated[str, msgspec.Meta(max_length=128)]
    timeout_s: Timeout = 15.0
    command_id: str | None = None  # set by the CLI to make retries idempotent
    deliver: str | None = None  # watch: the CLI's inbox subject the frames are relayed to


class WatchFrame(Message, frozen=True, tag="watch.frame"):
    """One picture of a watched pane: the whole visible screen, with colours (`-e`)."""

    tenant: str
    host: str
    session: str
    seq: int
    snapshot: bool  # the first frame of a watch, or a resync
    screen: str
    width: int
    height: int
    at: float
