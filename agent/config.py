"""Host agent configuration: one TOML file, loaded into one typed struct.

``ConfigError`` is common.config's, named here for the callers of ``load``.
"""

from __future__ import annotations

import difflib
import socket
from enum import Enum
from pathlib import Path

import msgspec
import platformdirs

from agent.discovery.envfile import EnvFileError, read_env_file
from agent.discovery.runtimes import RuntimeSpecError, load_runtimes
from common.config import ConfigError, in_range, load_toml
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
    # systemd EnvironmentFile format (KEY=VALUE lines, # comments, optional quotes), read at
    # each launch; `env` wins over it. A leading "-" means: no file is fine (as systemd).
    env_file: str | None = None


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
    # Pipe sessions that are not in the roster to pane logs too (their output, secrets
    # included, would be stored): off unless asked for (docs/security.md).
    capture_unmanaged: bool = False
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
    # Lower bounds: 0 busy-loops (57 % of a core for poll_interval_s = 0), negative is nonsense.
    in_range("poll_interval_s", config.poll_interval_s, 0.05, 3600)
    in_range("restart_backoff_s", config.restart_backoff_s, 0.1, 3600)
    in_range("outbox_max_events", config.outbox_max_events, 100, 100_000_000)
    in_range("window_width", config.window_width, 20, 2000)
    in_range("window_height", config.window_height, 5, 1000)
    if not config.nats.servers:
        raise ConfigError("nats.servers must name at least one server")
    check_runtimes(config)
    return config


def check_env_files(config: AgentConfig) -> AgentConfig:
    """Each session's env_file can be read here and now (bad lines are warned about, not
    fatal). Only where the agent runs: `fleet deploy` validates a roster for another host."""
    for spec in config.sessions:
        if spec.env_file:
            try:
                read_env_file(spec.env_file)
            except EnvFileError as exc:
                raise ConfigError(f"session {spec.name!r}: {exc}") from None
    return config


def check_runtimes(config: AgentConfig) -> None:
    """`runtimes_dir` must exist, and a session's runtime must be one we have rules for when
    it has no `command` (the name would be run as the command) or when it is a near miss of
    one (`claud`: a typo). A session with its own command may name a runtime without rules
    (`fleet init` adopts `sleep 600` as runtime `sleep`): its screen state reads unknown."""
    extra = Path(config.runtimes_dir).expanduser() if config.runtimes_dir else None
    try:
        known = load_runtimes(extra)
    except RuntimeSpecError as exc:
        raise ConfigError(f"runtimes_dir: {exc}") from None
    for spec in config.sessions:
        if spec.runtime in known:
            continue
        close = difflib.get_close_matches(spec.runtime, list(known), n=1, cutoff=0.8)
        if spec.command is None or close:
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"session {spec.name!r}: unknown runtime {spec.runtime!r} "
                f"({hint}known: {', '.join(sorted(known))})"
            )


def load(path: Path) -> AgentConfig:
    return load_toml(path, AgentConfig, lambda c: check_env_files(validate(c)))


def dump(config: AgentConfig) -> str:
    """Render a config as TOML (used by `fleet up` and `fleet deploy`)."""
    return dump_struct(config)
