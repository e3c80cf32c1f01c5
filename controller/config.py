"""Controller configuration: one TOML file, loaded into one typed struct.

``ConfigError`` is common.config's, named here for the callers of ``load``.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import platformdirs

from common.config import ConfigError, load_toml
from common.natsconn import NatsSettings
from common.tomlout import dump_struct
from controller.events.streams import StreamSettings
from controller.events.synthesis.engine import SynthesisConfig
from protocol.ids import IdError, validate_tenant


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
    metrics_addr: str | None = None  # HOST:PORT for GET /metrics (Prometheus); off when unset

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
    return config


def load(path: Path) -> ControllerConfig:
    return load_toml(path, ControllerConfig, validate)


def dump(config: ControllerConfig) -> str:
    return dump_struct(config)
