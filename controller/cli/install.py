"""`fleet install` / `fleet uninstall`: the fleet on this machine as systemd units that come
back after a reboot. NATS, the controller and one host agent per roster (the one `fleet init`
wrote, or `--config`): user units, with lingering so they start at boot, or system units as
root. Uninstall removes exactly what install wrote (a manifest says what) and keeps the data.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import msgspec
import platformdirs
import typer

from agent.config import AgentConfig, ConfigError, dump, load
from controller.cli.common import JsonOpt, fail, print_json
from controller.cli.install_units import (
    Layout,
    layout,
    linger_needed,
    scripts_dir,
    unit_names,
    units,
)
from controller.config import ControllerConfig, default_data_dir
from controller.config import dump as dump_controller
from controller.natsserver.embedded import EmbeddedNatsError


class Manifest(msgspec.Struct, frozen=True):
    """What `fleet install` wrote and enabled, so `fleet uninstall` removes exactly that."""

    system: bool
    data: str
    files: list[str] = []
    units: list[str] = []
    linger: str | None = None  # the user whose lingering install enabled


DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="print what it would do, do nothing")]
SystemOpt = Annotated[
    bool | None,
    typer.Option("--system/--user", help="system or user units (default: system as root)"),
]


@dataclass
class Plan:
    lay: Layout
    files: list[tuple[Path, str, int]]  # units and env files: what uninstall removes
    generated: list[Path]  # configs written at install, kept by uninstall
    commands: list[list[str]] = field(default_factory=list)
    linger: str | None = None  # the user lingering is enabled for


def read_manifest(lay: Layout) -> Manifest | None:
    try:
        return msgspec.json.decode(lay.manifest.read_bytes(), type=Manifest)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:
        fail(f"cannot read {lay.manifest}: {exc}")


def load_rosters(paths: list[Path] | None) -> list[AgentConfig]:
    chosen = paths or [Path(platformdirs.user_config_dir("agentfleet")) / "agent.toml"]
    configs = []
    for path in chosen:
        if not path.exists():
            fail(f"no roster at {path}: run `fleet init` first, or pass --config FILE")
        try:
            configs.append(load(path))
        except ConfigError as exc:
            fail(str(exc))
    tenants = [c.tenant for c in configs]
    if len(set(tenants)) != len(tenants):
        fail(f"two rosters for one tenant ({', '.join(tenants)}): one agent per tenant")
    return configs


def make_plan(lay: Layout, configs: list[AgentConfig], force: bool) -> Plan:
    previous = read_manifest(lay)
    ours = set(previous.files if previous else [])
    if not (scripts_dir() / "fleet-agent").exists():
        fail(f"no fleet-agent next to fleet in {scripts_dir()}: install agentfleet there first")
    try:
        rendered = units(lay, configs)
    except EmbeddedNatsError as exc:
        fail(str(exc))
    files = []
    for path, text, mode in rendered:
        try:
            current = path.read_text()
        except OSError:
            current = None
        if current is not None and str(path) not in ours:
            if current != text and not force:
                fail(f"{path} exists and was not written by `fleet install`: pass --force")
            if current == text:
                continue  # someone else's identical file (`fleet deploy`): leave it theirs
        files.append((path, text, mode))
    generated = [lay.nats_conf, lay.controller_conf]
    generated += [lay.agent_dir(c.tenant) / "agent.toml" for c in configs]
    plan = Plan(lay, files, generated)
    plan.commands.append(lay.systemctl("daemon-reload"))
    plan.commands.append(lay.systemctl("enable", "--now", *unit_names(configs)))
    user = getpass.getuser()
    if linger_needed(lay, user):
        plan.linger = user
        plan.commands.append(["loginctl", "enable-linger", user])
    return plan


def write_configs(lay: Layout, configs: list[AgentConfig], port: int) -> None:
    """NATS, controller and agent configs with credentials, as `fleet up` makes them."""
    from controller.cli.client import write_context
    from controller.cli.up import secure_wiring
    from controller.natsserver.accounts import TenancyStore
    from controller.natsserver.config import include_directive
    from controller.natsserver.embedded import EmbeddedNats

    nats = EmbeddedNats(lay.data / "nats", port=port)
    store = TenancyStore(lay.data / "controller" / "tenancy")
    wiring = secure_wiring(store, {c.tenant: c.host_id for c in configs}, nats.url)
    for config in configs:
        agent = msgspec.structs.replace(config, nats=wiring.agents[config.tenant])
        home = lay.agent_dir(config.tenant)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        private(home / "agent.toml", "# written by `fleet install`\n" + dump(agent))
        venv = home / "venv"  # the layout the agent unit expects: venv/bin/fleet-agent
        if venv.is_symlink():
            venv.unlink()
        elif venv.exists():
            fail(f"{venv} exists and is not the link `fleet install` makes: move it away", 1)
        venv.symlink_to(scripts_dir().parent)
    nats.extra_config = include_directive(nats.config_path, store.auth_conf_path)
    nats.data_dir.mkdir(parents=True, exist_ok=True)
    private(lay.nats_conf, nats.render_config())
    controller = ControllerConfig(
        tenants=[c.tenant for c in configs],
        nats=wiring.api,
        tenant_nats=wiring.tenant_nats,
        data_dir=str(lay.data / "controller"),
    )
    private(lay.controller_conf, "# written by `fleet install`\n" + dump_controller(controller))
    write_context(wiring.cli, None, wiring.operator)


def private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)


def write_units(plan: Plan, configs: list[AgentConfig]) -> None:
    lay = plan.lay
    for path, text, mode in plan.files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    previous = read_manifest(lay) or Manifest(system=lay.system, data=str(lay.data))
    manifest = Manifest(
        system=lay.system,
        data=str(lay.data),
        files=sorted({*previous.files, *(str(p) for p, _, _ in plan.files)}),
        units=sorted({*previous.units, *unit_names(configs)}),
        linger=plan.linger or previous.linger,
    )
    # Before systemctl runs: a failed enable leaves files that uninstall must find.
    private(lay.manifest, msgspec.json.format(msgspec.json.encode(manifest)).decode() + "\n")


def run(argv: list[str]) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        fail(f"{argv[0]} not found: this needs systemd (docs/operations.md: without systemd)", 1)
    if result.returncode != 0:
        err = (result.stderr.strip().splitlines() or [""])[-1]
        fail(f"`{' '.join(argv)}` failed ({result.returncode}): {err}", 1)


def show(plan: Plan, dry: bool, json_out: bool) -> None:
    if json_out:
        files = [{"path": str(p), "mode": f"{m:04o}", "content": t} for p, t, m in plan.files]
        print_json(
            {
                "dry_run": dry,
                "system": plan.lay.system,
                "files": files,
                "generated": [str(p) for p in plan.generated],
                "commands": plan.commands,
            }
        )
        return
    kind = "system" if plan.lay.system else "user"
    if not dry:
        print(f"fleet install: {kind} units in {plan.lay.unit_dir}, enabled and started")
        for path, _, mode in plan.files:
            print(f"  wrote {path} ({mode:04o})")
    else:
        print(f"fleet install (dry run): would write {kind} units in {plan.lay.unit_dir}")
        for path, text, mode in plan.files:
            print(f"--- {path} ({mode:04o})")
            print(text.rstrip("\n"))
    verb = "wrote" if not dry else "would write"
    print(
        f"{verb} (with credentials; uninstall keeps them): " + ", ".join(map(str, plan.generated))
    )
    for argv in plan.commands:
        print(f"{'ran' if not dry else 'would run'}: {' '.join(argv)}")


def install(
    config: Annotated[
        list[Path] | None,
        typer.Option("--config", "-c", help="agent roster(s) (default: what `fleet init` wrote)"),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="where NATS, controller and credentials keep files")
    ] = None,
    port: Annotated[int, typer.Option(help="NATS port")] = 4222,
    system: SystemOpt = None,
    force: Annotated[bool, typer.Option(help="overwrite unit files not ours")] = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Install the fleet on this machine as systemd units (NATS, controller, agents) that
    start at boot."""
    # Not `fleet up`'s data dir: one controller and one nats-server per store, never two.
    data = data_dir or default_data_dir() / "installed"
    lay = layout(os.geteuid() == 0 if system is None else system, data.expanduser().absolute())
    configs = load_rosters(config)
    plan = make_plan(lay, configs, force)
    if dry_run:
        show(plan, True, json_out)
        return
    write_configs(lay, configs, port)
    write_units(plan, configs)
    for argv in plan.commands:
        run(argv)
    show(plan, False, json_out)


def uninstall(
    system: SystemOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Stop, disable and remove the units `fleet install` wrote. Configs, credentials and the
    event store stay (the data dir)."""
    lay = layout(os.geteuid() == 0 if system is None else system, default_data_dir() / "installed")
    manifest = read_manifest(lay)
    if manifest is None:
        fail(f"nothing to uninstall: no {lay.manifest} (written by `fleet install`)", 1)
    stop = [lay.systemctl("disable", "--now", *manifest.units)] if manifest.units else []
    after = [lay.systemctl("daemon-reload")]
    if manifest.linger:
        after.append(["loginctl", "disable-linger", manifest.linger])
    if dry_run:
        for argv in stop:
            print(f"$ {' '.join(argv)}")
        print("would remove " + ", ".join(manifest.files))
        for argv in after:
            print(f"$ {' '.join(argv)}")
        return
    for argv in stop:  # stopped and disabled while their files are still there
        run(argv)
    for name in manifest.files:
        Path(name).unlink(missing_ok=True)
    for argv in after:
        run(argv)
    lay.manifest.unlink(missing_ok=True)
    print("fleet uninstall: removed " + ", ".join(manifest.files))
    print(f"kept the data (configs, credentials, events) in {manifest.data}")


def register(app: typer.Typer) -> None:
    app.command("install")(install)
    app.command("uninstall")(uninstall)
