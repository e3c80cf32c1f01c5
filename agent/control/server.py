"""The host agent's command endpoint (`fleet.<t>.cmd.<host>`, request/reply).

Refuses expired commands, answers a repeated `command_id` with its first result, checks the
takeover lease (for every verb that changes a session: send, answer, cancel, stop, and spawn
on a leased name), runs the verb, and records every command with its outcome as an audit
event, refusals included.
"""

# Long on purpose: one class, the checks every command meets in the order it meets them.
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from agent.control.leases import Lease, TakeoverLeases, WatchLeases
from agent.control.operations import Operations
from agent.control.spawn import Spawner
from agent.control.steering import Steering, answer_events
from agent.discovery.sessions import exit_of
from agent.events.emitter import Connection, Emitter
from agent.events.origin import Origin
from protocol import DecodeError, decode, encode, subjects
from protocol.commands import (
    Answer,
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
from protocol.events import SourceKind
from protocol.heartbeat import SNAPSHOT_WANTED

log = logging.getLogger(__name__)

REMEMBER = 4096  # recent command ids kept for replay answers

# The verbs that change what a session does: under someone else's takeover lease, refused.
LEASED = (Send, Answer, Cancel, Stop, Spawn)


class CommandServer:
    def __init__(
        self,
        *,
        connection: Connection,
        origin: Origin,
        emitter: Emitter,
        ops: Operations,
        spawner: Spawner,
        steering: Steering,
        takeovers: TakeoverLeases,
        watches: WatchLeases,
        on_snapshot_wanted: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.connection = connection
        # A controller's "send your full snapshot" shares this subject (agent/heartbeat.py);
        # one subscription serves both: a second one on the subject would also receive every
        # command, and the broker's allow_responses then refuses the real answer.
        self.on_snapshot_wanted = on_snapshot_wanted
        self.origin = origin
        self.emitter = emitter
        self.ops = ops
        self.spawner = spawner
        self.steering = steering
        self.takeovers = takeovers
        self.watches = watches
        self._results: OrderedDict[str, CommandResult] = OrderedDict()
        self._inflight: dict[str, anyio.Event] = {}
        self._sub: Subscription | None = None
        self._tg: TaskGroup | None = None

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        nc = self.connection()
        assert nc is not None
        # Before the first command: the leases granted before a restart hold again.
        await self.takeovers.restore(time.time())
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._sub = await nc.subscribe(
                subjects.command(self.origin.tenant, self.origin.host), cb=self._on_msg
            )
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await self._sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        if msg.data.startswith(SNAPSHOT_WANTED) and self.on_snapshot_wanted is not None:
            await self.on_snapshot_wanted(msg.data)
            return
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
        me = self.origin
        try:
            cmd = decode(data, Command)
        except DecodeError as exc:
            return CommandResult(
                command_id="", outcome=Outcome.BAD_REQUEST, message=f"not a command: {exc}"
            )
        if (cmd.tenant, cmd.host) != (me.tenant, me.host):
            return self._result(
                cmd,
                Outcome.BAD_REQUEST,
                f"this is {me.tenant}/{me.host}, not {cmd.tenant}/{cmd.host}",
            )
        if cmd.command_id in self._inflight:
            await self._inflight[cmd.command_id].wait()
        seen = self._results.get(cmd.command_id) or await self.emitter.recall(cmd.command_id)
        if seen is not None:
            return msgspec.structs.replace(seen, replayed=True)
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
        # Only commands addressed to this agent get here: its origin is the command's.
        audit = self.origin.event(
            cmd.body.session,
            "command",
            f"{_verb(cmd)} {cmd.body.session} by {cmd.issued_by}: {result.outcome.value}",
            SourceKind.OPERATOR,
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
        await self.emitter.record(cmd.command_id, result, [audit])

    def _result(
        self,
        cmd: Command,
        outcome: Outcome,
        message: str,
        *,
        screen: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> CommandResult:
        return CommandResult(
            command_id=cmd.command_id,
            outcome=outcome,
            message=message,
            tenant=cmd.tenant,
            host=cmd.host,
            session=cmd.body.session,
            screen=screen,
            details=details if details is not None else {},
        )

    async def _dispatch(self, cmd: Command) -> CommandResult:
        body = cmd.body
        now = time.time()
        if isinstance(body, LEASED):
            lease = self.takeovers.allows(body.session, cmd.issued_by, now)
            if lease is not None:
                return self._lease_refusal(cmd, lease)
        if isinstance(body, Spawn):
            outcome, message = await self.spawner.spawn(body)
            return self._result(cmd, outcome, message)
        pane = await self.ops.pane(body.session)
        if pane is None:
            return self._result(
                cmd,
                Outcome.UNKNOWN_SESSION,
                f"no session {body.session!r} on {cmd.tenant}/{cmd.host}",
            )
        if isinstance(body, Stop):
            outcome, message = await self.spawner.stop(body.session)
            return self._result(cmd, outcome, message)
        if isinstance(body, Takeover):
            return await self._takeover(cmd, body, now)
        if isinstance(body, Release):
            return await self._release(cmd, body, now)
        if isinstance(body, Watch):
            return self._watch(cmd, body, now)
        if isinstance(body, Explain):
            return self._result(cmd, Outcome.OK, **await self.ops.explain(body.session, pane))
        if pane.dead:
            status, sig = exit_of(pane)
            return self._result(
                cmd,
                Outcome.SESSION_DEAD,
                f"{body.session} is dead (exit status {status}, signal {sig})",
            )
        spec = self.ops.runtime_of(body.session)
        if isinstance(body, Send | Answer):
            if isinstance(body, Send):
                verify = spec.interactive if body.verify is None else body.verify
                out = await self.steering.send(
                    pane, spec, body.text, verify, body.timeout_s, body.answer
                )
            else:
                out = await self.steering.answer(pane, spec, body.choice, body.timeout_s)
            await self.emitter.emit(answer_events(self.origin, cmd, out))
            return self._result(
                cmd, out.outcome, out.message, screen=out.screen, details=out.details or {}
            )
        if isinstance(body, Cancel):
            return await self.ops.cancel(cmd, pane, spec, body.timeout_s, self._result)
        return self._result(cmd, Outcome.BAD_REQUEST, f"unknown verb {_verb(cmd)}")

    async def _takeover(self, cmd: Command, body: Takeover, now: float) -> CommandResult:
        ok, lease = await self.takeovers.acquire(
            body.session, cmd.issued_by, body.reason, body.ttl_s, now
        )
        if not ok:
            return self._lease_refusal(cmd, lease)
        return self._result(
            cmd,
            Outcome.OK,
            f"{cmd.issued_by} holds {body.session} until "
            f"{time.strftime('%H:%M:%S', time.localtime(lease.expires_at))}",
            details={"expires_at": lease.expires_at, "since": lease.since},
        )

    async def _release(self, cmd: Command, body: Release, now: float) -> CommandResult:
        ok, lease = await self.takeovers.release(body.session, cmd.issued_by, now, force=body.force)
        if not ok and lease is not None:
            return self._lease_refusal(cmd, lease)
        return self._result(
            cmd,
            Outcome.OK if lease else Outcome.NOOP,
            "released" if lease else "no lease was held",
        )

    def _watch(self, cmd: Command, body: Watch, now: float) -> CommandResult:
        new = self.watches.renew(body.session, body.watcher, body.ttl_s, now)
        if new or body.resync:
            self.watches.want_snapshot(body.session)
        return self._result(
            cmd,
            Outcome.OK,
            "watching",
            details={
                "subject": subjects.output(cmd.tenant, cmd.host, body.session),
                "ttl_s": body.ttl_s,
            },
        )

    def _lease_refusal(self, cmd: Command, lease: Lease) -> CommandResult:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.since))
        return self._result(
            cmd,
            Outcome.LEASE_HELD,
            f"lease held by {lease.holder} since {since}",
            details={"holder": lease.holder, "since": lease.since},
        )


def _verb(cmd: Command) -> str:
    return type(cmd.body).__name__.lower()
