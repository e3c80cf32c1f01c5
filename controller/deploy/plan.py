"""`fleet deploy`: put a host agent on a host over SSH and see its first heartbeat.

Steps, each named in progress and in errors: connect → probe → wheels → venv → config →
service → heartbeat. Each step compares what it would write with what is there, so a second
run changes nothing and reports `unchanged`.
"""

# Long on purpose: the deploy steps in the order they run, each with its no-change check.
from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import anyio

from common.natsconn import NatsSettings
from controller.cli.client import ClientError, ControllerClient
from controller.deploy.files import host_files, sha256_text
from controller.deploy.remote import (
    Probe,
    Remote,
    SshOptions,
    Target,
    agent_log,
    connect,
    start_supervised,
    start_unit,
)
from controller.deploy.steps import (
    PyTarget,
    StepError,
    Wheelhouse,
    build_wheelhouse,
    load_wheelhouse,
)
from protocol import api
from protocol.api import HostState, PsRequest
from protocol.ids import host_id_from_hostname, validate_host, validate_tenant

STEPS = ("connect", "probe", "wheels", "venv", "config", "service", "heartbeat")
MIN_PYTHON = (3, 11)

Report = Callable[[str, str], None]  # (step, detail)


class Outcome(str, Enum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    PLANNED = "dry-run"
    FAILED = "failed"


@dataclass(frozen=True)
class DeployOptions:
    tenant: str
    agent_servers: list[str]  # what the *remote* agent connects to
    controller: NatsSettings  # where this CLI finds the controller, to see the heartbeat
    host_id: str | None = None
    credentials: Path | None = None
    roster: Path | None = None
    tmux_socket: str = ""
    heartbeat_interval_s: float = 5.0
    run_as_user: str | None = None  # sessions' user when the agent runs as root
    allow_root: bool = False  # a root agent may run its sessions as root
    systemd: bool = True
    remote_dir: str = ""
    remote_python: str = "python3"
    dry_run: bool = False
    ssh: SshOptions = field(default_factory=SshOptions)
    heartbeat_timeout_s: float = 60.0
    wheel_cache: Path | None = None
    wheelhouse: Path | None = None  # prebuilt wheels, used as they are
    operator: str | None = None  # who this CLI asks the controller as (its context's)


@dataclass
class HostResult:
    target: Target
    outcome: Outcome = Outcome.FAILED
    host_id: str = ""
    changes: list[str] = field(default_factory=list)
    error: StepError | None = None
    seconds: float = 0.0


class WheelSource:
    """Builds each target's wheelhouse once, however many hosts deploy in parallel."""

    def __init__(self, cache: Path | None, prebuilt: Path | None = None) -> None:
        self.cache = cache
        self.prebuilt = prebuilt
        self._lock = anyio.Lock()
        self._built: dict[PyTarget, Wheelhouse] = {}

    async def get(self, target: PyTarget) -> Wheelhouse:
        async with self._lock:
            if target not in self._built:
                if self.prebuilt is not None:
                    house = await anyio.to_thread.run_sync(load_wheelhouse, self.prebuilt)
                else:
                    house = await anyio.to_thread.run_sync(build_wheelhouse, target, self.cache)
                self._built[target] = house
            return self._built[target]


async def deploy_host(
    target: Target, opts: DeployOptions, wheels: WheelSource, report: Report
) -> HostResult:
    result = HostResult(target)
    started = time.monotonic()
    try:
        validate_tenant(opts.tenant)
        report("connect", str(target))
        remote = Remote(await connect(target, opts.ssh))
        try:
            await _deploy(remote, opts, wheels, report, result)
        finally:
            await remote.close()
    except StepError as exc:
        result.outcome, result.error = Outcome.FAILED, exc
    except ValueError as exc:  # a bad id, before anything was sent
        result.outcome, result.error = Outcome.FAILED, StepError("probe", str(exc))
    result.seconds = time.monotonic() - started
    return result


async def _probe(remote: Remote, opts: DeployOptions) -> tuple[Probe, str]:
    mode = "system" if opts.systemd else "supervisor"
    probe = await remote.probe(opts.remote_python, opts.tenant, opts.remote_dir, mode)
    if opts.systemd and probe["uid"] != 0:
        mode = "user"  # a non-root login manages its own units
        probe = await remote.probe(opts.remote_python, opts.tenant, opts.remote_dir, mode)
    if tuple(probe["python"]) < MIN_PYTHON:
        raise StepError(
            "probe", f"{opts.remote_python} on the host is {probe['python']}; need >= 3.11"
        )
    if opts.systemd and not probe["systemd"]:
        raise StepError("probe", "systemd is not running on the host; use --no-systemd")
    if not probe["run_as_exists"]:
        raise StepError(
            "probe",
            f"no user {probe['run_as']!r} on the host: the agent of tenant {opts.tenant} runs "
            f"as that user (create it with `useradd --create-home {probe['run_as']}`)",
        )
    return probe, mode


async def _deploy(
    remote: Remote, opts: DeployOptions, wheels: WheelSource, report: Report, result: HostResult
) -> None:
    report("probe", "")
    probe, mode = await _probe(remote, opts)
    host = opts.host_id or host_id_from_hostname(probe["hostname"])
    validate_host(host)
    result.host_id = host
    base = probe["base"]
    changes = result.changes
    write = not opts.dry_run

    report("wheels", "building" if not opts.dry_run else "checking")
    house = await wheels.get(probe.target)
    await _sync_wheels(remote, house, probe, write=write, changes=changes)
    report("venv", "")
    await _install(remote, house, probe, opts.remote_python, write=write, changes=changes)
    report("config", "")
    for key, content, file_mode in host_files(opts, host, base, mode):
        if probe["digests"][key] != sha256_text(content):
            changes.append(f"{key}: write {probe['paths'][key]}")
            if write:
                step = "service" if key in ("unit", "env", "supervisor") else "config"
                await remote.write(step, probe["paths"][key], content, file_mode)
    if write and changes and probe["run_as"] != probe["user"]:
        q = shlex.quote
        await remote.run("config", f"chown -R {q(probe['run_as'])}: {q(base)}", "chown")

    report("service", "")
    restart = bool(changes) and probe["running"]
    if not probe["running"]:
        changes.append("service: start")
    elif restart:
        changes.append("service: restart")
    if mode != "supervisor" and not probe["enabled"]:
        changes.append("service: enable at boot")
    if opts.dry_run:
        result.outcome = Outcome.PLANNED
        return
    since = time.monotonic()
    if mode == "supervisor":
        await start_supervised(remote, base, running=probe["running"], restart=restart)
    else:
        await start_unit(
            remote,
            opts.tenant,
            user_manager=mode == "user",
            enabled=probe["enabled"],
            unit_changed=any(c.startswith("unit:") for c in changes),
            restart=restart,
        )

    report("heartbeat", f"waiting for {opts.tenant}/{host}")
    fresh = since if (restart or not probe["running"]) else None
    await wait_for_heartbeat(opts, host, fresh, remote, base, mode)
    result.outcome = Outcome.CHANGED if changes else Outcome.UNCHANGED


async def _sync_wheels(
    remote: Remote, house: Wheelhouse, probe: Probe, *, write: bool, changes: list[str]
) -> None:
    base = probe["base"]
    have: dict[str, str] = probe["manifest"]
    upload = [n for n, fp in house.wheels.items() if have.get(n) != fp]
    stale = [n for n in have if n not in house.wheels]
    if not (upload or stale):
        return
    changes.append(f"wheels: {len(upload)} to upload, {len(stale)} stale")
    if not write:
        return
    await remote.upload("wheels", [house.directory / n for n in upload], f"{base}/wheels")
    if stale:
        names = " ".join(shlex.quote(f"{base}/wheels/{n}") for n in stale)
        await remote.run("wheels", f"rm -f {names}", "removing stale wheels")
    manifest = json.dumps(house.wheels, indent=1, sort_keys=True)
    await remote.write("wheels", f"{base}/wheels/MANIFEST.json", manifest)


async def _install(
    remote: Remote, house: Wheelhouse, probe: Probe, python: str, *, write: bool, changes: list[str]
) -> None:
    if probe["installed"] == house.fingerprint:
        return
    changes.append("venv: install")
    if not write:
        return
    q = shlex.quote
    # pip runs from its own wheel: no pip (or ensurepip) needed on the host.
    pip = (
        f"venv/bin/python wheels/{q(house.pip_wheel)}/pip install -q "
        "--disable-pip-version-check --no-index --no-deps"
    )
    script = "; ".join(
        [
            "set -e",
            f"cd {q(probe['base'])}",
            "mkdir -p logs state",
            f"[ -x venv/bin/python ] || {q(python)} -m venv --without-pip venv",
            f"{pip} wheels/*.whl",
            # Same version, new build: pip would call it satisfied and skip it.
            f"{pip} --force-reinstall wheels/{q(house.agent_wheel)}",
            f"echo {house.fingerprint} > venv/.fleet-installed",
        ]
    )
    await remote.run("venv", f"sh -c {q(script)}", "installing the agent")


async def wait_for_heartbeat(
    opts: DeployOptions, host: str, since: float | None, remote: Remote, base: str, mode: str
) -> None:
    """Until the controller shows the host ok, with a heartbeat newer than ``since`` (the
    monotonic time the agent was (re)started) when given."""
    last = "no answer yet"
    request = PsRequest(tenant=opts.tenant, host=host)
    with anyio.move_on_after(opts.heartbeat_timeout_s):
        while True:
            try:
                async with ControllerClient(opts.controller, operator=opts.operator) as client:
                    while True:
                        reply = await client.call(api.PS, request)
                        row = reply.rows[0] if reply.rows else None
                        age_ok = since is None or (
                            row is not None and row.heartbeat_age_s < time.monotonic() - since
                        )
                        if row is not None and row.host_state is HostState.OK and age_ok:
                            return
                        last = f"host state {row.host_state.value}" if row else "host not listed"
                        await anyio.sleep(0.25)
            except ClientError as exc:
                last = str(exc)
                await anyio.sleep(0.5)
    log = await agent_log(remote, base, mode, opts.tenant)
    raise StepError(
        "heartbeat",
        f"the controller saw no heartbeat from {opts.tenant}/{host} within "
        f"{opts.heartbeat_timeout_s:.0f}s ({last}); is {opts.tenant} among the controller's "
        f"tenants, and can the host reach {','.join(opts.agent_servers)}? agent log:",
        log,
    )


async def deploy_all(
    targets: list[Target], opts: DeployOptions, report: Callable[[Target, str, str], None]
) -> list[HostResult]:
    """Every target in parallel; one failing host never stops the others."""
    wheels = WheelSource(opts.wheel_cache, opts.wheelhouse)
    results: dict[Target, HostResult] = {}

    async def one(target: Target) -> None:
        results[target] = await deploy_host(
            target, opts, wheels, lambda step, detail: report(target, step, detail)
        )

    async with anyio.create_task_group() as tg:
        for target in targets:
            tg.start_soon(one, target)
    return [results[t] for t in targets]
