"""The host agent's command endpoint (`fleet.<t>.cmd.<host>`, request/reply).

Refuses expired commands, answers a repeated `command_id` with its first result, checks the
takeover lease, runs the verb, and records every command with its outcome as an audit event.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from protocol import DecodeError, decode, encode, subjects
from protocol.commands import (
    Cancel,
    Command,
    CommandResult,
    Explain,
    Outcome,
    Release,
    Send,
    Spawn,
    Stop,
    Takeover,
    Watch,
)
from protocol.events import Event, SourceKind

if TYPE_CHECKING:
    from agent.daemon import HostAgent

log = logging.getLogger(__name__)

REMEMBER = 4096  # recent command ids kept for replay answers


class CommandServer:
    def __init__(self, agent: HostAgent) -> None:
        self.agent = agent
        self._results: OrderedDict[str, CommandResult] = OrderedDict()
        self._inflight: dict[str, anyio.Event] = {}
        self._sub: Subscription | None = None
        self._tg: TaskGroup | None = None

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        agent = self.agent
        assert agent.nc is not None
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._sub = await agent.nc.subscribe(
                subjects.command(agent.config.tenant, agent.host), cb=self._on_msg
            )
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await self._sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        # Verbs like `send --verify` take seconds: never hold up the next command.
        assert self._tg is not None
        self._tg.start_soon(self._handle, msg)

    async def _handle(self, msg: Msg) -> None:
        result = await self.execute(msg.data)
        if msg.reply:
            try:
                await msg.respond(encode(result))
            except Exception as exc:
                log.warning("cannot answer command %s: %s", result.command_id, exc)

    async def execute(self, data: bytes) -> CommandResult:
        agent = self.agent
        try:
            cmd = decode(data, Command)
        except DecodeError as exc:
            return CommandResult(
                command_id="", outcome=Outcome.BAD_REQUEST, message=f"not a command: {exc}"
            )
        if (cmd.tenant, cmd.host) != (agent.config.tenant, agent.host):
            return self._result(
                cmd,
                Outcome.BAD_REQUEST,
                f"this is {agent.config.tenant}/{agent.host}, not {cmd.tenant}/{cmd.host}",
            )
        if cmd.command_id in self._inflight:
            await self._inflight[cmd.command_id].wait()
        seen = self._results.get(cmd.command_id) or await anyio.to_thread.run_sync(
            agent.outbox.recall, cmd.command_id
        )
        if seen is not None:
            return CommandResult(**{**_fields(seen), "replayed": True})
        done = self._inflight[cmd.command_id] = anyio.Event()
        try:
            if time.time() > cmd.deadline:
                result = self._result(
                    cmd,
                    Outcome.EXPIRED,
                    f"expired {time.time() - cmd.deadline:.1f}s before it arrived; not executed",
                )
            else:
                try:
                    with anyio.fail_after(max(0.1, cmd.deadline - time.time())):
                        result = await self._dispatch(cmd)
                except TimeoutError:
                    result = self._result(cmd, Outcome.TIMEOUT, "deadline reached while running")
                except Exception as exc:
                    log.exception("command %s failed", cmd.command_id)
                    result = self._result(cmd, Outcome.FAILED, f"{type(exc).__name__}: {exc}")
            await self._remember(cmd, result)
        finally:
            done.set()
            self._inflight.pop(cmd.command_id, None)
        return result

    async def _remember(self, cmd: Command, result: CommandResult) -> None:
        self._results[cmd.command_id] = result
        while len(self._results) > REMEMBER:
            self._results.popitem(last=False)
        audit = Event(
            tenant=cmd.tenant,
            host=cmd.host,
            session=cmd.body.session,
            boot_id=self.agent.clock.boot_id,
            seq=0,
            ts=time.time(),
            event_type="command",
            summary=f"{_verb(cmd)} {cmd.body.session} by {cmd.issued_by}: {result.outcome.value}",
            source_kind=SourceKind.OPERATOR,
            payload={
                "verb": _verb(cmd),
                "outcome": result.outcome.value,
                "command_id": cmd.command_id,
                "issued_by": cmd.issued_by,
                "issued_at": cmd.issued_at,
                "message": result.message,
                "details": result.details,
            },
            tags=["command", _verb(cmd), result.outcome.value],
        )
        await self.agent.ops.record(cmd.command_id, result, [audit])

    def _result(self, cmd: Command, outcome: Outcome, message: str, **kw: object) -> CommandResult:
        return CommandResult(
            command_id=cmd.command_id,
            outcome=outcome,
            message=message,
            tenant=cmd.tenant,
            host=cmd.host,
            session=cmd.body.session,
            **kw,
        )  # type: ignore[arg-type]

    async def _dispatch(self, cmd: Command) -> CommandResult:
        agent = self.agent
        body = cmd.body
        now = time.time()
        if isinstance(body, Spawn):
            outcome, message = await agent.ops.spawn(body)
            return self._result(cmd, outcome, message)
        pane = await agent.ops.pane(body.session)
        if pane is None:
            return self._result(
                cmd,
                Outcome.UNKNOWN_SESSION,
                f"no session {body.session!r} on {cmd.tenant}/{cmd.host}",
            )
        if isinstance(body, Stop):
            outcome, message = await agent.ops.stop_session(body.session)
            return self._result(cmd, outcome, message)
        if isinstance(body, Takeover):
            ok, lease = agent.takeovers.acquire(
                body.session, cmd.issued_by, body.reason, body.ttl_s, now
            )
            if not ok:
                return self._lease_refusal(cmd, lease)
            await agent.ops.lease_event(body.session, "lease.acquired", lease, cmd.issued_by)
            return self._result(
                cmd,
                Outcome.OK,
                f"{cmd.issued_by} holds {body.session} until "
                f"{time.strftime('%H:%M:%S', time.localtime(lease.expires_at))}",
                details={"expires_at": lease.expires_at, "since": lease.since},
            )
        if isinstance(body, Release):
            ok, lease = agent.takeovers.release(body.session, cmd.issued_by, now)
            if not ok and lease is not None:
                return self._lease_refusal(cmd, lease)
            if lease is not None:
                await agent.ops.lease_event(body.session, "lease.released", lease, cmd.issued_by)
            return self._result(
                cmd,
                Outcome.OK if lease else Outcome.NOOP,
                "released" if lease else "no lease was held",
            )
        if isinstance(body, Watch):
            new = agent.watches.renew(body.session, body.watcher, body.ttl_s, now)
            if new or body.resync:
                agent.want_snapshot.add(body.session)
            return self._result(
                cmd,
                Outcome.OK,
                "watching",
                details={
                    "subject": subjects.output(cmd.tenant, cmd.host, body.session),
                    "ttl_s": body.ttl_s,
                },
            )
        if isinstance(body, Explain):
            return self._result(cmd, Outcome.OK, **await agent.ops.explain(body.session, pane))
        if pane.dead:
            return self._result(
                cmd,
                Outcome.SESSION_DEAD,
                f"{body.session} is dead (exit status {pane.dead_status}, "
                f"signal {pane.dead_signal})",
            )
        lease = agent.takeovers.allows(body.session, cmd.issued_by, now)
        if lease is not None:
            return self._lease_refusal(cmd, lease)
        spec = agent.ops.runtime_of(body.session)
        if isinstance(body, Send):
            verify = spec.interactive if body.verify is None else body.verify
            out = await agent.steering.send(pane, spec, body.text, verify, body.timeout_s)
            return self._result(
                cmd, out.outcome, out.message, screen=out.screen, details=out.details or {}
            )
        if isinstance(body, Cancel):
            return await agent.ops.cancel(cmd, pane, spec, body.timeout_s, self._result)
        return self._result(cmd, Outcome.BAD_REQUEST, f"unknown verb {_verb(cmd)}")

    def _lease_refusal(self, cmd: Command, lease: object) -> CommandResult:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.since))  # type: ignore[attr-defined]
        holder = lease.holder  # type: ignore[attr-defined]
        return self._result(
            cmd,
            Outcome.LEASE_HELD,
            f"lease held by {holder} since {since}",
            details={"holder": holder, "since": lease.since},
        )  # type: ignore[attr-defined]


def _verb(cmd: Command) -> str:
    return type(cmd.body).__name__.lower()


def _fields(result: CommandResult) -> dict[str, object]:
    import msgspec

    return msgspec.structs.asdict(result)
