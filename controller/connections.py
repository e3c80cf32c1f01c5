"""The controller's NATS connections: one for the API, and one per tenant account (the API's
own when a tenant has no account of its own, as under `--insecure`)."""

from __future__ import annotations

import anyio
from nats.aio.client import Client
from nats.js import JetStreamContext

from common import natsconn
from controller.config import ControllerConfig
from controller.events.ingest import replay
from protocol import encode, subjects
from protocol.events import Event


class Connections:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.main: Client | None = None
        self.by_tenant: dict[str, Client] = {}

    def api(self) -> Client | None:
        return self.main

    def tenant(self, tenant: str) -> Client | None:
        return self.by_tenant.get(tenant)

    async def open(self) -> Client:
        main = self.main = await natsconn.connect(self.config.nats, name="fleet-controller")
        for tenant in self.config.tenants:
            own = self.config.tenant_nats.get(tenant)
            self.by_tenant[tenant] = (
                await natsconn.connect(own, name=f"fleet-controller {tenant}") if own else main
            )
        return main

    async def close(self, step_s: float) -> None:
        nc, self.main = self.main, None
        own = [c for c in self.by_tenant.values() if c is not nc]
        self.by_tenant.clear()
        for conn in [*own, nc]:
            if conn is not None:
                with anyio.move_on_after(step_s):
                    await conn.close()

    def jetstreams(self) -> dict[str, JetStreamContext]:
        return {tenant: nc.jetstream() for tenant, nc in self.by_tenant.items()}

    async def publish_event(self, event: Event) -> None:
        """Into the event's tenant stream; its idempotency key is the Nats-Msg-Id, so a
        second publish of the same event is dropped by the stream."""
        nc = self.by_tenant.get(event.tenant)
        if nc is None:
            raise RuntimeError("not connected")
        subject = subjects.event(event.tenant, event.host, event.session, event.event_type)
        headers = {"Nats-Msg-Id": event.idempotency_key or ""}
        await nc.jetstream().publish(subject, encode(event), headers=headers)

    async def publish_core(self, tenant: str, subject: str, data: bytes) -> None:
        """A plain NATS publish on the tenant's connection (a `SnapshotWanted`)."""
        nc = self.by_tenant.get(tenant)
        if nc is None:
            raise RuntimeError("not connected")
        await nc.publish(subject, data)

    async def replay_all(self) -> tuple[list[Event], list[float]]:
        """Every tenant's stream from its start (a store rebuild)."""
        assert self.main is not None
        events: list[Event] = []
        stamps: list[float] = []
        for tenant in self.config.tenants:
            got, at = await replay(self.by_tenant[tenant].jetstream(), tenant)
            events += got
            stamps += at
        return events, stamps
