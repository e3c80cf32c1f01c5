"""The controller's API assembled: each verb of protocol.api.VERBS served by its handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from controller.api.access import Access
from controller.api.attention import AttentionApi
from controller.api.commands import CommandRouter
from controller.api.events import EventsApi
from controller.api.fleet import FleetApi
from controller.api.reports import ReportApi
from controller.api.service import ApiService
from controller.attention.live import LiveFleet
from controller.config import ControllerConfig
from controller.connections import Connections
from controller.events.store.core import EventStore
from controller.events.synthesis.runner import relink
from controller.fleet.latest import Latest
from controller.fleet.state import FleetState
from controller.fleet.statedb import StateDB
from controller.replicas.election import Election
from controller.reports.inbox import EvidenceInbox
from controller.reports.metrics import FleetMetrics
from protocol import api
from protocol.api import ApiVerb


def controller_api(
    config: ControllerConfig,
    *,
    state: FleetState,
    heartbeats: Latest,
    store: EventStore,
    db: StateDB,
    metrics: FleetMetrics,
    commands: CommandRouter,
    conns: Connections,
    ingest_lock: anyio.Lock,
    live: LiveFleet,
    access: Access | None = None,
    election: Election | None = None,
    inbox: EvidenceInbox | None = None,
) -> ApiService:
    fleet = FleetApi(state, heartbeats, store, metrics.recent, config.tenants, config.page_limit)
    fleet.election = election
    events = EventsApi(
        store,
        conns.replay_all,
        ingest_lock,
        lambda evs: relink(store, evs, config.synthesis),
    )
    attention = AttentionApi(live)
    reports = ReportApi(store, db, config.tenants, conns.publish_event, metrics)
    reports.inbox = inbox
    routes: list[tuple[ApiVerb[Any, Any], Callable[[Any], Awaitable[Any]]]] = [
        (api.PS, fleet.ps),
        (api.STATUS, fleet.status),
        (api.CMD, commands.handle),
        (api.EVENTS_SEARCH, events.search),
        (api.EVENTS_TAIL, events.tail),
        (api.EVENTS_SHOW, events.show),
        (api.EVENTS_LINK, events.link),
        (api.STORE_REBUILD, events.rebuild),
        (api.REPORT_BASELINE, reports.baseline),
        (api.REPORT_WEEKLY, reports.weekly),
        (api.METRICS, reports.metrics),
        (api.ATTENTION_LIST, attention.list),
        (api.ATTENTION_ACT, attention.act),
        (api.FEED, attention.feed),
    ]
    service = ApiService(config.api_queue, access=access)
    fleet.api_counters = service.counters
    for verb, handler in routes:
        service.route(verb, handler)
    return service
