"""Routing operator commands: resolve the target session from fleet state, answer at once
what the controller already knows (unknown session, host down or stopped), otherwise forward
to the host agent and time the round trip.

``issued_by`` is the authenticated operator by the time a request gets here (ApiService's
Access set it from the subject); the sessions it may reach are its tenants' only, and a
target outside them resolves as nothing of the fleet."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Container, Iterable

import msgspec
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from controller.api.watch_relay import WatchRelay
from controller.fleet.state import FleetState, HostKey
from protocol import DecodeError, decode, encode, subjects
from protocol.api import HostState
from protocol.commands import Command, CommandRequest, CommandResult, Outcome, Spawn, Watch

Connection = Callable[[str], Client | None]  # the NATS connection of a tenant's account
TenantsOf = Callable[[str], frozenset[str] | None]  # an operator's tenants (None: all)


def new_command_id() -> str:
    return uuid.uuid4().hex


def named_tenant(target: str, spawn: bool) -> str | None:
    """The tenant a target spells out (TENANT/HOST/SESSION; for spawn TENANT/HOST)."""
    parts = target.split("/")
    return parts[0] if len(parts) == (2 if spawn else 3) else None


def resolve(
    state: FleetState,
    target: str,
    body_session: str,
    spawn: bool,
    allowed: Container[str] | None = None,
) -> tuple[str, str, str] | str:
    """(tenant, host, session) for a target, or an error sentence; only hosts of the
    ``allowed`` tenants (None: all) are candidates.

    Targets: SESSION, HOST/SESSION, TENANT/HOST/SESSION; for spawn TENANT/HOST or HOST.
    """
    parts = target.split("/")

    def visible(keys: Iterable[HostKey]) -> list[HostKey]:
        return [k for k in keys if allowed is None or k[0] in allowed]

    if spawn:
        if len(parts) == 2:
            tenant, host = parts
            return (
                (tenant, host, body_session)
                if visible([(tenant, host)]) and (tenant, host) in state.hosts
                else (f"unknown host {tenant}/{host}")
            )
        hosts = visible(state.keys_named(parts[-1]))
        if len(hosts) == 1:
            return (*hosts[0], body_session)
        return (
            f"unknown host {target}"
            if not hosts
            else (f"host {target} is ambiguous: " + ", ".join(f"{t}/{h}" for t, h in hosts))
        )
    if len(parts) > 3 or not all(parts):
        return f"bad target {target!r}: use SESSION, HOST/SESSION or TENANT/HOST/SESSION"
    if len(parts) == 3:
        keys: Iterable[HostKey] = [(parts[0], parts[1])]
    elif len(parts) == 2:
        keys = state.keys_named(parts[0])
    else:
        keys = state.hosts  # a bare session name: any host may have it
    matches = []
    for key in visible(keys):
        entry = state.hosts.get(key)
        if entry is not None and any(s.name == parts[-1] for s in entry.sessions):
            matches.append((*key, parts[-1]))
    if not matches:
        return f"no session {target!r} in the fleet"
    if len(matches) > 1:
        return f"session {target!r} is ambiguous: " + ", ".join("/".join(m) for m in matches)
    return matches[0]


class CommandRouter:
    def __init__(
        self,
        state: FleetState,
        connection: Connection,
        relay: WatchRelay,
        on_round_trip: Callable[[float], None],
        tenants_of: TenantsOf = lambda _who: None,
    ) -> None:
        self.state = state
        self.tenants_of = tenants_of
        self.connection = connection
        self.relay = relay  # where a watch's frames go once the agent accepted it
        self.on_round_trip = on_round_trip  # ms, request to the agent's answer

    def _where(self, req: CommandRequest, command_id: str) -> tuple[str, str, str] | CommandResult:
        """The session the request may reach, or the answer that it may not or is unknown."""
        spawn = isinstance(req.body, Spawn)
        allowed = self.tenants_of(req.issued_by)
        named = named_tenant(req.target, spawn)
        if allowed is not None and named is not None and named not in allowed:
            return CommandResult(
                command_id=command_id,
                outcome=Outcome.BAD_REQUEST,
                message=f"forbidden: {req.issued_by} may not steer tenant {named!r}",
            )
        where = resolve(self.state, req.target, req.body.session, spawn, allowed)
        if isinstance(where, str):
            outcome = Outcome.BAD_REQUEST if spawn else Outcome.UNKNOWN_SESSION
            return CommandResult(command_id=command_id, outcome=outcome, message=where)
        return where

    async def handle(self, req: CommandRequest) -> CommandResult:
        command_id = req.command_id or new_command_id()
        where = self._where(req, command_id)
        if isinstance(where, CommandResult):
            return where
        tenant, host, session = where

        def answer(outcome: Outcome, message: str) -> CommandResult:
            return CommandResult(
                command_id=command_id,
                outcome=outcome,
                message=message,
                tenant=tenant,
                host=host,
                session=session,
            )

        entry = self.state.hosts[(tenant, host)]
        if entry.state in (HostState.DOWN, HostState.STOPPED):
            since = time.strftime("%H:%M:%S", time.localtime(entry.state_since))
            return answer(
                Outcome.HOST_UNAVAILABLE,
                f"host {tenant}/{host} is {entry.state.value} (since {since}); nothing was sent",
            )
        body = req.body
        if body.session != session:
            body = msgspec.structs.replace(body, session=session)
        now = time.time()
        cmd = Command(
            command_id=command_id,
            tenant=tenant,
            host=host,
            issued_by=req.issued_by,
            issued_at=now,
            deadline=now + req.timeout_s,
            body=body,
        )
        nc = self.connection(tenant)
        if nc is None:
            return answer(Outcome.FAILED, "controller is not connected to NATS")
        start = time.monotonic()
        try:
            msg = await nc.request(
                subjects.command(tenant, host), encode(cmd), timeout=req.timeout_s
            )
        except NoRespondersError:
            return answer(Outcome.HOST_UNAVAILABLE, f"no host agent listens for {tenant}/{host}")
        except NatsTimeoutError:
            return answer(
                Outcome.TIMEOUT, f"{tenant}/{host} did not answer within {req.timeout_s:.0f}s"
            )
        rtt = round((time.monotonic() - start) * 1000, 2)
        self.on_round_trip(rtt)
        try:
            result = decode(msg.data, CommandResult)
        except DecodeError as exc:
            return answer(Outcome.FAILED, f"unreadable answer from {tenant}/{host}: {exc}")
        if isinstance(body, Watch) and req.deliver and result.outcome is Outcome.OK:
            await self.relay.add((tenant, host, session), req.deliver, body.ttl_s)
        return msgspec.structs.replace(result, round_trip_ms=rtt)
