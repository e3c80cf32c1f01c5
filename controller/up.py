"""`fleet up`: everything on one machine — embedded NATS, controller, a local host agent with
a demo roster — and Ctrl-C takes it all down again in order.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from agent.config import AgentConfig, SessionSpec
from agent.daemon import HostAgent
from agent.natsconn import NatsSettings
from agent.signals import ExitFlags, watch_signals
from agent.tmux import Tmux
from controller.client import write_context
from controller.config import ControllerConfig, default_data_dir
from controller.daemon import Controller
from controller.nats_embedded import EmbeddedNats
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
    tenant: str = "demo"
    host: str | None = None
    tmux_socket: str | None = None
    heartbeat_interval_s: float = 5.0
    write_context: bool = True
    context_path: Path | None = None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


async def run_up(opts: UpOptions, flags: ExitFlags | None = None) -> None:
    flags = flags or ExitFlags()
    data = opts.data_dir or default_data_dir()
    port = opts.port if port_free(opts.port) else 0  # 0: a free port, announced below
    nats_server = EmbeddedNats(data / "nats", port=port)
    nats_server.start()
    settings = NatsSettings(servers=[nats_server.url])
    host = opts.host or host_id_from_hostname(socket.gethostname())
    agent_cfg = AgentConfig(
        tenant=opts.tenant,
        host=host,
        nats=settings,
        tmux_socket=opts.tmux_socket or f"fleet-{opts.tenant}",
        state_dir=str(data / f"agent-{opts.tenant}-{host}"),
        heartbeat_interval_s=opts.heartbeat_interval_s,
        sessions=list(DEMO_SESSIONS),
    )
    controller_cfg = ControllerConfig(
        tenants=[opts.tenant], nats=settings, data_dir=str(data / "controller")
    )
    tmux = Tmux(agent_cfg.socket_name)
    try:
        if opts.write_context:
            path = write_context(settings, opts.context_path)
            log.info("CLI context written to %s", path)
        print(
            f"fleet up: NATS {nats_server.url} (data {data}), tenant {opts.tenant}, host {host}, "
            f"tmux -L {agent_cfg.socket_name}\n"
            f"          in another terminal: fleet ps   (Ctrl-C here stops everything)",
            flush=True,
        )
        controller = Controller(controller_cfg, flags=ExitFlags())
        agent = HostAgent(agent_cfg, flags=ExitFlags())
        controller_done, agent_done = anyio.Event(), anyio.Event()

        async def run(serve: Callable[[bool], Awaitable[None]], done: anyio.Event) -> None:
            try:
                await serve(False)
            finally:
                done.set()
                flags.should_exit.set()  # one part ending ends `fleet up`

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_signals, flags)
            tg.start_soon(run, controller.serve, controller_done)
            tg.start_soon(run, agent.serve, agent_done)
            await flags.should_exit.wait()
            # Stop order: the agent first (its `shutdown` notice reaches a live controller),
            # then the controller; the server and the demo's tmux go in `finally`.
            agent.flags.request_exit()
            with anyio.move_on_after(10):
                await agent_done.wait()
            controller.flags.request_exit()
            with anyio.move_on_after(10):
                await controller_done.wait()
            tg.cancel_scope.cancel()
    finally:
        nats_server.stop()
        # The demo's sessions belong to `fleet up`: nothing of it may outlive it.
        tmux.kill_server_sync()
        print("fleet up: stopped (NATS, controller, host agent, demo sessions)", flush=True)
