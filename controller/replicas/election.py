"""Leader election among controller replicas, on the JetStream KV the fleet already runs.

One bucket (``BUCKET``) with a TTL: the key ``leader`` names the leader and lives ``ttl_s``
unless renewed. A replica without it tries ``create`` (succeeds only while nobody holds the
key); the leader renews with ``update(..., last=revision)``, a compare-and-set on the
revision it holds, so a renewal after someone else took over fails and it stands down. No
consensus of our own: the KV's stream (replicated like the event streams) decides.

Fencing: `leading()` is asked right before each leader-only action. It is false once the
last renewal is older than the TTL by this replica's own clock (a paused leader, SIGSTOP
or a long GC, whose key has expired meanwhile) and otherwise reads the key again: the
action runs only while the key still holds this replica's revision. Each replica also keeps
``replica.<id>`` fresh in the bucket, so `fleet status` lists who is up.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import anyio
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import (
    BadRequestError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NotFoundError,
)
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

BUCKET = "fleet-controllers"
LEADER = "leader"


class Election:
    def __init__(
        self,
        replica: str,
        ttl_s: float,
        kv_replicas: int = 1,
        counters: dict[str, int] | None = None,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replica = replica
        self.ttl_s = ttl_s
        self.kv_replicas = kv_replicas
        self.counters = counters if counters is not None else {}
        self.mono = mono
        self.kv: KeyValue | None = None
        self.revision: int | None = None  # of the leader key while this replica holds it
        self.renewed_at = -1e18  # monotonic time of the last create/renew that succeeded
        self.leader: str | None = None  # as last read
        self.replicas: list[str] = []  # heard within the TTL, as of the last step
        self.started_at = time.time()

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    async def open(self, js: JetStreamContext) -> None:
        config = KeyValueConfig(bucket=BUCKET, ttl=self.ttl_s, history=1, replicas=self.kv_replicas)
        try:
            self.kv = await js.create_key_value(config)
        except BadRequestError:  # exists with another config (another TTL): use it as it is
            self.kv = await js.key_value(BUCKET)

    async def run(self) -> None:
        """Renew every third of the TTL while leading, campaign every sixth otherwise (so a
        dead leader's key, gone at most a TTL after the kill, is taken soon after)."""
        while True:
            try:
                await self.step()
            except Exception as exc:  # disconnected, the KV leader moving: try again
                log.warning("leader election: %s", exc or type(exc).__name__)
            try:  # apart: a failed listing must not cost the renewal
                await self._list()
            except Exception as exc:
                log.debug("listing replicas: %s", exc or type(exc).__name__)
            await anyio.sleep(self.ttl_s / (3 if self.revision is not None else 6))

    async def step(self) -> None:
        assert self.kv is not None
        me = self.replica.encode()
        await self.kv.put(f"replica.{self.replica}", self._card())
        if self.revision is not None and self.mono() - self.renewed_at < self.ttl_s:
            try:
                self.revision = await self.kv.update(LEADER, me, last=self.revision)
                self.renewed_at = self.mono()
                return
            except KeyWrongLastSequenceError:
                self._stand_down("the leader key moved on")
        elif self.revision is not None:
            self._stand_down("not renewed within the TTL")
        try:
            self.revision = await self.kv.create(LEADER, me)
        except KeyWrongLastSequenceError:
            self.leader = await self._read_leader()
            return
        self.renewed_at, self.leader = self.mono(), self.replica
        self.count("leader_elected")
        log.info("replica %s leads (revision %d)", self.replica, self.revision)

    def _stand_down(self, why: str) -> None:
        log.warning("replica %s stands down: %s", self.replica, why)
        self.revision, self.leader = None, None
        self.count("leader_lost")

    async def resign(self) -> None:
        """On a clean shutdown: give the key up (only if still ours), so another replica
        leads at its next campaign instead of after the TTL."""
        if self.kv is None or self.revision is None:
            return
        try:
            await self.kv.delete(LEADER, last=self.revision)
            log.info("replica %s resigned as leader", self.replica)
        except Exception as exc:  # someone else holds it, or the KV is gone: nothing to give
            log.debug("resign: %s", exc)
        self.revision = None

    async def leading(self) -> bool:
        """The fence: whether this replica may act as leader now."""
        if self.revision is None or self.kv is None:
            return False
        if self.mono() - self.renewed_at >= self.ttl_s:
            self._stand_down("paused past the TTL")
            return False
        try:
            entry = await self.kv.get(LEADER)
        except NotFoundError:
            return False
        except Exception as exc:  # cannot tell: do not act
            log.warning("leader check failed: %s", exc)
            return False
        return entry.revision == self.revision and entry.value == self.replica.encode()

    async def _read_leader(self) -> str | None:
        assert self.kv is not None
        try:
            entry = await self.kv.get(LEADER)
        except NotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    def _card(self) -> bytes:
        return json.dumps({"replica": self.replica, "started_at": self.started_at}).encode()

    async def _list(self) -> None:
        """Refresh the replicas heard within the TTL. Once per step, not per `fleet status`:
        listing keys makes a consumer on the bucket (a status loop made them faster than
        the server let them go: "maximum consumers limit reached")."""
        assert self.kv is not None
        try:
            keys = await self.kv.keys()
        except (NotFoundError, NoKeysError):  # no keys at all
            keys = []
        self.replicas = sorted(k.removeprefix("replica.") for k in keys if k.startswith("replica."))

    async def roster(self) -> tuple[list[str], str | None]:
        """The replicas heard within the TTL (as of the last step) and the leader now."""
        if self.kv is None:
            return [], None
        return self.replicas, await self._read_leader()
