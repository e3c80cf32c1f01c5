"""The load generator: many simulated host agents per process, several processes.

Each process owns a slice of host indexes and speaks the real protocol on one NATS
connection: a `startup` Lifecycle per host, then a Heartbeat per host every interval ±20%
(`subjects.heartbeat`), and on request events through JetStream with `Nats-Msg-Id` =
`subjects.msg_id(host, boot, seq)`. The parent steers the processes over pipes: kill some
hosts (stop publishing, report their last heartbeat), flood, publish events, stop.
"""

from __future__ import annotations

import asyncio
import heapq
import multiprocessing as mp
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import msgspec
import nats

from bench.common import cpu_seconds
from bench.fake import Words, event, host_name, sessions_for, tenant_of
from protocol import encode, subjects
from protocol.heartbeat import Heartbeat, Keepalive, SessionSnapshot, SessionState, snapshot_digest
from protocol.lifecycle import Lifecycle, LifecycleKind

AGENT_VERSION = "bench"


@dataclass(frozen=True)
class GenSpec:
    url: str
    tenants: list[str]
    first: int
    count: int
    interval_s: float
    sessions: int = 10
    jitter: float = 0.2
    seed: int = 0
    full_every: int = 1  # 12: the agent's keepalives (issue 18); 1: every heartbeat full


# Stand-ins that cannot occur in a real heartbeat, encoded once per host and replaced per beat.
_SEQ, _SENT, _OUTPUT = -7_777_777_777, 1.2345678901234567e-300, 9.876543210987654e-300
_MARKS = re.compile(b"|".join(re.escape(msgspec.json.encode(v)) for v in (_SEQ, _SENT, _OUTPUT)))


@dataclass
class SimHost:
    tenant: str
    host: str
    boot: str
    sessions: list[SessionSnapshot]
    seq: int = 0
    evt_seq: int = 0
    alive: bool = True
    last_sent: float = 0.0
    _subject: str = ""
    _template: list[bytes] = field(default_factory=list)  # text, mark, text, mark, ..., text
    _keepalive: list[bytes] = field(default_factory=list)  # the same for the keepalive
    _interval: float = 0.0
    _since_full: int = 0

    def heartbeat(self, interval_s: float, full_every: int = 1) -> tuple[str, bytes]:
        """The next heartbeat, as `encode(Heartbeat(...))` would give it: the host's heartbeat
        is encoded once with stand-ins for seq and times, which each beat replaces. Encoding
        10 sessions afresh cost the generators 68 µs of CPU per heartbeat, as much as the raw
        subscriber spends decoding one, taken from the system under test on 2 cores.

        With ``full_every`` > 1 the host speaks as the agent does since issue 18: its
        sessions never change (the digest leaves output times out), so a full snapshot
        first and then every ``full_every``-th beat (counted from a random point), a
        keepalive naming its digest otherwise."""
        if not self._template or interval_s != self._interval:
            self._build(interval_s)
            self._since_full = -1  # a new template: full first
        self.seq += 1
        now = time.time()
        self.last_sent = now
        seq, stamp = msgspec.json.encode(self.seq), msgspec.json.encode(now)
        if full_every > 1 and 0 <= self._since_full and self._since_full + 1 < full_every:
            self._since_full += 1
            parts = self._keepalive
        else:
            # After the first, count from a random point, as the agent does after a forced
            # full (agent/heartbeat.py): the fleet's periodic fulls do not come in step.
            self._since_full = random.randrange(full_every) if self._since_full < 0 else 0
            parts = self._template
        out = [parts[0]]
        for k in range(1, len(parts), 2):
            out.append(seq if parts[k] == _SEQ_BYTES else stamp)
            out.append(parts[k + 1])
        return self._subject, b"".join(out)

    def _build(self, interval_s: float) -> None:
        # Working sessions keep printing: their last output is the beat's time (never stale).
        snaps = [
            msgspec.structs.replace(s, last_output_at=_OUTPUT)
            if s.state is SessionState.WORKING
            else s
            for s in self.sessions
        ]
        digest = snapshot_digest(snaps)
        hb = Heartbeat(
            tenant=self.tenant,
            host=self.host,
            boot_id=self.boot,
            seq=_SEQ,
            sent_at=_SENT,
            interval_s=interval_s,
            agent_version=AGENT_VERSION,
            sessions=snaps,
            digest=digest,
        )
        ka = Keepalive(
            tenant=self.tenant,
            host=self.host,
            boot_id=self.boot,
            seq=_SEQ,
            sent_at=_SENT,
            interval_s=interval_s,
            digest=digest,
        )
        self._template, self._keepalive = _cut(encode(hb)), _cut(encode(ka))
        self._subject = subjects.heartbeat(self.tenant, self.host)
        self._interval = interval_s


_SEQ_BYTES = msgspec.json.encode(_SEQ)


def _cut(data: bytes) -> list[bytes]:
    """An encoded message with stand-ins, cut into text, mark, text, mark, ..., text."""
    parts: list[bytes] = []
    at = 0
    for mark in _MARKS.finditer(data):
        parts += [data[at : mark.start()], mark.group()]
        at = mark.end()
    return [*parts, data[at:]]


# A generator wakes at most this often and sends every beat due by then. Waking for each of
# its ~3,300 beats a second cost CPU that a real fleet spends on its own machines; here it
# was taken from the controller and nats-server. Each beat is stamped when it is sent, so
# the lag measured does not include the wait.
SEND_QUANTUM_S = 0.002


@dataclass
class Generator:
    spec: GenSpec
    conn: Connection
    hosts: list[SimHost] = field(default_factory=list)
    sent: int = 0
    stopping: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    prepared: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    async def run(self) -> None:
        rng = random.Random(self.spec.seed)
        nc = await nats.connect(self.spec.url, name="bench-loadgen", max_reconnect_attempts=-1)
        for i in range(self.spec.first, self.spec.first + self.spec.count):
            self.hosts.append(
                SimHost(
                    tenant=tenant_of(i, self.spec.tenants),
                    host=host_name(i),
                    boot=uuid.uuid4().hex[:12],
                    sessions=sessions_for(i, self.spec.sessions),
                )
            )
        for h in self.hosts:
            lc = Lifecycle(
                tenant=h.tenant,
                host=h.host,
                boot_id=h.boot,
                event=LifecycleKind.STARTUP,
                sent_at=time.time(),
                agent_version=AGENT_VERSION,
                interval_s=self.spec.interval_s,
            )
            await nc.publish(subjects.lifecycle(h.tenant, h.host), encode(lc))
        await nc.flush()
        interval = self.spec.interval_s
        start = time.monotonic()
        # First heartbeats spread over one interval, as real agents starting at random times.
        due = [(start + rng.uniform(0, interval), i) for i in range(len(self.hosts))]
        heapq.heapify(due)
        self.conn.send(("ready", len(self.hosts)))
        for _ in range(100_000_000):  # bounded; ends on "stop" from the parent
            now = time.monotonic()
            burst = 0
            while due and due[0][0] <= now and burst < 2000:
                _, i = heapq.heappop(due)
                host = self.hosts[i]
                if host.alive:
                    await nc.publish(*host.heartbeat(interval, self.spec.full_every))
                    self.sent += 1
                    # The next one an interval ±jitter after this one, as the agent waits
                    # after each beat: a generator running late sends late, never the missed
                    # beats back to back (that offered up to 1.9x the fleet's rate).
                    step = interval * rng.uniform(1 - self.spec.jitter, 1 + self.spec.jitter)
                    heapq.heappush(due, (now + step, i))
                burst += 1
            while self.conn.poll():
                await self.command(nc, *self.conn.recv())
            if self.stopping:
                break
            wait = (due[0][0] - time.monotonic()) if due else 0.05
            await asyncio.sleep(min(0.05, max(SEND_QUANTUM_S, wait)))
        await nc.flush()
        await nc.close()

    async def command(self, nc: Any, verb: str, *args: Any) -> None:
        if verb == "stop":
            self.stopping = True
            self.conn.send(("stopped", self.sent))
        elif verb == "stats":
            self.conn.send(("stats", self.sent))
        elif verb == "kill":
            # Stop publishing for these hosts, as if their agent died; report the last beat.
            wanted = set(args[0])
            last = {}
            for h in self.hosts:
                if h.host in wanted:
                    h.alive = False
                    last[(h.tenant, h.host)] = h.last_sent
            self.conn.send(("killed", last))
        elif verb == "flood":
            self._background(nc, "flooded", self.flood(nc, args[0]))
        elif verb == "prepare":
            self.prepare(args[0], args[1])
            self.conn.send(("prepared", len(self.prepared)))
        elif verb == "events":
            self._background(nc, "published", self.events(nc))

    def _background(self, nc: Any, reply: str, work: Any) -> None:
        """Long work runs beside the heartbeat schedule, as in a real agent."""

        async def run() -> None:
            self.conn.send((reply, await work))

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def flood(self, nc: Any, count: int) -> int:
        """``count`` extra heartbeats, encoded first and then published back to back, so the
        burst arrives faster than any consumer can decode it."""
        live = [h for h in self.hosts if h.alive]
        burst = [live[k % len(live)].heartbeat(self.spec.interval_s, 1) for k in range(count)]
        for k, (subject, data) in enumerate(burst):
            await nc.publish(subject, data)
            if k % 500 == 499:
                await asyncio.sleep(0)
        await nc.flush()
        self.sent += len(burst)
        return len(burst)

    def prepare(self, total: int, session_count: int) -> None:
        """Build and encode ``total`` events before the clock starts. Made on the fly they
        cost the generators 22 µs each, a third of their CPU per event, on the 2 cores the
        controller is measured on; a remote agent's encoding costs the controller nothing."""
        words = Words(self.spec.seed)
        self.prepared = []
        for k in range(total):
            h = self.hosts[k % len(self.hosts)]
            h.evt_seq += 1
            ev = event(
                words, h.tenant, h.host, h.boot, h.evt_seq, f"s{k % session_count:02d}", time.time()
            )
            subject = subjects.event(h.tenant, h.host, ev.session, ev.event_type)
            headers = {"Nats-Msg-Id": subjects.msg_id(h.host, h.boot, h.evt_seq)}
            self.prepared.append((subject, encode(ev), headers))

    async def events(self, nc: Any) -> dict[str, Any]:
        """Publish the prepared events through JetStream with acks, 1,000 in flight at a time;
        retry what is not acked, with the same Nats-Msg-Id (as the agent's outbox does)."""
        js = nc.jetstream(publish_async_max_pending=2000)
        acked = failed_once = 0
        chunk = 1000
        prepared, self.prepared = self.prepared, []
        for base in range(0, len(prepared), chunk):
            batch = prepared[base : base + chunk]
            for attempt in range(5):
                futures = [await js.publish_async(s, d, headers=hd) for s, d, hd in batch]
                results = await asyncio.gather(*futures, return_exceptions=True)
                retry = [b for b, r in zip(batch, results, strict=True) if isinstance(r, Exception)]
                acked += len(batch) - len(retry)
                if not retry:
                    break
                failed_once += len(retry) if attempt == 0 else 0
                batch = retry
                await asyncio.sleep(0.2)
        return {"acked": acked, "retried": failed_once, "boots": [h.boot for h in self.hosts]}


def _main(spec: GenSpec, conn: Connection) -> None:
    asyncio.run(Generator(spec, conn).run())


class Pool:
    """Several generator processes; hosts 0..hosts-1 split evenly among them."""

    def __init__(
        self,
        url: str,
        tenants: list[str],
        hosts: int,
        interval_s: float,
        procs: int,
        sessions: int = 10,
        full_every: int = 1,
    ) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[tuple[mp.process.BaseProcess, Connection]] = []
        per = -(-hosts // procs)
        for p in range(procs):
            first, count = p * per, max(0, min(per, hosts - p * per))
            if count == 0:
                continue
            parent, child = ctx.Pipe()
            spec = GenSpec(
                url, tenants, first, count, interval_s, sessions, seed=p + 1, full_every=full_every
            )
            proc = ctx.Process(target=_main, args=(spec, child), daemon=True)
            proc.start()
            self.procs.append((proc, parent))

    def cpu_seconds(self) -> float:
        """CPU seconds the generator processes have used so far, together."""
        return sum(cpu_seconds(proc.pid or 0) for proc, _ in self.procs)

    def wait_ready(self, timeout: float = 120.0) -> int:
        return sum(self._recv(conn, "ready", timeout) for _, conn in self.procs)

    def _recv(self, conn: Connection, verb: str, timeout: float) -> Any:
        if not conn.poll(timeout):
            raise TimeoutError(f"load generator did not answer {verb!r} within {timeout}s")
        got, value = conn.recv()
        assert got == verb, (got, verb)
        return value

    REPLIES = {
        "stop": "stopped",
        "stats": "stats",
        "kill": "killed",
        "flood": "flooded",
        "prepare": "prepared",
        "events": "published",
    }

    def send(self, verb: str, *args: Any) -> None:
        for _, conn in self.procs:
            conn.send((verb, *args))

    def collect(self, verb: str, timeout: float = 600.0) -> list[Any]:
        return [self._recv(conn, self.REPLIES[verb], timeout) for _, conn in self.procs]

    def ask(self, verb: str, *args: Any, timeout: float = 600.0) -> list[Any]:
        self.send(verb, *args)
        return self.collect(verb, timeout)

    def stop(self) -> int:
        sent = 0
        try:
            sent = sum(self.ask("stop", timeout=30))
        finally:
            for proc, _ in self.procs:
                proc.join(10)
                if proc.is_alive():
                    proc.terminate()  # by the handle we started, never by name
                    proc.join(5)
        return sent

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
