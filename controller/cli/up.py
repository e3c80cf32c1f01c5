"""`fleet up`: everything on one machine — embedded NATS, the controller, and a local host
agent per tenant — and Ctrl-C takes it all down again in order.

It runs your roster (`--config FILE`, or the agent.toml `fleet init` wrote), adopting the
sessions that run and leaving them running when it stops; without one, a demo roster whose
sessions are its own. One `fleet up` per data dir, a watched broker, and nothing removed in
tmux that it did not create: controller/cli/upguard.py, controller/cli/upbroker.py.
"""

from __future__ import annotations

import logging
import shlex
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio

from agent.daemon import HostAgent
from agent.discovery.tmux import TmuxError
from common.natsconn import NatsSettings
from common.signals import ExitFlags, watch_signals
from controller.cli.client import write_context
from controller.cli.upbroker import BrokerWatch
from controller.cli.upguard import ClaimRecord, DataDirLock, SocketClaim, UpError
from controller.cli.upplan import Plan, UpOptions, plan_fleet
from controller.config import ControllerConfig, default_data_dir
from controller.daemon import Controller
from controller.natsserver.accounts import TenancyStore, local_admin_name
from controller.natsserver.config import cli_inbox, controller_inbox, host_inbox, include_directive
from controller.natsserver.embedded import EmbeddedNats, EmbeddedNatsError, free_port

log = logging.getLogger(__name__)

__all__ = ["UpError", "UpOptions", "port_free", "run_up"]


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
    operator: str | None = None  # who the CLI is (secure fleets: the local admin)


def secure_wiring(store: TenancyStore, hosts: dict[str, str], url: str) -> Wiring:
    """Credentials for everything `fleet up` runs (created once, reused on later runs);
    ``hosts`` maps each tenant to its agent's host id."""
    registry = store.ensure_tenants(list(hosts))
    agents = {}
    for tenant, host in hosts.items():
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
            for t in hosts
        },
        agents=agents,
        # The local user is this fleet's admin: an operator key like any other.
        cli=NatsSettings(
            servers=[url],
            nkey_seed=str(store.ensure_admin(local_admin_name())),
            inbox_prefix=cli_inbox(local_admin_name()),
        ),
        operator=local_admin_name(),
    )


def data_dir_of(opts: UpOptions) -> Path:
    data = (opts.data_dir or default_data_dir()).expanduser().absolute()
    try:
        data.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UpError(f"data dir {data} is not a directory") from None
    except OSError as exc:
        raise UpError(f"data dir {data}: {exc.strerror}") from None
    return data


async def run_up(opts: UpOptions, flags: ExitFlags | None = None) -> None:
    """Run the fleet until a signal (or a part ending); UpError says why it could not."""
    flags = flags or ExitFlags()
    plan = plan_fleet(opts)  # every config and option checked before anything starts
    data = data_dir_of(opts)
    lock = DataDirLock(data)
    lock.acquire(shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    try:
        await _up(opts, plan, data, flags)
    finally:
        lock.release()


def _start_nats(opts: UpOptions, data: Path) -> EmbeddedNats:
    server = EmbeddedNats(data / "nats", die_with_parent=True)
    orphan = server.orphan()
    if orphan is not None:
        # We hold the data dir's lock, so no live `fleet up` owns it: its fleet up was killed.
        log.warning("stopping nats-server pid %d left on %s by a fleet up that died", orphan, data)
        try:
            server.stop_orphan(orphan)
        except EmbeddedNatsError as exc:
            raise UpError(str(exc)) from None
    server.port = opts.port if opts.port and port_free(opts.port) else free_port()
    return server


def _wiring(opts: UpOptions, plan: Plan, data: Path, nats_server: EmbeddedNats) -> Wiring:
    """Who connects with what: one plain URL when insecure, else an account per tenant (the
    server's config then includes their users)."""
    if opts.insecure:
        plain = NatsSettings(servers=[nats_server.url])
        return Wiring(
            api=plain, tenant_nats={}, agents=dict.fromkeys(plan.tenants, plain), cli=plain
        )
    store = TenancyStore(data / "controller" / "tenancy")
    wiring = secure_wiring(store, {c.tenant: c.host_id for c in plan.agents}, nats_server.url)
    nats_server.extra_config = include_directive(nats_server.config_path, store.auth_conf_path)
    return wiring


async def _up(opts: UpOptions, plan: Plan, data: Path, flags: ExitFlags) -> None:
    for warning in plan.warnings:
        log.warning("%s", warning)
    nats_server = _start_nats(opts, data)
    url = nats_server.url
    wiring = _wiring(opts, plan, data, nats_server)
    agents = [
        HostAgent(cfg, flags=ExitFlags(), run_as=plan.run_as[cfg.tenant])
        for cfg in plan.wired(wiring.agents, data)
    ]
    controller_cfg = ControllerConfig(
        tenants=list(plan.tenants),
        nats=wiring.api,
        tenant_nats=wiring.tenant_nats,
        data_dir=str(data / "controller"),
    )
    record = ClaimRecord(data / "tmux-claims.json")
    claims = [
        await SocketClaim.take(a.parts.launcher.tmux, record, remove=plan.demo) for a in agents
    ]
    try:
        nats_server.start()  # in the loop's thread: see EmbeddedNats.die_with_parent
    except EmbeddedNatsError as exc:
        raise UpError(str(exc).split("\n")[0]) from None
    broker = BrokerWatch(nats_server)
    try:
        if opts.write_context:
            path = write_context(wiring.cli, opts.context_path, wiring.operator)
            log.info("CLI context written to %s", path)
        mode = "INSECURE (no auth)" if opts.insecure else "one NATS account per tenant"
        print(
            f"fleet up: {plan.what}\n"
            f"          NATS {url} ({mode}, data {data}), tenants {', '.join(plan.tenants)}\n"
            f"          in another terminal: fleet ps   (Ctrl-C here stops it all)",
            flush=True,
        )
        controller = Controller(controller_cfg, flags=ExitFlags())
        await _run_all(
            controller,
            agents,
            flags,
            [partial(broker.run, flags), *(c.keep_recorded for c in claims)],
        )
    finally:
        nats_server.stop()
        removed = []
        for claim in claims:
            try:
                removed += await claim.undo()
            except TmuxError as exc:
                log.error("tmux -L %s: %s", claim.tmux.socket_name, exc)
        left = "demo sessions removed" if plan.demo else "your sessions keep running"
        print(f"fleet up: stopped (NATS, controller, host agents; {left})", flush=True)
        log.info("removed: %s", ", ".join(removed) or "nothing")
    if broker.failed:
        raise UpError(broker.failed)
    if broker.down:
        raise UpError(f"stopped with NATS down: {broker.down}, not restarted yet")


async def _run_all(
    controller: Controller,
    agents: list[HostAgent],
    flags: ExitFlags,
    watchers: list[Callable[[], Coroutine[object, object, None]]],
) -> None:
    done = {id(x): anyio.Event() for x in [controller, *agents]}

    async def run(part: Controller | HostAgent) -> None:
        try:
            await part.serve(False)
        finally:
            done[id(part)].set()
            flags.should_exit.set()  # one part ending ends `fleet up`

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_signals, flags)
        for watcher in watchers:  # the broker's, the tmux record's
            tg.start_soon(watcher)
        tg.start_soon(run, controller)
        for agent in agents:
            tg.start_soon(run, agent)
        await flags.should_exit.wait()
        # Stop order: agents first (their `shutdown` notices reach a live controller), then
        # the controller; the server and the demo's tmux go in _up's `finally`.
        for agent in agents:
            agent.flags.request_exit()
        with anyio.move_on_after(10):
            for agent in agents:
                await done[id(agent)].wait()
        controller.flags.request_exit()
        with anyio.move_on_after(10):
            await done[id(controller)].wait()
        tg.cancel_scope.cancel()
