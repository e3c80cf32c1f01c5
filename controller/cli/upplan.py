"""What `fleet up` runs, decided and checked before anything starts: your roster (`--config
FILE`, repeatable, or the agent.toml `fleet init` writes), or else the demo roster.
Every bad option or config is an UpError: one line, exit 2.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import platformdirs

from agent.config import AgentConfig, SessionSpec, load, validate
from agent.uid import Identity, UidError, resolve, session_identity
from common.config import ConfigError
from common.natsconn import NatsSettings
from controller.cli.upguard import UpError
from protocol.ids import IdError, host_id_from_hostname, validate_host, validate_tenant

DEMO_SESSIONS = (
    SessionSpec(name="coder", runtime="stub", env={"FLEET_STUB_WORK_SECONDS": "8"}),
    SessionSpec(name="reviewer", runtime="stub", env={"FLEET_STUB_WORK_SECONDS": "4"}),
    SessionSpec(name="worker-3", runtime="stub", env={"FLEET_STUB_WORK_SECONDS": "2"}),
)
DEMO_HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class UpOptions:
    data_dir: Path | None = None
    port: int = 4222  # taken: a free one; 0: any free one
    tenants: tuple[str, ...] | None = None  # the demo's; None: ("demo",)
    host: str | None = None
    tmux_socket: str | None = None  # the demo's
    heartbeat_interval_s: float | None = None  # None: the roster's, 5 s for the demo
    insecure: bool = False  # one unauthenticated account instead of the generated config
    write_context: bool = True
    context_path: Path | None = None
    configs: tuple[Path, ...] = ()  # agent.toml files; none: the default one, else the demo
    demo: bool = False  # the demo even if a roster exists


@dataclass(frozen=True)
class Plan:
    agents: list[AgentConfig]  # one per tenant, without their NATS settings yet
    demo: bool  # the sessions are fleet up's own (removed when it stops)
    what: str  # one line: what runs, and why
    run_as: dict[str, Identity | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # logged once the data dir is ours

    @property
    def tenants(self) -> tuple[str, ...]:
        return tuple(c.tenant for c in self.agents)

    def wired(self, nats: dict[str, NatsSettings], data: Path) -> list[AgentConfig]:
        out = []
        for cfg in self.agents:
            cfg = msgspec.structs.replace(cfg, nats=nats[cfg.tenant])
            if self.demo:  # a roster keeps its own state dir: it is the same agent as ever
                cfg = msgspec.structs.replace(
                    cfg, state_dir=str(data / f"agent-{cfg.tenant}-{cfg.host_id}")
                )
            out.append(cfg)
        return out


def default_roster() -> Path:
    """Where `fleet init` writes the roster (controller/cli/init.py)."""
    return Path(platformdirs.user_config_dir("agentfleet")) / "agent.toml"


def plan_fleet(opts: UpOptions) -> Plan:
    if not 0 <= opts.port <= 65535:
        raise UpError(f"--port {opts.port}: not a TCP port (1-65535, or 0 for any free one)")
    if opts.host is not None:
        try:
            validate_host(opts.host)
        except IdError as exc:
            raise UpError(f"--host: {exc}") from None
    if opts.configs and opts.demo:
        raise UpError("--demo and --config exclude each other: choose one")
    paths, default = opts.configs, default_roster()
    if not paths and not opts.demo and default.exists():
        paths = (default,)
    demo_only = [
        name
        for name, given in (("--tenants", opts.tenants), ("--tmux-socket", opts.tmux_socket))
        if given is not None
    ]
    if paths and demo_only:
        raise UpError(
            f"{' and '.join(demo_only)} shape the demo fleet, but your roster {paths[0]} is "
            "what would run: drop them, or pass --demo"
        )
    plan = _roster(opts, paths) if paths else _demo(opts, default)
    sockets = [c.socket_name for c in plan.agents]
    if len(set(sockets)) != len(sockets):
        raise UpError(f"two rosters use the same tmux socket: {', '.join(sockets)}")
    return plan


def _roster(opts: UpOptions, paths: tuple[Path, ...]) -> Plan:
    agents, run_as, warnings = [], {}, []
    for path in paths:
        try:
            cfg = load(path)
        except ConfigError as exc:
            text = str(exc)
            raise UpError(text if str(path) in text else f"{path}: {text}") from None
        cfg = msgspec.structs.replace(
            cfg,
            host=opts.host or cfg.host_id,
            heartbeat_interval_s=_given(opts.heartbeat_interval_s, cfg.heartbeat_interval_s),
        )
        if cfg.tenant in run_as:
            raise UpError(f"{path}: tenant {cfg.tenant} has a roster already (one per tenant)")
        try:
            run_as[cfg.tenant], warning = _identity(cfg, demo=False)
        except UpError as exc:
            raise UpError(f"{path}: {exc}") from None
        warnings += [warning] if warning else []
        agents.append(_checked(cfg))
    what = "; ".join(
        f"your roster {p} (tenant {c.tenant}, tmux -L {c.socket_name}, "
        f"{len(c.sessions)} sessions; they keep running when fleet up stops)"
        for p, c in zip(paths, agents, strict=True)
    )
    return Plan(agents=agents, demo=False, what=what, run_as=run_as, warnings=warnings)


def _demo(opts: UpOptions, default: Path) -> Plan:
    tenants = opts.tenants if opts.tenants is not None else ("demo",)
    if not tenants:
        raise UpError("--tenants names no tenant")
    for tenant in tenants:
        try:
            validate_tenant(tenant)
        except IdError as exc:
            raise UpError(f"--tenants: {exc}") from None
    if len(set(tenants)) != len(tenants):
        raise UpError(f"--tenants names a tenant twice: {','.join(tenants)}")
    host = opts.host or host_id_from_hostname(socket.gethostname())
    agents = [
        _checked(
            AgentConfig(
                tenant=tenant,
                host=host,
                tmux_socket=_demo_socket(opts, tenant, len(tenants)),
                heartbeat_interval_s=_given(opts.heartbeat_interval_s, DEMO_HEARTBEAT_S),
                sessions=list(DEMO_SESSIONS),
            )
        )
        for tenant in tenants
    ]
    why = "--demo" if opts.demo else f"no roster at {default}; `fleet init` writes one"
    what = f"the demo fleet ({why}); its sessions are removed when fleet up stops"
    decisions = {c.tenant: _identity(c, demo=True) for c in agents}
    return Plan(
        agents=agents,
        demo=True,
        what=what,
        run_as={t: d[0] for t, d in decisions.items()},
        warnings=[f"{d[1]} (fleet up's local demo)" for d in decisions.values() if d[1]],
    )


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


def _demo_socket(opts: UpOptions, tenant: str, count: int) -> str:
    if opts.tmux_socket is None:
        return f"fleet-{tenant}"
    return opts.tmux_socket if count == 1 else f"{opts.tmux_socket}-{tenant}"


def _checked(cfg: AgentConfig) -> AgentConfig:
    try:
        return validate(cfg)
    except ConfigError as exc:
        raise UpError(str(exc)) from None


def _identity(cfg: AgentConfig, demo: bool) -> tuple[Identity | None, str | None]:
    """Who the tenant's sessions run as. The local demo runs them as whoever runs `fleet up`,
    root included; a roster says so itself (`run_as_user`, `allow_root`), as for fleet-agent."""
    try:
        user = resolve(cfg.run_as_user) if cfg.run_as_user and not demo else None
    except UidError as exc:
        raise UpError(f"run_as_user: {exc}") from None
    try:
        decision = session_identity(os.geteuid(), cfg.tenant, user, demo or cfg.allow_root)
    except UidError:
        raise UpError(
            f"tenant {cfg.tenant} would run its sessions as root: set run_as_user, or "
            "allow_root = true (what `fleet init` writes when run as root)"
        ) from None
    return decision.run_as, decision.warning
