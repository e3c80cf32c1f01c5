"""What `fleet install` writes: the systemd units of the fleet on this machine (NATS, the
controller, one host agent per tenant) and, at install time, their configs.

The agent's unit is `fleet deploy`'s template (controller/deploy/templates), so a host has one
`fleet-agent@.service` whichever command put it there. NATS and the controller get units of
their own: `deploy/fleet-controller.service` is for a dedicated system user and /opt.
"""

from __future__ import annotations

import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from agent.config import AgentConfig
from controller.deploy.files import UNIT_NAME, env_file_text, unit_text
from controller.natsserver.embedded import nats_server_binary

NATS_UNIT = "fleet-nats.service"
CONTROLLER_UNIT = "fleet-controller.service"
LINGER_DIR = Path("/var/lib/systemd/linger")

_COMMON = """\
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart={exec_start}
Restart=always
RestartSec=1
RestartSteps=6
RestartMaxDelaySec=30
KillSignal=SIGTERM
TimeoutStopSec=30
"""

NATS_TEXT = (
    """\
# agentfleet: the fleet's NATS server with JetStream. Written by `fleet install`; removed by
# `fleet uninstall` (its store stays in the data dir).
[Unit]
Description=agentfleet NATS server
After=network-online.target
Wants=network-online.target
"""
    + _COMMON
    + """\
# `fleet tenancy` rewrites the accounts and reloads the server.
ExecReload=/bin/kill -HUP $MAINPID

[Install]
WantedBy={target}
"""
)

CONTROLLER_TEXT = (
    """\
# agentfleet controller: fleet state, event store, the `fleet` API. Written by `fleet install`;
# removed by `fleet uninstall` (its data stays in the data dir).
[Unit]
Description=agentfleet controller
After=network-online.target fleet-nats.service
Wants=network-online.target fleet-nats.service
"""
    + _COMMON
    + """\

[Install]
WantedBy={target}
"""
)


@dataclass(frozen=True)
class Layout:
    """Where the units go: the system manager's dirs as root, else this user's manager's."""

    system: bool
    unit_dir: Path
    etc_dir: Path  # %E/agentfleet: what the agent template's EnvironmentFile= names
    data: Path

    @property
    def manifest(self) -> Path:
        return self.etc_dir / "installed.json"

    @property
    def target(self) -> str:
        return "multi-user.target" if self.system else "default.target"

    def systemctl(self, *args: str) -> list[str]:
        return ["systemctl", *(() if self.system else ("--user",)), *args]

    def agent_dir(self, tenant: str) -> Path:
        return self.data / f"agent-{tenant}"  # FLEET_AGENT_DIR: agent.toml, venv

    @property
    def nats_conf(self) -> Path:
        return self.data / "nats" / "nats-server.conf"

    @property
    def controller_conf(self) -> Path:
        return self.data / "controller.toml"


def layout(system: bool, data: Path) -> Layout:
    if system:
        return Layout(True, Path("/etc/systemd/system"), Path("/etc/agentfleet"), data)
    # %E of a user manager: $XDG_CONFIG_HOME, else ~/.config.
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return Layout(False, config / "systemd" / "user", config / "agentfleet", data)


def scripts_dir() -> Path:
    """Where this install's `fleet`, `fleet-agent` (and the pinned nats-server) are."""
    return Path(sysconfig.get_path("scripts"))


def exec_word(path: Path | str) -> str:
    """One word of an ExecStart= line: `%` doubled (a specifier), quoted if it has spaces."""
    text = str(path).replace("%", "%%")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def agent_instance(tenant: str) -> str:
    return UNIT_NAME.replace("@", f"@{tenant}")


def units(lay: Layout, configs: list[AgentConfig]) -> list[tuple[Path, str, int]]:
    """(path, content, mode) of every unit and env file, in enable order."""
    nats = f"{exec_word(nats_server_binary())} -c {exec_word(lay.nats_conf)}"
    fleet, conf = exec_word(scripts_dir() / "fleet"), exec_word(lay.controller_conf)
    controller = f"{fleet} controller run --config {conf}"
    out = [
        (lay.unit_dir / NATS_UNIT, NATS_TEXT.format(exec_start=nats, target=lay.target), 0o644),
        (
            lay.unit_dir / CONTROLLER_UNIT,
            CONTROLLER_TEXT.format(exec_start=controller, target=lay.target),
            0o644,
        ),
        # No User=: the agent runs as whoever installs it, the user whose tmux sessions
        # `fleet init` adopted (root too: system units).
        (lay.unit_dir / UNIT_NAME, unit_text(user_manager=True), 0o644),
    ]
    for config in configs:
        env = env_file_text(str(lay.agent_dir(config.tenant))).replace(
            "`fleet deploy`", "`fleet install`"
        )
        out.append((lay.etc_dir / f"agent-{config.tenant}.env", env, 0o644))
    return out


def unit_names(configs: list[AgentConfig]) -> list[str]:
    return [NATS_UNIT, CONTROLLER_UNIT, *(agent_instance(c.tenant) for c in configs)]


def linger_needed(lay: Layout, user: str) -> bool:
    """A user manager stops at logout and starts at login, not boot, unless lingering."""
    return not lay.system and not (LINGER_DIR / user).exists()
