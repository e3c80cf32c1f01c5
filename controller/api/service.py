"""The controller API on NATS: `fleet.ctl.<verb>` request/reply, one queue group.

Every request is decoded into the verb's struct and answered with its reply struct or an
ApiError; a handler's failure becomes an `internal` error reply, never a dead service.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from protocol import DecodeError, decode, encode, subjects
from protocol.api import ApiError, ApiVerb, ErrorCode

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Handler = Callable[[Any], Awaitable[Any]]


class ApiService:
    def __init__(self, queue: str) -> None:
        self.queue = queue
        self._routes: dict[str, tuple[type[Any], Handler]] = {}
        self._sub: Subscription | None = None
        self.errors = 0

    def route(self, verb: ApiVerb[Req, Any], handler: Callable[[Req], Awaitable[Any]]) -> None:
        """Serve ``verb`` (an entry of protocol.api.VERBS) with ``handler``."""
        self._routes[verb.name] = (verb.request, handler)

    async def start(self, nc: Client) -> None:
        self._nc = nc
        self._sub = await nc.subscribe(
            subjects.controller_api_all(), queue=self.queue, cb=self._on_request
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply:
            return  # a publish, not a request: nobody to answer
        reply = await self._dispatch(msg)
        try:
            await msg.respond(encode(reply))
        except Exception:
            log.exception("cannot answer %s", msg.subject)

    async def _dispatch(self, msg: Msg) -> Any:
        try:
            verb = subjects.parse_controller_api(msg.subject)
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
        try:
            return await handler(request)
        except Exception as exc:
            self.errors += 1
            log.exception("%s failed", verb)
            return ApiError(code=ErrorCode.INTERNAL, message=f"{verb} failed: {exc}")
