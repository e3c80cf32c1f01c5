"""Keepalives on the controller (issue 18): a keepalive whose digest names the snapshot this
controller holds says the host is alive with the sessions it already has (FleetState
applies it as liveness only, without a heartbeat's per-session work); one that names
another (a controller restarted from an empty state dir, a full heartbeat lost) is counted
and answered with a `SnapshotWanted` on the host's command subject, so the next full
heartbeat arrives within a second, not within FULL_EVERY intervals.

For liveness a keepalive is a heartbeat (DESIGN.md): a known boot's mismatched keepalive
still marks the host heard. A host the controller does not know yet waits for its full
heartbeat (no sessions to list until then).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from controller.fleet.intake import intake
from controller.fleet.latest import KEEPALIVE_PREFIX
from controller.fleet.rejects import Rejects
from controller.fleet.state import FleetState, HostKey
from protocol import encode, subjects
from protocol.heartbeat import Heartbeat, HostBeat, Keepalive, SnapshotWanted

log = logging.getLogger(__name__)

MAX_ASKED = 200_000  # bounds the memory a tenant inventing host names can take
Publish = Callable[[str, str, bytes], Awaitable[None]]  # tenant, subject, data


def is_keepalive(data: bytes) -> bool:
    """Cheap: msgspec writes the tag first. Only for choosing what to keep while parked;
    the decode decides what it is."""
    return data.startswith(KEEPALIVE_PREFIX)


class Keepalives:
    def __init__(
        self,
        state: FleetState,
        rejects: Rejects,
        publish: Publish,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.rejects = rejects
        self.publish = publish
        self.mono = mono
        self.digests: dict[HostKey, str] = {}  # of the last full snapshot taken per host
        self._asked: dict[HostKey, float] = {}  # when a full snapshot was last asked for

    def count(self, name: str) -> None:
        self.state.count(name)

    async def intake(self, msg: Msg) -> Heartbeat | Keepalive | None:
        """A full heartbeat, a keepalive of a boot this controller knows (for
        `FleetState.on_keepalive`: its sessions are the ones held), or None: refused (counted
        by ``rejects``), or a keepalive of an unknown boot (a full snapshot was asked for)."""
        beat: HostBeat | None = await intake(msg, subjects.Kind.HB, HostBeat, self.rejects)
        if beat is None:
            if is_keepalive(msg.data):
                self.count("keepalives_malformed")
            return None
        if isinstance(beat, Heartbeat):
            self._took_full(beat)
            return beat
        return await self._keepalive(beat)

    def _took_full(self, hb: Heartbeat) -> None:
        key = (hb.tenant, hb.host)
        entry = self.state.hosts.get(key)
        if hb.digest is None:
            self.digests.pop(key, None)
        elif entry is None or entry.boot_id != hb.boot_id or hb.seq > entry.seq:
            self.digests[key] = hb.digest  # not for a stale one: on_heartbeat drops it
        self._asked.pop(key, None)

    async def _keepalive(self, ka: Keepalive) -> Keepalive | None:
        key = (ka.tenant, ka.host)
        self.count("keepalives")
        entry = self.state.hosts.get(key)
        known = entry is not None and entry.boot_id == ka.boot_id
        if not known or self.digests.get(key) != ka.digest:
            self.count("keepalives_mismatched")
            await self._ask(ka, "unknown boot" if not known else "digest mismatch")
        # A known boot's mismatched keepalive still says the host is alive.
        return ka if known else None

    async def _ask(self, ka: Keepalive, reason: str) -> None:
        """Ask for a full heartbeat, at most once per interval per host: the answer takes a
        round trip, and the keepalives meanwhile would each ask again."""
        key, now = (ka.tenant, ka.host), self.mono()
        if now - self._asked.get(key, -1e18) < ka.interval_s:
            return
        if len(self._asked) >= MAX_ASKED:  # hosts that never answered (or never existed)
            self._asked.clear()
        self._asked[key] = now
        body = encode(SnapshotWanted(tenant=ka.tenant, host=ka.host, reason=reason))
        try:
            await self.publish(ka.tenant, subjects.command(ka.tenant, ka.host), body)
            self.count("snapshots_asked")
        except Exception as exc:  # disconnected: the next keepalive asks again
            self._asked.pop(key, None)
            log.debug("cannot ask %s/%s for a snapshot: %s", ka.tenant, ka.host, exc)
