"""The files `fleet deploy` writes on a host: agent config, credentials, unit, env file or
supervisor script, each rendered here so its hash can be compared with the host's copy."""

from __future__ import annotations

import hashlib
import tomllib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from agent.config import AgentConfig, ConfigError, SessionSpec, dump, validate
from common.natsconn import NatsSettings
from controller.deploy.steps import StepError, source_root

if TYPE_CHECKING:
    from controller.deploy.plan import DeployOptions

UNIT_NAME = "fleet-agent@.service"


def load_roster(path: Path | None) -> list[SessionSpec]:
    if path is None:
        return []
    try:
        raw = tomllib.loads(path.read_text())
        return msgspec.convert(raw.get("sessions", []), list[SessionSpec])
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise StepError("config", f"bad roster {path}: {exc}") from None


def render_agent_config(
    *,
    tenant: str,
    host: str,
    servers: list[str],
    base_dir: str,
    credentials: bool,
    tmux_socket: str,
    heartbeat_interval_s: float,
    sessions: list[SessionSpec],
    run_as_user: str | None = None,
    allow_root: bool = False,
) -> str:
    config = AgentConfig(
        tenant=tenant,
        host=host,
        nats=NatsSettings(
            servers=servers, credentials=f"{base_dir}/creds" if credentials else None
        ),
        tmux_socket=tmux_socket,
        state_dir=f"{base_dir}/state",
        heartbeat_interval_s=heartbeat_interval_s,
        sessions=sessions,
        run_as_user=run_as_user,
        allow_root=allow_root,
    )
    try:
        validate(config)
    except ConfigError as exc:
        raise StepError("config", str(exc)) from None
    return "# written by `fleet deploy`; a redeploy overwrites it\n" + dump(config)


def unit_text(user_manager: bool) -> str:
    """deploy/fleet-agent@.service; a user manager has no User= (it is that user already)."""
    path = source_root() / "deploy" / UNIT_NAME
    try:
        text = path.read_text()
    except OSError:
        # An installed (non-editable) copy has no deploy/ dir: the wheel carries the unit.
        packaged = resources.files("controller.deploy") / "templates" / UNIT_NAME
        try:
            text = packaged.read_text()
        except OSError as exc:
            raise StepError("service", f"cannot read the unit {path}: {exc.strerror}") from None
    if user_manager:
        text = "".join(ln for ln in text.splitlines(True) if not ln.startswith("User="))
    return text


def env_file_text(base_dir: str) -> str:
    return f"# written by `fleet deploy`\nFLEET_AGENT_DIR={base_dir}\n"


# Where systemd cannot run (containers, network namespaces in tests): a shell loop restarts
# the agent with the same backoff as the unit (1 s doubling to 60 s, reset after a minute up).
SUPERVISOR = r"""#!/bin/sh
# fleet-supervise: keeps one fleet-agent running without systemd (`fleet deploy --no-systemd`).
dir="$1"
echo $$ >"$dir/supervisor.pid"
child=
stopping=
trap 'stopping=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT
delay=1
while :; do
    started=$(date +%s)
    "$dir/venv/bin/fleet-agent" run --config "$dir/agent.toml" \
        </dev/null >>"$dir/logs/agent.log" 2>&1 &
    child=$!
    # wait returns early when a trapped signal arrives: wait again until the agent is gone.
    while kill -0 "$child" 2>/dev/null; do wait "$child"; done
    [ -n "$stopping" ] && break
    [ $(( $(date +%s) - started )) -ge 60 ] && delay=1
    echo "fleet-supervise: fleet-agent exited; restart in ${delay}s" >>"$dir/logs/agent.log"
    sleep "$delay" &
    child=$!
    wait "$child"
    [ -n "$stopping" ] && break
    delay=$(( delay * 2 )); [ "$delay" -gt 60 ] && delay=60
done
rm -f "$dir/supervisor.pid"
"""


def sha256_text(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def host_files(opts: DeployOptions, host: str, base: str, mode: str) -> list[tuple[str, str, int]]:
    """(probe key, content, mode) of every file the host should have."""
    files: list[tuple[str, str, int]] = []
    if opts.credentials is not None:
        try:
            creds = opts.credentials.read_text()
        except OSError as exc:
            raise StepError("config", f"cannot read {opts.credentials}: {exc.strerror}") from None
        files.append(("creds", creds, 0o600))
    config = render_agent_config(
        tenant=opts.tenant,
        host=host,
        servers=opts.agent_servers,
        base_dir=base,
        credentials=opts.credentials is not None,
        tmux_socket=opts.tmux_socket,
        heartbeat_interval_s=opts.heartbeat_interval_s,
        sessions=load_roster(opts.roster),
        run_as_user=opts.run_as_user,
        allow_root=opts.allow_root,
    )
    files.append(("config", config, 0o600 if opts.credentials else 0o644))
    if mode == "supervisor":
        files.append(("supervisor", SUPERVISOR, 0o755))
    else:
        files.append(("unit", unit_text(user_manager=mode == "user"), 0o644))
        files.append(("env", env_file_text(base), 0o644))
    return files
