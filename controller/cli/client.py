"""How the CLI reaches the controller: one request on `fleet.ctl.<verb>`, clear errors.

Where the controller is comes from (first wins) `--nats`, $FLEET_NATS_URL, or the context
file `fleet up` writes (<user config dir>/agentfleet/context.toml), else nats://127.0.0.1:4222.
As whom: the context's ``[operator] name``, whose seed its ``[nats]`` table names; the CLI
then asks on `fleet.ctl.u.<name>.<verb>`, the only API subjects that seed may publish on.
"""

from __future__ import annotations

import asyncio
import os
import time
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nats
import platformdirs
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from common.natsconn import NatsSettings, connect_options
from protocol import DecodeError, decode, encode
from protocol.api import VERBS, ApiError, ApiVerb

T = TypeVar("T")

DEFAULT_URL = "nats://127.0.0.1:4222"
CONNECT_TIMEOUT_S = 1.5
REQUEST_TIMEOUT_S = 5.0
MAX_HEDGED = 12  # read requests in flight for one call (ApiVerb.retry_after_s)


class ClientError(RuntimeError):
    """The controller could not be reached or refused the request; the message says why."""

    exit_code = 2


class CommandRefused(ClientError):
    """The controller answered, and the answer is no (unknown session, lease held, …)."""

    exit_code = 1


def context_path() -> Path:
    return Path(platformdirs.user_config_dir("agentfleet")) / "context.toml"


def write_context(
    settings: NatsSettings, path: Path | None = None, operator: str | None = None
) -> Path:
    path = path or context_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = msgspec.to_builtins(settings)
    lines = ["# written by `fleet up`: where the fleet CLI finds the controller", "[nats]"]
    for key, value in data.items():
        if value is not None:
            lines.append(f"{key} = {msgspec.json.encode(value).decode()}")
    if operator is not None:
        lines += ["[operator]", f"name = {msgspec.json.encode(operator).decode()}"]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def _context_file(context: Path | None) -> Path:
    env_context = os.environ.get("FLEET_CONTEXT")
    named = context or (Path(env_context) if env_context else None)
    # A context named and missing is an error: falling back to 127.0.0.1:4222 could reach
    # someone else's fleet on a shared machine (issue 15).
    if named is not None and not named.is_file():
        raise ClientError(f"context file {named} does not exist ($FLEET_CONTEXT)")
    return named or context_path()


def resolve_operator(url: str | None = None, context: Path | None = None) -> str | None:
    """The operator the context file names (None: a URL was given, or no-auth fleet)."""
    if url or os.environ.get("FLEET_NATS_URL"):
        return None
    path = _context_file(context)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ClientError(f"bad context file {path}: {exc}") from None
    name = raw.get("operator", {}).get("name")
    if name is not None and not isinstance(name, str):
        raise ClientError(f"bad context file {path}: [operator] name must be a string")
    return name


def resolve_settings(url: str | None = None, context: Path | None = None) -> NatsSettings:
    if url:
        return NatsSettings(servers=[u.strip() for u in url.split(",")])
    env = os.environ.get("FLEET_NATS_URL")
    if env:
        return NatsSettings(servers=[u.strip() for u in env.split(",")])
    path = _context_file(context)
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text())
            return msgspec.convert(raw.get("nats", {}), NatsSettings)
        except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
            raise ClientError(f"bad context file {path}: {exc}") from None
    return NatsSettings(servers=[DEFAULT_URL])


class ControllerClient:
    def __init__(
        self,
        settings: NatsSettings,
        timeout: float = REQUEST_TIMEOUT_S,
        operator: str | None = None,
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self.operator = operator  # asks as this operator; None: the unauthenticated subject
        self._nc: Any = None
        self._errors: list[Exception] = []
        self.hedged = 0  # read requests asked again after a replica's silence

    @property
    def url(self) -> str:
        return ",".join(self.settings.servers)

    async def __aenter__(self) -> ControllerClient:
        kwargs: dict[str, Any] = {
            **connect_options(self.settings),
            "connect_timeout": CONNECT_TIMEOUT_S,
            "allow_reconnect": False,
            # One try per server, then NoServersError (nats-py would otherwise loop forever).
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.05,
            "name": "fleet-cli",
        }

        errors = self._errors

        async def remember(exc: Exception) -> None:
            errors.append(exc)

        kwargs["error_cb"] = remember
        try:
            self._nc = await nats.connect(**kwargs)
        except Exception as exc:
            cause = errors[-1] if errors else exc
            reason = str(cause) or type(cause).__name__
            raise ClientError(f"cannot reach NATS at {self.url}: {reason}") from None
        return self

    @property
    def nc(self) -> Any:
        return self._nc

    async def __aexit__(self, *exc: object) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def call(
        self, verb: ApiVerb[Any, T] | str, request: Any, reply_type: type[T] | None = None
    ) -> T:
        """Ask the controller ``verb`` (an entry of protocol.api.VERBS; a verb's name is looked
        up there, for callers outside this package) and return its reply."""
        if isinstance(verb, str):
            verb = VERBS[verb]
        subject = verb.subject_for(self.operator)
        try:
            msg = await self._request(verb, subject, encode(request))
        except NoRespondersError:
            raise ClientError(
                f"no controller is serving {subject} at {self.url} (is `fleet up` or "
                "`fleet controller run` running?)"
            ) from None
        except NatsTimeoutError:
            denied = [e for e in self._errors if "permissions violation" in str(e).lower()]
            if denied:
                raise ClientError(
                    f"the NATS server refused {subject}: {denied[-1]} (does the context's "
                    "[operator] name match its seed?)"
                ) from None
            raise ClientError(
                f"the controller at {self.url} did not answer {verb.name} within "
                f"{self.timeout:.0f}s"
            ) from None
        try:
            reply = decode(msg.data, (reply_type or verb.reply) | ApiError)
        except DecodeError as exc:
            raise ClientError(f"unreadable reply to {verb.name}: {exc}") from None
        if isinstance(reply, ApiError):
            raise CommandRefused(f"{verb.name}: {reply.message} ({reply.code.value})")
        return reply

    async def _request(self, verb: ApiVerb[Any, Any], subject: str, data: bytes) -> Any:
        """One request; for a read verb, hedged: when no replica answered within its
        ``retry_after_s`` the same request goes out again (a new draw in the queue group)
        while the first keeps waiting, and the first reply wins. A paused replica keeps its
        connection, and with it its share of the group, until the server's pings give up on
        it; a replica that is only slow still answers the first. Only bounded reads (a ps
        page, status, the attention list) are hedged."""
        step = verb.retry_after_s
        if step is None:
            return await self._nc.request(subject, data, timeout=self.timeout)
        deadline = time.monotonic() + self.timeout
        pending: set[asyncio.Future[Any]] = set()
        try:
            while (left := deadline - time.monotonic()) > 0:
                if len(pending) < MAX_HEDGED:
                    self.hedged += bool(pending)
                    request = self._nc.request(subject, data, timeout=left)
                    pending.add(asyncio.ensure_future(request))
                wait = step if len(pending) < MAX_HEDGED else left
                done, pending = await asyncio.wait(
                    pending, timeout=min(wait, left), return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        return task.result()
                    if not isinstance(exc, NatsTimeoutError):
                        raise exc
            raise NatsTimeoutError
        finally:
            for task in pending:
                task.cancel()
