"""Connecting to NATS the same way on both sides: a server list, credentials, and
reconnecting forever with capped, jittered backoff.

nats-py gives up on the *initial* connect after one pass over the servers, so the first
connect is retried here; later reconnects go through nats-py with our backoff plugged into
its ``reconnect_to_server_handler``.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
from nats.aio.client import Client

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 5.0


class NatsSettings(msgspec.Struct, frozen=True, kw_only=True):
    servers: list[str] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    credentials: str | None = None  # .creds file (JWT + nkey seed)
    nkey_seed: str | None = None  # file holding an nkey seed
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout_s: float = 2.0
    inbox_prefix: str | None = None  # private reply inbox; required under the generated config


def backoff_delay(attempt: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 16))))


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    if not (settings.tls_ca or settings.tls_cert):
        return None
    ctx = ssl.create_default_context(cafile=settings.tls_ca)
    if settings.tls_cert:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    return ctx


def connect_options(settings: NatsSettings) -> dict[str, Any]:
    """The nats-py arguments saying where and as whom: servers, credentials, TLS, inbox.

    Every connection (daemons and the CLI) is made with these, so a setting means the same
    everywhere (a ``~`` in a credentials or seed path is the user's home).
    """
    options: dict[str, Any] = {"servers": settings.servers, "tls": tls_context(settings)}
    if settings.credentials:
        options["user_credentials"] = str(Path(settings.credentials).expanduser())
    if settings.nkey_seed:
        options["nkeys_seed"] = str(Path(settings.nkey_seed).expanduser())
    if settings.user:
        options["user"] = settings.user
        options["password"] = settings.password
    if settings.token:
        options["token"] = settings.token
    if settings.inbox_prefix:
        options["inbox_prefix"] = settings.inbox_prefix
    return options


def _reconnect_handler(servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
    # Prefer the server tried least often; among equals pick at random so a fleet of agents
    # does not stampede the same server after it returns.
    least = min(s.reconnects for s in servers)
    choice = random.choice([s for s in servers if s.reconnects == least])
    return choice, backoff_delay(choice.reconnects)


Callback = Callable[[], Awaitable[None]]


async def connect(
    settings: NatsSettings,
    *,
    name: str,
    on_disconnected: Callback | None = None,
    on_reconnected: Callback | None = None,
    on_error: Callable[[Exception], Awaitable[None]] | None = None,
    max_attempts: int | None = None,
) -> Client:
    """Connect, retrying forever (or ``max_attempts`` times) with jittered backoff."""

    async def _error(exc: Exception) -> None:
        if on_error is not None:
            await on_error(exc)
        else:
            log.debug("nats error: %s", exc)

    async def _noop() -> None:
        return None

    kwargs: dict[str, Any] = {
        **connect_options(settings),
        "name": name,
        "connect_timeout": settings.connect_timeout_s,
        # One pass over the servers per attempt: nats-py's own initial-connect loop would
        # retry forever at a fixed pace, so the backoff below could never apply.
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.05,
        "reconnect_to_server_handler": _reconnect_handler,
        "error_cb": _error,
        "disconnected_cb": on_disconnected or _noop,
        "reconnected_cb": on_reconnected or _noop,
        "closed_cb": _noop,
    }

    attempt = 0
    while True:
        try:
            nc = await nats.connect(**kwargs)
        except Exception as exc:  # nats-py raises a variety of errors for an unreachable server
            attempt += 1
            if max_attempts is not None and attempt >= max_attempts:
                raise
            delay = backoff_delay(attempt)
            log.warning(
                "cannot connect to NATS %s (%s); retrying in %.1fs",
                ",".join(settings.servers),
                exc or type(exc).__name__,
                delay,
            )
            await anyio.sleep(delay)
            continue
        # Connected: from now on reconnect forever (through _reconnect_handler's backoff).
        nc.options["max_reconnect_attempts"] = -1
        return nc
