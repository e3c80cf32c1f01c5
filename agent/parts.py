"""What the host agent is made of, and how the parts are wired: each gets the few things it
uses in its constructor (an `Origin` for the events it makes, an `Emitter`, the connection
getter, the one `Roster`), none gets the daemon. agent/daemon.py runs them."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

from agent.config import AgentConfig
from agent.control.leases import TakeoverLeases, WatchLeases
from agent.control.operations import Operations
from agent.control.server import CommandServer
from agent.control.spawn import Spawner
from agent.control.steering import Steering
from agent.control.watch import stream_watches
from agent.discovery.bootunit import BootUnits
from agent.discovery.refresh import Discovery
from agent.discovery.roster import Roster
from agent.discovery.runtimes import RuntimeSpec
from agent.discovery.sessions import SessionTable
from agent.discovery.supervisor import Launcher, Supervisor
from agent.discovery.tmux import Tmux
from agent.events.capture import CaptureSet
from agent.events.emitter import Connection, Emitter
from agent.events.flow import EventFlow
from agent.events.origin import Origin
from agent.events.outbox import Outbox
from agent.events.publisher import Wakeup, publish_forever
from agent.events.runs import RunTracker
from agent.heartbeat import HeartbeatClock, Heartbeats
from agent.hooks.receiver import HookReceiver, deliver_signals, preparer
from agent.uid import Identity, as_user_prefix
from common.version import VERSION

Loop = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Parts:
    origin: Origin  # this tenant, host and boot
    runtimes: dict[str, RuntimeSpec]  # empty until the daemon's startup loads them
    outbox: Outbox
    capture: CaptureSet
    roster: Roster
    launcher: Launcher
    discovery: Discovery  # poll loop
    heartbeats: Heartbeats  # heartbeat loop, lifecycle notices
    commands: CommandServer  # the command subscription
    publish: Loop  # outbox -> JetStream
    stream_watches: Loop  # watched screens -> fleet.<t>.out.<host>.<session>


# Long on purpose: one flat list of constructors is the wiring diagram; cut into pieces it
# would be harder to follow, not easier.
def assemble(config: AgentConfig, run_as: Identity | None, connection: Connection) -> Parts:
    c, host = config, config.host_id
    clock = HeartbeatClock(c.tenant, host, c.heartbeat_interval_s, VERSION)
    origin = Origin(c.tenant, host, clock.boot_id)
    # Filled at startup, not here: reading the specs belongs to the daemon's start, where a
    # bad one ends it as before. Every part holds this same dict.
    runtimes: dict[str, RuntimeSpec] = {}
    tmux = Tmux(c.socket_name, c.state_path / "tmux.conf", prefix=as_user_prefix(run_as))
    outbox = Outbox(c.state_path / "outbox.db", clock.boot_id, c.outbox_max_events)
    capture = CaptureSet(c.state_path / "logs")
    wakeup, beat_now, runs = Wakeup(), Wakeup(), RunTracker()
    emitter = Emitter(outbox, wakeup)
    takeovers, watches = TakeoverLeases(origin, outbox, wakeup), WatchLeases()
    steering = Steering(tmux)
    roster = Roster(c.sessions)
    # The runtimes' own word (hooks, notify, pi extension): docs/runtimes.md.
    hooks = HookReceiver(c.state_path)
    table = SessionTable(roster, runtimes, signals=hooks)
    launcher = Launcher(
        tmux,
        c.tenant,
        host,
        c.window_width,
        c.window_height,
        prepare=preparer(c.state_path, run_as, hooks),
    )
    supervisor = Supervisor(
        tmux, roster, launcher.launch, table.note_restart, backoff_s=c.restart_backoff_s
    )
    flow = EventFlow(
        origin=origin,
        outbox=outbox,
        wakeup=wakeup,
        capture=capture,
        runs=runs,
        takeovers=takeovers,
        tmux=tmux,
        roster=roster,
        runtimes=runtimes,
        capture_unmanaged=c.capture_unmanaged,
        acknowledge=steering.acknowledge,
    )
    discovery = Discovery(
        tmux=tmux,
        roster=roster,
        table=table,
        supervisor=supervisor,
        flow=flow,
        boot_units=BootUnits(),
        poll_interval_s=c.poll_interval_s,
        drain_signals=hooks.drain,
        on_signals=partial(
            deliver_signals,
            origin=origin,
            runs=runs,
            emitter=emitter,
            acknowledge=steering.acknowledge,
        ),
    )
    ops = Operations(
        tmux=tmux,
        steering=steering,
        roster=roster,
        runtimes=runtimes,
        snapshots=lambda: discovery.snapshots,
        origin=origin,
        emitter=emitter,
        runs=runs,
        signals=hooks.account,
    )
    spawner = Spawner(
        roster=roster,
        runtimes=runtimes,
        supervisor=supervisor,
        launch=launcher.launch,
        tmux=tmux,
        discovery_lock=discovery.lock,
        beat_now=beat_now,  # a command changed the sessions: tell the controller now
    )
    heartbeats = Heartbeats(clock, connection, discovery.current, beat_now)
    commands = CommandServer(
        connection=connection,
        origin=origin,
        emitter=emitter,
        ops=ops,
        spawner=spawner,
        steering=steering,
        takeovers=takeovers,
        watches=watches,
        on_snapshot_wanted=heartbeats.snapshot_wanted,
    )
    return Parts(
        origin=origin,
        runtimes=runtimes,
        outbox=outbox,
        capture=capture,
        roster=roster,
        launcher=launcher,
        discovery=discovery,
        heartbeats=heartbeats,
        commands=commands,
        publish=partial(publish_forever, outbox, connection, wakeup),
        stream_watches=partial(stream_watches, watches, tmux, connection, origin),
    )
