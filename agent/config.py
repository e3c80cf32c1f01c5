"""Host agent configuration: one TOML file, loaded into one typed struct.

``ConfigError`` is common.config's, named here for the callers of ``load``.
"""

from __future__ import annotations

import socket
from enum import Enum
from pathlib import Path

import msgspec
import platformdirs

from common.config import ConfigError, load_toml
from common.natsconn import NatsSettings
from common.tomlout import dump_struct
from protocol.heartbeat import DEFAULT_INTERVAL_S, SessionKind
from protocol.ids import (
    IdError,
    host_id_from_hostname,
    validate_host,
    validate_session,
    validate_tenant,
)


class SessionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One roster entry: a session the host agent is responsible for."""

    name: str
    runtime: str = "stub"
    command: str | list[str] | None = None  # list: exec'd directly; str: run by the shell
    cwd: str | None = None
    env: dict[str, str] = {}
    kind: SessionKind = SessionKind.CORE
    unit: str | None = None  # systemd unit whose boot-enabled state is reported


class RootPolicy(str, Enum):
    REFUSE = "refuse"
    ALLOW = "allow"


class AgentConfig(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    host: str = ""  # empty: derived from the hostname
    nats: NatsSettings = NatsSettings()
    tmux_socket: str = ""  # empty: fleet-<tenant>
    state_dir: str = ""  # empty: the user's state dir
    heartbeat_interval_s: float = DEFAULT_INTERVAL_S
    poll_interval_s: float = 1.0
    window_width: int = 200
    window_height: int = 50
    outbox_max_events: int = 100_000
    restart_backoff_s: float = 5.0  # first restart of a dead core session; doubles, max 60 s
    run_as_user: str | None = None  # the tenant's Linux user: sessions run as it (root agent)
    allow_root: bool = False  # run sessions as root when the agent is root and no user is set
    runtimes_dir: str | None = None  # extra runtime specs (*.toml) overriding the built-ins
    sessions: list[SessionSpec] = []

    @property
    def host_id(self) -> str:
        return self.host or host_id_from_hostname(socket.gethostname())

    @property
    def socket_name(self) -> str:
        return self.tmux_socket or f"fleet-{self.tenant}"

    @property
    def state_path(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir).expanduser()
        base = Path(platformdirs.user_state_dir("agentfleet"))
        return base / f"agent-{self.tenant}-{self.host_id}"


def validate(config: AgentConfig) -> AgentConfig:
    try:
        validate_tenant(config.tenant)
        validate_host(config.host_id)
        seen: set[str] = set()
        for spec in config.sessions:
            validate_session(spec.name)
            if spec.name in seen:
                raise ConfigError(f"session {spec.name!r} appears twice in the roster")
            seen.add(spec.name)
    except IdError as exc:
        raise ConfigError(str(exc)) from None
    if not 0.05 <= config.heartbeat_interval_s <= 3600:
        raise ConfigError("heartbeat_interval_s must be between 0.05 and 3600")
    if not config.nats.servers:
        raise ConfigError("nats.servers must name at least one server")
    return config


def load(path: Path) -> AgentConfig:
    return load_toml(path, AgentConfig, validate)


def dump(config: AgentConfig) -> str:
    """Render a config as TOML (used by `fleet up` and `fleet deploy`)."""
    return dump_struct(config)
