"""The controller's fleet verbs: ps (one page of the listing) and status (how it is doing)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence

import anyio

from common.version import VERSION
from controller.api.views import ps_page
from controller.events.store.core import EventStore
from controller.fleet.latest import Latest
from controller.fleet.state import FleetState
from controller.replicas.election import Election
from controller.reports.latencies import RecentLatencies
from protocol.api import PsReply, PsRequest, StatusReply, StatusRequest


class FleetApi:
    def __init__(
        self,
        state: FleetState,
        heartbeats: Latest,
        store: EventStore,
        latencies: RecentLatencies,
        tenants: Sequence[str],
        page_limit: int,
    ) -> None:
        self.state = state
        self.heartbeats = heartbeats
        self.store = store
        self.latencies = latencies
        self.tenants = list(tenants)
        self.page_limit = page_limit
        self.started_at = time.time()
        # The API service's own counters (busy answers, handler failures), set once it exists.
        self.api_counters: Callable[[], dict[str, int]] = dict
        self.election: Election | None = None  # set when this controller is one of replicas

    async def ps(self, req: PsRequest) -> PsReply:
        return ps_page(self.state, req, self.page_limit)

    async def status(self, _req: StatusRequest) -> StatusReply:
        replicas: list[str] = []
        leader = None
        if self.election is not None:
            with anyio.move_on_after(1.0):  # the KV unreachable must not cost the answer
                replicas, leader = await self.election.roster()
        return StatusReply(
            replica=self.election.replica if self.election else "",
            replicas=replicas,
            leader=leader,
            controller_version=VERSION,
            started_at=self.started_at,
            tenants=self.tenants,
            hosts=len(self.state.hosts),
            counters={
                **self.state.counters,
                **self.api_counters(),
                "heartbeats_superseded": self.heartbeats.superseded,
                "heartbeats_waiting": len(self.heartbeats),
                # A full collection stops the loop (0.2 s over 50,000 hosts' state, in-process).
                "gc_full_collections": gc.get_stats()[2]["collections"],
                "sequence_gaps": self.store.total_gaps(),
            },
            latencies_ms=self.latencies.percentiles_ms(),
        )
