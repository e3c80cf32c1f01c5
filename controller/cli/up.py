"""`fleet up`: everything on one machine — embedded NATS, controller, a local host agent with
a demo roster — and Ctrl-C takes it all down again in order.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import anyio

from agent.config import AgentConfig, SessionSpec
from agent.daemon import HostAgent
from agent.discovery.tmux import Tmux
from agent.uid import session_identity
from common.natsconn import NatsSettings
from common.signals import ExitFlags, watch_signals
from controller.cli.client import write_context
from controller.config import ControllerConfig, default_data_dir
from controller.daemon import Controller
from controller.natsserver.accounts import CLI_USER, TenancyStore
from controller.natsserver.config import cli_inbox, controller_inbox, host_inbox, include_directive
from controller.natsserver.embedded import EmbeddedNats, free_port
from protocol.ids import host_id_from_hostname

log = logging.getLogger(__name__)

DEMO_SESSIONS = (
    SessionSpec(name="coder", runtime="stub", env={"FLEET_STUB_WORK_SECONDS": "8"}),
    SessionSpec(name="reviewer", runtime="stub", env={"FLEET_STUB_WORK_SECONDS": "4"}),
    SessionSpec(name="worker-3", runtime="stub", env={"FLEET_STUB_WORK_SECONDS": "2"}),
)


@dataclass(frozen=True)
class UpOptions:
    data_dir: Path | None = None
    port: int = 4222
    tenants: tuple[str, ...] = ("demo",)
    host: str | None = None
    tmux_socket: str | None = None
    heartbeat_interval_s: float = 5.0
    insecure: bool = False  # one unauthenticated account instead of the generated config
    write_context: bool = True
    context_path: Path | None = None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class Wiring:
    """Who connects how: the controller's API and per-tenant settings, each agent's, the CLI's."""

    api: NatsSettings
    tenant_nats: dict[str, NatsSettings]
    agents: dict[str, NatsSettings]
    cli: NatsSettings


def secure_wiring(store: TenancyStore, tenants: tuple[str, ...], host: str, url: str) -> Wiring:
    """Credentials for everything `fleet up` runs (created once, reused on later runs)."""
    registry = store.ensure_tenants(list(tenants))
    agents = {}
    for tenant in tenants:
        if host not in registry.tenants[tenant].hosts:
            store.add_host(tenant, host)
        agents[tenant] = NatsSettings(
            servers=[url],
            nkey_seed=str(store.host_seed(tenant, host)),
            inbox_prefix=host_inbox(host),
        )
    return Wiring(
        api=NatsSettings(
            servers=[url],
            nkey_seed=str(store.control_controller_seed()),
            inbox_prefix=controller_inbox(),
        ),
        tenant_nats={
            t: NatsSettings(
                servers=[url],
                nkey_seed=str(store.tenant_controller_seed(t)),
                inbox_prefix=controller_inbox(),
            )
            for t in tenants
        },
        agents=agents,
        cli=NatsSettings(
            servers=[url], nkey_seed=str(store.cli_seed()), inbox_prefix=cli_inbox(CLI_USER)
        ),
    )


async def run_up(opts: UpOptions, flags: ExitFlags | None = None) -> None:
    flags = flags or ExitFlags()
    data = opts.data_dir or default_data_dir()
    port = opts.port if port_free(opts.port) else 0  # 0: a free port, announced below
    host = opts.host or host_id_from_hostname(socket.gethostname())
    nats_server = EmbeddedNats(data / "nats", port=port)
    if nats_server.port == 0:
        nats_server.port = free_port()
    url = nats_server.url
    if opts.insecure:
        plain = NatsSettings(servers=[url])
        wiring = Wiring(
            api=plain, tenant_nats={}, agents=dict.fromkeys(opts.tenants, plain), cli=plain
        )
    else:
        store = TenancyStore(data / "controller" / "tenancy")
        wiring = secure_wiring(store, opts.tenants, host, url)
        nats_server.extra_config = include_directive(nats_server.config_path, store.auth_conf_path)
    nats_server.start()
    agent_cfgs = [
        AgentConfig(
            tenant=tenant,
            host=host,
            nats=wiring.agents[tenant],
            tmux_socket=_socket(opts, tenant),
            state_dir=str(data / f"agent-{tenant}-{host}"),
            heartbeat_interval_s=opts.heartbeat_interval_s,
            sessions=list(DEMO_SESSIONS),
        )
        for tenant in opts.tenants
    ]
    controller_cfg = ControllerConfig(
        tenants=list(opts.tenants),
        nats=wiring.api,
        tenant_nats=wiring.tenant_nats,
        data_dir=str(data / "controller"),
    )
    try:
        if opts.write_context:
            path = write_context(wiring.cli, opts.context_path)
            log.info("CLI context written to %s", path)
        mode = "INSECURE (no auth)" if opts.insecure else "one NATS account per tenant"
        print(
            f"fleet up: NATS {url} ({mode}, data {data}), tenants {', '.join(opts.tenants)}, "
            f"host {host}\n"
            f"          in another terminal: fleet ps   (Ctrl-C here stops everything)",
            flush=True,
        )
        await _run_all(controller_cfg, agent_cfgs, flags)
    finally:
        nats_server.stop()
        # The demo's sessions belong to `fleet up`: nothing of it may outlive it.
        for cfg in agent_cfgs:
            Tmux(cfg.socket_name).kill_server_sync()
        print("fleet up: stopped (NATS, controller, host agents, demo sessions)", flush=True)


def _socket(opts: UpOptions, tenant: str) -> str:
    if opts.tmux_socket is None:
        return f"fleet-{tenant}"
    return opts.tmux_socket if len(opts.tenants) == 1 else f"{opts.tmux_socket}-{tenant}"


async def _run_all(
    controller_cfg: ControllerConfig, agent_cfgs: list[AgentConfig], flags: ExitFlags
) -> None:
    controller = Controller(controller_cfg, flags=ExitFlags())
    agents = []
    for cfg in agent_cfgs:
        # The local demo runs its sessions as whoever runs `fleet up`, root included.
        decision = session_identity(os.geteuid(), cfg.tenant, None, allow_root=True)
        if decision.warning:
            log.warning("%s (fleet up's local demo)", decision.warning)
        agents.append(HostAgent(cfg, flags=ExitFlags(), run_as=decision.run_as))
    done = {id(x): anyio.Event() for x in [controller, *agents]}

    async def run(part: Controller | HostAgent) -> None:
        try:
            await part.serve(False)
        finally:
            done[id(part)].set()
            flags.should_exit.set()  # one part ending ends `fleet up`

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_signals, flags)
        tg.start_soon(run, controller)
        for agent in agents:
            tg.start_soon(run, agent)
        await flags.should_exit.wait()
        # Stop order: agents first (their `shutdown` notices reach a live controller), then
        # the controller; the server and the demo's tmux go in run_up's `finally`.
        for agent in agents:
            agent.flags.request_exit()
        with anyio.move_on_after(10):
            for agent in agents:
                await done[id(agent)].wait()
        controller.flags.request_exit()
        with anyio.move_on_after(10):
            await done[id(controller)].wait()
        tg.cancel_scope.cancel()
