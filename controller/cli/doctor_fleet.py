"""`fleet doctor`'s questions to the fleet: is NATS reachable with the CLI's settings, does the
controller answer `status`, which agents are not heartbeating, which sessions are flagged,
do the clocks agree, and are the CLI's own credentials safe (controller/cli/doctor.py has the
local checks)."""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Literal

import anyio
import msgspec

from agent.config import AgentConfig
from controller.cli.client import (
    ClientError,
    ControllerClient,
    context_path,
    resolve_operator,
    resolve_settings,
)
from controller.cli.common import CLI_DEADLINE_S
from protocol import api
from protocol.api import Flag, HostState, PsRequest, PsRow, StatusReply, StatusRequest

CLOCK_SKEW_S = 2.0  # past this, liveness ages and event times are visibly wrong

Rosters = dict[str, tuple[Path, AgentConfig]]  # tenant → its roster file and config
Installed = dict[str, str]  # unit `fleet install` enabled → its systemctl (`--user` or not)


Level = Literal["ok", "note", "problem"]  # only a problem makes `fleet doctor` exit 1


class Finding(msgspec.Struct, frozen=True):
    check: str  # tmux, nats-server, controller, agent, session, boot, clock, credentials, …
    level: Level
    message: str
    fix: str | None = None  # the command that fixes it


def problem(check: str, message: str, fix: str) -> Finding:
    return Finding(check, "problem", message, fix)


def check_secret(path: Path, what: str, rewrite: str) -> list[Finding]:
    """A file with a key or credentials in it: there, readable by us, by nobody else."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return [problem("credentials", f"{what} {path} does not exist", rewrite)]
    except OSError as exc:
        return [problem("credentials", f"{what} {path}: {exc.strerror}", rewrite)]
    if mode & 0o077:
        text = f"{what} {path} is readable by others (mode {mode & 0o777:04o})"
        return [problem("credentials", text, f"chmod 600 {path}")]
    if not os.access(path, os.R_OK):
        text = f"{what} {path} is not readable by {getpass.getuser()}"
        return [problem("credentials", text, f"chown {getpass.getuser()} {path}")]
    return [Finding("credentials", "ok", f"{what} {path}")]


def cli_credentials(nats_url: str | None) -> list[Finding]:
    if nats_url or os.environ.get("FLEET_NATS_URL"):
        return []  # a URL given: no context file, no key of ours in use
    named = os.environ.get("FLEET_CONTEXT")
    path = Path(named) if named else context_path()
    if not path.exists() and not named:
        return []  # no fleet has written one: the default URL, unauthenticated
    rewrite = "fleet up (or fleet install) writes it again"
    out = check_secret(path, "CLI context", rewrite)
    if out[0].level != "ok":
        return out
    settings = resolve_settings(nats_url)
    for secret in (settings.nkey_seed, settings.credentials):
        if secret:
            out += check_secret(Path(secret).expanduser(), "CLI key", rewrite)
    return out


def fleet_findings(nats_url: str | None, rosters: Rosters, installed: Installed) -> list[Finding]:
    """Everything the controller can tell; an unreachable NATS or controller is a finding."""
    try:
        out = cli_credentials(nats_url)
        settings = resolve_settings(nats_url)
        operator = resolve_operator(nats_url)
    except ClientError as exc:
        return [problem("credentials", str(exc), "fleet up (or fleet install) writes it again")]
    url = ",".join(settings.servers)
    stage = ["nats-server"]

    async def ask() -> tuple[StatusReply, list[PsRow], float]:
        async with AsyncExitStack() as stack:
            # The CLI's deadline bounds "is anyone there"; each `ps` page after that has the
            # client's request timeout, so a fleet with many problems is listed in full.
            with anyio.fail_after(CLI_DEADLINE_S):
                client = ControllerClient(settings, operator=operator)
                await stack.enter_async_context(client)
                stage[0] = "controller"
                status = await client.call(api.STATUS, StatusRequest())
            rows, skew = await problem_rows(client)
        return status, rows, skew

    try:
        status, rows, skew = anyio.run(ask)
    except (ClientError, TimeoutError) as exc:
        what = str(exc) or f"no answer from {url} within {CLI_DEADLINE_S:.0f}s"
        unit = f"fleet-{'nats' if stage[0] == 'nats-server' else 'controller'}.service"
        start = f"{installed[unit]} start {unit}" if unit in installed else "fleet up"
        return [*out, problem(stage[0], what, start)]
    out.append(Finding("nats-server", "ok", f"NATS at {url} answers"))
    text = f"controller {status.controller_version} answers: tenants {', '.join(status.tenants)}"
    out.append(Finding("controller", "ok", text))
    out += host_findings(status, rows, rosters, installed)
    out += session_findings(rows, rosters)
    return out + clock_findings(status, skew)


async def problem_rows(client: ControllerClient) -> tuple[list[PsRow], float]:
    """`fleet ps --problems`, all pages, and how far the controller's clock is from ours."""
    rows: list[PsRow] = []
    cursor: int | None = 0
    skew = 0.0
    while cursor is not None:
        before = time.time()
        page = PsRequest(problems=True, cursor=cursor)
        reply = await client.call(api.PS, page)
        after = time.time()
        if cursor == 0 and reply.generated_at:
            # The controller's clock read between our two readings, if the clocks agree.
            if reply.generated_at > after:
                skew = reply.generated_at - after
            elif reply.generated_at < before:
                skew = reply.generated_at - before
        rows.extend(reply.rows)
        cursor = reply.next_cursor
    return rows, skew


def agent_start(tenant: str, rosters: Rosters, installed: Installed) -> str:
    unit = f"fleet-agent@{tenant}.service"
    if unit in installed:
        return f"{installed[unit]} start {unit}"
    if tenant in rosters:
        return f"fleet-agent run --config {rosters[tenant][0]}"
    return "start its host agent: fleet-agent run --config <its agent.toml>"


def host_findings(
    status: StatusReply, rows: list[PsRow], rosters: Rosters, installed: Installed
) -> list[Finding]:
    bad: dict[tuple[str, str], PsRow] = {}
    for row in rows:
        if row.host_state is not HostState.OK:
            bad.setdefault((row.tenant, row.host), row)
    out = []
    for (tenant, host), row in sorted(bad.items()):
        state = row.host_state.value
        why = "stopped (it said goodbye)" if state == "stopped" else f"{state} (silent)"
        text = (
            f"agent of host {host} (tenant {tenant}) is {why}: "
            f"last heartbeat {row.heartbeat_age_s:.0f}s ago"
        )
        out.append(problem("agent", text, agent_start(tenant, rosters, installed)))
    ok = status.hosts - len(bad)
    if status.hosts == 0:
        out.append(problem("agent", "no host agent has ever sent a heartbeat", "fleet up"))
    elif ok:
        out.append(Finding("agent", "ok", f"{ok} host agent(s) heartbeating"))
    return out


def session_findings(rows: list[PsRow], rosters: Rosters) -> list[Finding]:
    out = []
    for row in rows:
        snap = row.session
        if snap is None or row.host_state is not HostState.OK:
            continue  # a silent host's sessions are stale: its agent is the finding
        roster = rosters.get(row.tenant)
        spec = (
            next((s for s in roster[1].sessions if s.name == snap.name), None) if roster else None
        )
        where = f"session {snap.name} (tenant {row.tenant}, host {row.host})"
        for flag in row.flags:
            fix = FIXES[flag](row, spec.unit if spec else None, roster)
            level: Level = "note" if flag is Flag.UNMANAGED else "problem"
            out.append(Finding("session", level, f"{where}: {MEANING[flag]}", fix))
    return out


MEANING = {
    Flag.DRIFT: "DRIFT, another runtime runs than the roster says",
    Flag.DEAD: "DEAD, its process has exited",
    Flag.MISSING: "MISSING, in the roster but not in tmux",
    Flag.BOOT_DISABLED: "BOOT-DISABLED, its systemd unit would not start at boot",
    Flag.UNMANAGED: "UNMANAGED, not in the roster (listed, its output not captured)",
}
_Fix = Callable[[PsRow, str | None, tuple[Path, AgentConfig] | None], str]
FIXES: dict[Flag, _Fix] = {
    Flag.DRIFT: lambda row, _u, r: (
        f"set runtime = {(row.session and row.session.runtime_observed)!r} for it in "
        f"{r[0] if r else 'its roster'} (fleet init --print shows what runs)"
    ),
    # The agent relaunches a core session itself: what it logged says why it has not.
    Flag.DEAD: lambda row, _u, _r: (
        f"fleet events search --session {row.session and row.session.name}"
    ),
    Flag.MISSING: lambda row, _u, _r: (
        f"fleet events search --session {row.session and row.session.name}"
    ),
    Flag.BOOT_DISABLED: lambda _row, unit, _r: f"systemctl enable {unit or '<its unit>'}",
    Flag.UNMANAGED: lambda _row, _u, _r: "fleet init --print (a roster that adopts it)",
}


def clock_findings(status: StatusReply, skew: float) -> list[Finding]:
    out = []
    fix = "timedatectl set-ntp true (on the machine whose clock is off)"
    if abs(skew) > CLOCK_SKEW_S:
        side = "ahead of" if skew > 0 else "behind"
        text = f"the controller's clock is {abs(skew):.1f}s {side} this machine's"
        out.append(problem("clock", text, fix))
    lag_s = status.latencies_ms.get("heartbeat_lag_p50", 0.0) / 1000
    if abs(lag_s) > CLOCK_SKEW_S:
        text = (
            f"heartbeats arrive {lag_s:+.1f}s after their sent_at (p50): a host's clock is off "
            "(or the controller is far behind)"
        )
        out.append(problem("clock", text, fix))
    if not out:
        text = f"clocks agree within {CLOCK_SKEW_S:.0f}s (heartbeat lag p50 {lag_s * 1000:.0f} ms)"
        out.append(Finding("clock", "ok", text))
    return out
