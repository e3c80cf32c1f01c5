"""The controller API on NATS: `fleet.ctl.<verb>` request/reply, one queue group.

Every request is decoded into the verb's struct and answered with its reply struct or an
ApiError; a handler's failure becomes an `internal` error reply, never a dead service.

Each request runs in its own task of the service's task group (`run`), so a slow one (a
`send --verify` retries for ~15 s) never holds up another, and replies go out in whatever
order the handlers finish. Requests are sorted into lanes, one per verb, and for `cmd` one
per command verb (`cmd.send`, `cmd.watch`, …): each lane runs at most `running` handlers at
once and lets at most `waiting` more wait for a slot; past that the lane answers `busy` at
once. So 1,000 `send --verify` fill the `cmd.send` lane and nothing else: `ps`, `events` and
watch renewals keep their own slots.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from controller.api.access import Access
from protocol import DecodeError, decode, encode, subjects
from protocol.api import ApiError, ApiVerb, ErrorCode
from protocol.commands import CommandRequest

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Handler = Callable[[Any], Awaitable[Any]]

# Requests received but not yet given a task; the dispatcher only starts tasks, so this
# fills only before `run` starts (between startup and the main loop).
INTAKE_BUFFER = 4096


@dataclass(frozen=True)
class LaneLimit:
    running: int  # handlers of this lane at once
    waiting: int  # requests that may wait for a running slot; more are answered `busy`


DEFAULT_LIMIT = LaneLimit(running=32, waiting=4096)
# Commands mostly wait on a host agent (a verified send for up to its timeout): many may run
# at once for the cost of a pending request each. Store-heavy verbs run few at a time.
LIMITS: Mapping[str, LaneLimit] = {
    "cmd.send": LaneLimit(running=256, waiting=4096),
    "cmd.answer": LaneLimit(running=256, waiting=4096),
    "cmd.cancel": LaneLimit(running=256, waiting=4096),
    "cmd.watch": LaneLimit(running=256, waiting=4096),
    "store.rebuild": LaneLimit(running=1, waiting=4),
    "report.baseline": LaneLimit(running=2, waiting=64),
    "report.weekly": LaneLimit(running=2, waiting=64),
}


class _Lane:
    def __init__(self, name: str, limit: LaneLimit) -> None:
        self.name = name
        self.limit = limit
        self.slots = anyio.Semaphore(limit.running)
        self.queued = 0  # requests in this lane, running or waiting


class ApiService:
    def __init__(
        self, queue: str, limits: Mapping[str, LaneLimit] = LIMITS, access: Access | None = None
    ) -> None:
        self.queue = queue
        self.access = access or Access.unauthenticated()  # who asks, and may they (access.py)
        self._routes: dict[str, tuple[type[Any], Handler]] = {}
        self._limits = dict(limits)
        self._lanes: dict[str, _Lane] = {}
        self._sub: Subscription | None = None
        # Made by `start` (a service never started owns no stream to close).
        self._send: MemoryObjectSendStream[Msg] | None = None
        self._recv: MemoryObjectReceiveStream[Msg] | None = None
        self._running = False
        self.errors = 0  # handlers that raised
        self.busy = 0  # requests refused because their lane was full
        self.in_flight = 0

    def counters(self) -> dict[str, int]:
        return {"api_busy": self.busy, "api_errors": self.errors, "api_in_flight": self.in_flight}

    def route(self, verb: ApiVerb[Req, Any], handler: Callable[[Req], Awaitable[Any]]) -> None:
        """Serve ``verb`` (an entry of protocol.api.VERBS) with ``handler``."""
        self._routes[verb.name] = (verb.request, handler)

    async def start(self, nc: Client) -> None:
        """Subscribe; requests wait in the intake buffer until `run` serves them."""
        self._nc = nc
        self._send, self._recv = anyio.create_memory_object_stream[Msg](INTAKE_BUFFER)
        self._sub = await nc.subscribe(
            subjects.controller_api_all(), queue=self.queue, cb=self._on_request
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve requests until cancelled; each in its own task of this task group."""
        if self._recv is None:
            raise RuntimeError("ApiService.run before start")
        self._running = True
        with self._recv:
            async with anyio.create_task_group() as tg:
                task_status.started()
                async for msg in self._recv:
                    self.in_flight += 1
                    tg.start_soon(self._serve, msg)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        if self._send is not None:
            self._send.close()  # `run` serves what is buffered, then ends
        if self._recv is not None and not self._running:
            self._recv.close()

    async def _on_request(self, msg: Msg) -> None:
        # nats-py awaits this callback before the next message: hand over, never handle here.
        if not msg.reply:
            return  # a publish, not a request: nobody to answer
        try:
            assert self._send is not None  # subscribed by start, which made it
            await self._send.send(msg)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # shutting down: the caller's request times out

    async def _serve(self, msg: Msg) -> None:
        try:
            reply = await self._dispatch(msg)
            try:
                await msg.respond(encode(reply))
            except Exception:
                log.exception("cannot answer %s", msg.subject)
        finally:
            self.in_flight -= 1

    def _lane(self, verb: str, request: Any) -> _Lane:
        name = verb
        if isinstance(request, CommandRequest):
            name = f"cmd.{type(request.body).__struct_config__.tag}"
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(name, self._limits.get(name, DEFAULT_LIMIT))
        return lane

    async def _dispatch(self, msg: Msg) -> Any:
        try:
            operator, verb = subjects.parse_api_caller(msg.subject)
        except ValueError as exc:
            return ApiError(code=ErrorCode.UNKNOWN_VERB, message=str(exc))
        route = self._routes.get(verb)
        if route is None:
            known = ", ".join(sorted(self._routes))
            return ApiError(
                code=ErrorCode.UNKNOWN_VERB, message=f"unknown verb {verb!r}; known: {known}"
            )
        request_type, handler = route
        try:
            request = decode(msg.data, request_type)
        except DecodeError as exc:
            return ApiError(code=ErrorCode.BAD_REQUEST, message=f"{verb}: {exc}")
        lane = self._lane(verb, request)
        if lane.queued >= lane.limit.running + lane.limit.waiting:
            self.busy += 1
            return ApiError(
                code=ErrorCode.BUSY,
                message=f"{lane.queued} {lane.name} requests in progress; try again later",
            )
        lane.queued += 1
        try:
            async with lane.slots:
                return await self.access.call(operator, verb, request, handler)
        except Exception as exc:
            self.errors += 1
            log.exception("%s failed", verb)
            return ApiError(code=ErrorCode.INTERNAL, message=f"{verb} failed: {exc}")
        finally:
            lane.queued -= 1
