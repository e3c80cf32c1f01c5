"""Controller configuration: one TOML file, loaded into one typed struct.

``ConfigError`` is common.config's, named here for the callers of ``load``.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import platformdirs

from common.config import ConfigError, in_range, load_toml
from common.natsconn import NatsSettings
from common.tomlout import dump_struct
from controller.attention.rules import AttentionConfig
from controller.events.streams import StreamSettings
from controller.events.synthesis.engine import SynthesisConfig
from controller.reactions.sinks import FORGES, Sink, check
from protocol.ids import IdError, validate_id, validate_tenant


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("agentfleet"))


class ControllerConfig(msgspec.Struct, frozen=True, kw_only=True):
    tenants: list[str]
    # The API connection (the CONTROL account under the generated config) and, when each
    # tenant is its own NATS account, one connection per tenant. Without `tenant_nats` every
    # tenant shares the `nats` connection (the --insecure, single-account setup).
    nats: NatsSettings = NatsSettings()
    tenant_nats: dict[str, NatsSettings] = {}
    data_dir: str = ""  # empty: <user data dir>/controller
    liveness_tick_s: float = 0.5
    # After a restart no host is marked suspect or down before this many seconds: hosts need
    # time to send the heartbeat that proves them alive.
    restart_grace_s: float = 15.0
    persist_interval_s: float = 2.0
    api_queue: str = "fleet-controller"
    page_limit: int = 1000
    streams: StreamSettings = StreamSettings()
    synthesis: SynthesisConfig = SynthesisConfig()
    attention: AttentionConfig = AttentionConfig()
    # Reaction rules (controller/reactions/rules.py), re-read when the file changes; empty:
    # <data dir>/reactions.toml. No file: no rules.
    reactions_file: str = ""
    # Where `fleet report weekly` (its timer) also posts the digest, once per week: an issue
    # comment sink (kind forgejo, gitea or github; controller/reactions/sinks.py). Unset: the
    # digest lands in the event store only.
    evidence_inbox: Sink | None = None
    metrics_addr: str | None = None  # HOST:PORT for GET /metrics (Prometheus); off when unset
    # One of several active-active replicas of this fleet's controller (issue 18): each its
    # own id, data_dir and durable event consumer; empty: the only controller, as before.
    replica: str = ""
    # Leader election among replicas (controller/replicas/): the leader key lives this long
    # unless renewed; a dead leader is replaced within it.
    leader_ttl_s: float = 6.0

    @property
    def reactions_path(self) -> Path:
        return (
            Path(self.reactions_file).expanduser()
            if self.reactions_file
            else (self.data_path / "reactions.toml")
        )

    @property
    def data_path(self) -> Path:
        return (
            Path(self.data_dir).expanduser() if self.data_dir else default_data_dir() / "controller"
        )


def validate(config: ControllerConfig) -> ControllerConfig:
    if not config.tenants:
        raise ConfigError("tenants must list at least one tenant")
    try:
        for tenant in config.tenants:
            validate_tenant(tenant)
    except IdError as exc:
        raise ConfigError(str(exc)) from None
    if len(set(config.tenants)) != len(config.tenants):
        raise ConfigError("tenants lists a tenant twice")
    # Lower bounds: liveness_tick_s = 0 busy-looped at 92 % of a core.
    in_range("liveness_tick_s", config.liveness_tick_s, 0.05, 60)
    in_range("persist_interval_s", config.persist_interval_s, 0.1, 3600)
    in_range("restart_grace_s", config.restart_grace_s, 0, 86_400)
    in_range("page_limit", config.page_limit, 1, 100_000)
    in_range("leader_ttl_s", config.leader_ttl_s, 1, 600)
    if config.replica:
        try:
            validate_id(config.replica, "replica")
        except IdError as exc:
            raise ConfigError(str(exc)) from None
    if config.evidence_inbox is not None:
        if config.evidence_inbox.kind not in FORGES:
            raise ConfigError("evidence_inbox: kind must be forgejo, gitea or github")
        check("evidence_inbox", config.evidence_inbox)
    if config.metrics_addr is not None:
        check_addr("metrics_addr", config.metrics_addr)
    if config.data_path.exists() and not config.data_path.is_dir():
        raise ConfigError(f"data_dir {config.data_path} exists and is not a directory")
    return config


def check_addr(name: str, addr: str) -> tuple[str, int]:
    """HOST:PORT with a port in 1..65535 (0: any free port), or a one-line ConfigError."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name} must be HOST:PORT (port 0-65535), not {addr!r}")
    return host.strip("[]"), int(port)


def load(path: Path) -> ControllerConfig:
    return load_toml(path, ControllerConfig, validate)


def dump(config: ControllerConfig) -> str:
    return dump_struct(config)
