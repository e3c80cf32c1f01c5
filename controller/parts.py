"""What the controller is made of, and how the parts are wired: each gets in its constructor
the few things it uses (the fleet state, a publish function, the store), none gets the daemon.
controller/daemon.py runs them; controller/hearing.py is what it does with what it hears."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import anyio

from controller.api.access import Access
from controller.api.commands import CommandRouter
from controller.api.reports import external_counters, session_runtime
from controller.api.routes import controller_api
from controller.api.service import ApiService
from controller.api.watch_relay import WatchRelay
from controller.attention.feed import FeedRelay
from controller.attention.live import LiveFleet
from controller.config import ControllerConfig
from controller.connections import Connections
from controller.events.ingest import Ingest
from controller.events.store.core import EventStore
from controller.events.streams import durable_name
from controller.events.synthesis.runner import SynthesisRunner
from controller.fleet.keepalive import Keepalives
from controller.fleet.latest import Latest
from controller.fleet.persister import Persister
from controller.fleet.rejects import Rejects
from controller.fleet.state import FleetState
from controller.fleet.statedb import StateDB
from controller.fleet.translog import HostChangeLog
from controller.hearing import Hearing
from controller.hearing import log as hearing_log
from controller.reactions.runner import Reactions
from controller.replicas.election import Election
from controller.reports.inbox import for_config
from controller.reports.metrics import FleetMetrics


@dataclass(frozen=True)
class Parts:
    conns: Connections  # the API's connection and one per tenant account
    state: FleetState
    heartbeats: Latest  # parked, newest per host, until the hearing takes them
    hearing: Hearing  # heartbeats, lifecycle notices, stored events, the liveness tick
    changes: HostChangeLog
    db: StateDB  # fleet.db
    persister: Persister
    store: EventStore  # events.db
    ingest: Ingest
    ingest_lock: anyio.Lock  # a store rebuild pauses ingest
    election: Election | None  # None: the only controller of its fleet
    synthesis: SynthesisRunner
    metrics: FleetMetrics
    live: LiveFleet
    reactions: Reactions
    commands: CommandRouter
    api: ApiService


# Long on purpose: one flat list of constructors is the wiring diagram; cut into pieces it
# would be harder to follow, not easier.
def assemble(config: ControllerConfig) -> Parts:
    c = config
    conns = Connections(c)
    state = FleetState(grace_s=c.restart_grace_s)
    heartbeats = Latest()
    changes = HostChangeLog(hearing_log)  # host changes are logged as the daemon's own
    db = StateDB(c.data_path / "fleet.db")
    persister = Persister(db, c.persist_interval_s)
    store = EventStore(c.data_path / "events.db")
    metrics = FleetMetrics(
        runtime_of=partial(session_runtime, state),
        external=partial(external_counters, state, store),
    )
    # One of several replicas: an election decides who runs the once-only work.
    election = (
        Election(c.replica, c.leader_ttl_s, c.streams.replicas, state.counters)
        if c.replica
        else None
    )
    rejects = Rejects(state.counters, conns.publish_event)
    synthesis = SynthesisRunner(store, c.synthesis, conns.publish_event)
    relay = WatchRelay(conns.tenant, conns.api)
    # Real-time states, the attention queue and the live feed (docs/protocol.md).
    live = LiveFleet(state, c.attention, conns.publish_event, FeedRelay(conns.api))
    access = Access.for_config(c)  # who asks the API: controller/api/access.py
    commands = CommandRouter(
        state, conns.tenant, relay, metrics.observe_round_trip, access.tenants_of
    )
    reactions = Reactions(c.reactions_path, state, conns.publish_event, commands.handle)
    if election is not None:
        reactions.leading = election.leading
    inbox = for_config(  # the weekly digest as an issue comment: controller/reports/inbox.py
        c.evidence_inbox, store, db, c.tenants, conns.publish_event, state.counters,
        election.leading if election is not None else None,
    )  # fmt: skip
    reactions.inbox = inbox.on_report_event if inbox is not None else None
    hearing = Hearing(
        state=state,
        parked=heartbeats,
        keepalives=Keepalives(state, rejects, conns.publish_core),
        rejects=rejects,
        metrics=metrics,
        persister=persister,
        changes=changes,
        live=live,
        synthesis=synthesis,
        reactions=reactions,
        relay=relay,
        tick_s=c.liveness_tick_s,
    )
    ingest_lock = anyio.Lock()
    ingest = Ingest(
        store,
        list(c.tenants),
        c.streams,
        hearing.on_stored,
        state.counters,
        durable_name(c.replica),
    )
    api = controller_api(
        c,
        state=state,
        heartbeats=heartbeats,
        store=store,
        db=db,
        metrics=metrics,
        commands=commands,
        conns=conns,
        ingest_lock=ingest_lock,
        live=live,
        access=access,
        election=election,
        inbox=inbox,
    )
    return Parts(
        conns=conns,
        state=state,
        heartbeats=heartbeats,
        hearing=hearing,
        changes=changes,
        db=db,
        persister=persister,
        store=store,
        ingest=ingest,
        ingest_lock=ingest_lock,
        election=election,
        synthesis=synthesis,
        metrics=metrics,
        live=live,
        reactions=reactions,
        commands=commands,
        api=api,
    )
