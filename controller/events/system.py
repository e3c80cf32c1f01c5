"""Events the controller makes itself (validation errors, synthesized events, reports): one
way to make them and one way to hand them to the stream.

They carry seq 0 and a boot_id derived from their idempotency key, so a replay derives the
same row and sequence-gap accounting ignores them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from protocol.events import Event, EventLink, Severity, SourceKind, derived_boot_id

# Publishes an event into its tenant's stream, its idempotency key as the Nats-Msg-Id.
Publish = Callable[[Event], Awaitable[None]]


def system_event(
    tenant: str,
    host: str,
    session: str,
    key: str,
    *,
    ts: float,
    event_type: str,
    summary: str,
    provenance: str,
    payload: dict[str, Any],
    tags: list[str],
    severity: Severity = Severity.INFO,
    attention_candidate: bool = False,
    run_id: str | None = None,
    links: list[EventLink] | None = None,
) -> Event:
    return Event(
        tenant=tenant,
        host=host,
        session=session,
        boot_id=derived_boot_id(key),
        seq=0,
        ts=ts,
        event_type=event_type,
        summary=summary,
        source_kind=SourceKind.SYSTEM,
        tags=tags,
        payload=payload,
        severity=severity,
        provenance=provenance,
        idempotency_key=key,
        attention_candidate=attention_candidate,
        run_id=run_id,
        links=links or [],
    )
