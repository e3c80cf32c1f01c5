"""Who asks the controller API, and what they may ask.

The identity is the subject's name token (`fleet.ctl.u.<operator>.<verb>`), which the broker
lets only that operator's key publish; the body's ``issued_by`` is a claim and is replaced
(as is an attention ack's or snooze's ``by``).
Roles and tenants come from the tenancy registry (re-read when it changes, so `fleet
operator remove` takes effect here at once, and at the broker on its reload).

A controller whose data dir holds no registry, or that connects without a key (`fleet up
--insecure`, a hand-run server without accounts), runs without authentication: there anyone
may publish on any subject, so it serves the plain `fleet.ctl.<verb>` to everyone as an
unproven admin and keeps the claimed ``issued_by``. Otherwise the plain subject is refused
(docs/security.md, *Operators*).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from controller.config import ControllerConfig
from controller.natsserver.accounts import OperatorRecord, TenancyError, TenancyStore
from controller.natsserver.config import cli_inbox
from protocol.api import (
    COMMAND_ROLES,
    VERBS,
    ApiError,
    ErrorCode,
    PsReply,
    Role,
    StatusReply,
)
from protocol.attention import AttentionActRequest, FeedRequest
from protocol.commands import CommandRequest, CommandResult, Outcome, Release
from protocol.events_api import EventShowReply, EventsReply

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role
    tenants: frozenset[str] | None  # None: every tenant
    proven: bool  # False: the unauthenticated subject of a no-auth fleet


def _as_caller(name: str, record: OperatorRecord) -> Caller:
    tenants = None if record.role is Role.ADMIN else frozenset(record.tenants)
    return Caller(name=name, role=record.role, tenants=tenants, proven=True)


def forbidden(message: str) -> ApiError:
    return ApiError(code=ErrorCode.FORBIDDEN, message=message)


class Access:
    def __init__(self, registry_path: Path, keyed: bool = True) -> None:
        self.store = TenancyStore(registry_path.parent)
        # Decided once, at start: a registry that disappears later refuses everyone.
        self.secure = keyed and registry_path.exists()
        self._seen: tuple[int, int, int] | None = None
        self._callers: dict[str, Caller] = {}
        self.refused = 0  # requests refused for identity, role or tenant

    @classmethod
    def unauthenticated(cls) -> Access:
        """No registry: every request on the plain subject is an unproven admin's."""
        return cls(Path("/nonexistent/agentfleet/tenancy/registry.json"))

    @classmethod
    def for_config(cls, config: ControllerConfig) -> Access:
        """The registry of the controller's data dir; none if its API connection has no key
        (the same data dir may serve a secure `fleet up` one day and `--insecure` the next)."""
        keyed = bool(config.nats.nkey_seed or config.nats.credentials)
        return cls(TenancyStore(config.data_path / "tenancy").registry_path, keyed)

    def _load(self) -> dict[str, Caller]:
        # One stat per request: a removed operator is refused from the next request on.
        try:
            st = self.store.registry_path.stat()
        except OSError:
            return {}
        seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        if seen != self._seen:
            try:
                operators = self.store.load().operators
            except TenancyError as exc:
                log.error("operator registry unreadable, refusing every operator: %s", exc)
                operators = {}
            self._callers = {name: _as_caller(name, r) for name, r in operators.items()}
            self._seen = seen
        return self._callers

    def caller(self, operator: str | None, claim: str = "") -> Caller | ApiError:
        if operator is None:
            if self.secure:
                return forbidden(
                    "fleet.ctl.<verb> is not authenticated on this fleet: ask as an operator "
                    "(fleet operator add; the CLI's context names its seed)"
                )
            return Caller(name=claim or "anonymous", role=Role.ADMIN, tenants=None, proven=False)
        caller = self._load().get(operator) if self.secure else None
        return caller or forbidden(f"no operator {operator!r} on this fleet")

    def tenants_of(self, issued_by: str) -> frozenset[str] | None:
        """The tenants the author of an admitted command may touch (None: all)."""
        if not self.secure:
            return None
        caller = self.caller(issued_by)
        return caller.tenants if isinstance(caller, Caller) else frozenset()

    async def call(self, operator: str | None, verb: str, request: Any, handler: Handler) -> Any:
        """Run ``handler`` for an admitted request, as ``operator``; a refusal otherwise."""
        claim = request.issued_by if isinstance(request, CommandRequest) else ""
        caller = self.caller(operator, claim)
        admitted = caller if isinstance(caller, ApiError) else admit(caller, verb, request)
        if isinstance(admitted, ApiError | CommandResult):
            self.refused += 1
            log.info("refused %s %s: %s", operator or "(plain subject)", verb, admitted.message)
            return admitted
        assert isinstance(caller, Caller)
        return screen(caller, await handler(admitted))


def admit(caller: Caller, verb: str, request: Any) -> Any:
    """The request as ``caller`` may ask it (identity set, tenant scoped), or a refusal."""
    needed = VERBS[verb].role if verb in VERBS else Role.ADMIN
    if not caller.role.allows(needed):
        return forbidden(
            f"{verb} needs the {needed.value} role; {caller.name} is a {caller.role.value}"
        )
    if isinstance(request, CommandRequest):
        return _admit_command(caller, request)
    if isinstance(request, AttentionActRequest) and caller.proven:
        request = msgspec.structs.replace(request, by=caller.name)  # what every replica records
    if (
        isinstance(request, FeedRequest)
        and caller.proven
        and not request.deliver.startswith(cli_inbox(caller.name) + ".")
    ):
        return forbidden(f"live updates go to {caller.name}'s own inbox only")
    if _foreign_deliver(caller, request):
        return forbidden(f"streams go to {caller.name}'s own inbox only")
    if caller.tenants is None or "tenant" not in type(request).__struct_fields__:
        return request
    tenant = request.tenant
    if tenant is None:
        if len(caller.tenants) == 1:
            return msgspec.structs.replace(request, tenant=next(iter(caller.tenants)))
        mine = ", ".join(sorted(caller.tenants))
        return forbidden(f"{caller.name} may see tenants {mine}: name one (--tenant)")
    if tenant not in caller.tenants:
        return forbidden(f"{caller.name} may not see tenant {tenant!r}")
    return request


def _foreign_deliver(caller: Caller, request: Any) -> bool:
    """Whether a streamed request (watch, feed) names an inbox that is not the caller's: the
    controller may publish into every CLI inbox, so it must not relay into another's."""
    deliver = getattr(request, "deliver", None)
    return bool(caller.proven and deliver and not deliver.startswith(cli_inbox(caller.name) + "."))


def _admit_command(caller: Caller, req: CommandRequest) -> CommandRequest | CommandResult:
    body = req.body
    needed = COMMAND_ROLES.get(type(body), Role.ADMIN)
    if isinstance(body, Release) and body.force:
        needed = Role.ADMIN
    verb = type(body).__struct_config__.tag
    refusal = None
    if not caller.role.allows(needed):
        what = "release --force" if needed is Role.ADMIN and isinstance(body, Release) else verb
        refusal = f"{what} needs the {needed.value} role; {caller.name} is a {caller.role.value}"
    elif _foreign_deliver(caller, req):
        refusal = f"watch frames go to {caller.name}'s own inbox only"
    if refusal is not None:
        return CommandResult(
            command_id=req.command_id or "refused",
            outcome=Outcome.BAD_REQUEST,
            message=f"forbidden: {refusal}",
        )
    # The one place issued_by is set: commands, leases and audit events carry it.
    return msgspec.structs.replace(req, issued_by=caller.name)


def screen(caller: Caller, reply: Any) -> Any:
    """Drop from a reply what the caller may not see (a second wall behind the scoping)."""
    tenants = caller.tenants
    if tenants is None:
        return reply
    if isinstance(reply, EventShowReply) and reply.event.tenant not in tenants:
        return ApiError(code=ErrorCode.NOT_FOUND, message=f"no event {reply.event.id}")
    if isinstance(reply, EventsReply):
        return msgspec.structs.replace(
            reply, events=[e for e in reply.events if e.tenant in tenants]
        )
    if isinstance(reply, PsReply):
        return msgspec.structs.replace(reply, rows=[r for r in reply.rows if r.tenant in tenants])
    if isinstance(reply, StatusReply):
        return msgspec.structs.replace(reply, tenants=[t for t in reply.tenants if t in tenants])
    return reply
