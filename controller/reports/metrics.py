"""The controller's metrics: a small registry, the Prometheus text format written by hand, and
a `GET /metrics` endpoint started only when `metrics_addr` is set.

No prometheus_client at run time: the format is a few lines of text and the library would
be a dependency for every install. Tests parse our output with the library's own parser.

Threads: observations come from the event loop, rendering may run in a worker thread, so
every read and write of a series goes through the registry's lock.
"""

# Long on purpose: registry, hand-written Prometheus format and endpoint: one lock, one format.
from __future__ import annotations

import bisect
import itertools
import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from controller.fleet.state import Transition
from controller.reports.latencies import RecentLatencies
from protocol.api import HostState
from protocol.events import KNOWN_EVENT_TYPES, Event

log = logging.getLogger(__name__)

Labels = tuple[str, ...]
RuntimeOf = Callable[[str, str, str], str]

# A runaway label (an agent inventing reasons) must not grow memory without bound.
MAX_SERIES: Final = 1000
OVERFLOW: Final = "_other"
LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LAG_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DETECTION_BUCKETS: Final = (1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0)
RUN_OUTCOMES: Final = {
    "run.completed": "completed",
    "run.cancelled": "cancelled",
    "run.error": "errored",
}
SYNTH_TAG: Final = "synthesized"


# -- what an event means (shared with controller.reports.evidence) ----------------------
def run_outcome(event_type: str) -> str | None:
    return RUN_OUTCOMES.get(event_type)


def synth_rule(tags: Sequence[str], key: str | None) -> str | None:
    """The rule that synthesized an event (key ``synth:<rule>:...``), None if it is real."""
    if SYNTH_TAG not in tags:
        return None
    parts = (key or "").split(":")
    return parts[1] if len(parts) > 2 and parts[0] == "synth" else "unknown"


def text(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    return value if isinstance(value, str) and value else "unknown"


def number(payload: dict[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


# -- primitives ------------------------------------------------------------------------------
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Labels, values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Counter:
    def __init__(self, name: str, help: str, labels: Labels = ()) -> None:
        self.name, self.help, self.labels = name, help, labels
        self.values: dict[Labels, float] = {}

    def _key(self, values: Labels) -> Labels:
        if values in self.values or len(self.values) < MAX_SERIES:
            return values
        return tuple(OVERFLOW for _ in values)

    def inc(self, *values: str, by: float = 1.0) -> None:
        key = self._key(values)
        self.values[key] = self.values.get(key, 0.0) + by

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for values, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.labels, values)} {_num(value)}")
        return lines

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {"labels": dict(zip(self.labels, k, strict=True)), "value": v}
            for k, v in sorted(self.values.items())
        ]


class Histogram(Counter):
    def __init__(self, name: str, help: str, buckets: Sequence[float], labels: Labels = ()):
        super().__init__(name, help, labels)
        self.buckets = (*sorted(buckets), math.inf)
        self.series: dict[Labels, list[float]] = {}  # bucket counts..., sum, count

    def observe(self, value: float, *values: str) -> None:
        key = (
            values
            if values in self.series or len(self.series) < MAX_SERIES
            else (tuple(OVERFLOW for _ in values))
        )
        row = self.series.setdefault(key, [0.0] * (len(self.buckets) + 2))
        # One bucket per observation (the first bound >= value); made cumulative on read.
        row[bisect.bisect_left(self.buckets, value)] += 1
        row[-2] += value
        row[-1] += 1

    def _cumulative(self, row: list[float]) -> list[float]:
        return list(itertools.accumulate(row[: len(self.buckets)]))

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for values, row in sorted(self.series.items()):
            for bound, count in zip(self.buckets, self._cumulative(row), strict=True):
                le = _labels(self.labels, values, f'le="{_num(bound)}"')
                lines.append(f"{self.name}_bucket{le} {_num(count)}")
            tags = _labels(self.labels, values)
            lines.append(f"{self.name}_sum{tags} {_num(row[-2])}")
            lines.append(f"{self.name}_count{tags} {_num(row[-1])}")
        return lines

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "labels": dict(zip(self.labels, k, strict=True)),
                "buckets": {
                    _num(b): c for b, c in zip(self.buckets, self._cumulative(row), strict=True)
                },
                "sum": row[-2],
                "count": row[-1],
            }
            for k, row in sorted(self.series.items())
        ]


class FleetMetrics:
    """Every metric the controller exposes, and the one place heartbeat lag and command round
    trip are recorded (``recent`` feeds `fleet status`). ``runtime_of(tenant, host, session)``
    names a session's runtime; ``external`` reads counters kept elsewhere (fleet state's
    heartbeat/malformed counts, the store's gap total) at render time."""

    def __init__(
        self,
        runtime_of: RuntimeOf | None = None,
        external: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.runtime_of = runtime_of or (lambda _t, _h, _s: "unknown")
        self.external = external or dict
        self.lock = threading.Lock()
        self.recent = RecentLatencies()
        self.runs = Counter(
            "fleet_runs_total", "run ends by outcome", ("tenant", "runtime", "outcome")
        )
        self.events = Counter("fleet_events_total", "events stored", ("event_type", "source_kind"))
        self.validation = Counter(
            "fleet_validation_errors_total", "validation_error events", ("reason",)
        )
        self.synthesized = Counter(
            "fleet_synthesized_events_total", "events synthesized", ("rule",)
        )
        self.commands = Counter("fleet_commands_total", "operator commands", ("verb", "outcome"))
        self.transitions = Counter(
            "fleet_host_transitions_total", "host liveness transitions", ("new_state",)
        )
        self.cancel_latency = Histogram(
            "fleet_cancel_latency_seconds", "cancel request to run.cancelled", LATENCY_BUCKETS
        )
        self.command_rtt = Histogram(
            "fleet_command_round_trip_seconds", "command round trip", LATENCY_BUCKETS
        )
        self.heartbeat_lag = Histogram(
            "fleet_heartbeat_lag_seconds", "heartbeat sent (host clock) to processed", LAG_BUCKETS
        )
        self.detection = Histogram(
            "fleet_dead_host_detection_seconds",
            "silence before a host was marked down",
            DETECTION_BUCKETS,
        )
        self.all: list[Counter] = [
            self.runs, self.events, self.validation, self.synthesized, self.commands,
            self.transitions, self.cancel_latency, self.command_rtt, self.heartbeat_lag,
            self.detection,
        ]  # fmt: skip

    # -- observations ------------------------------------------------------------------------
    def observe_stored(self, events: Sequence[Event], ids: Sequence[int | None]) -> None:
        """A stored batch; duplicates (id None) were counted when first stored. One lock for
        the batch: this runs for every stored event, 10,000 a second at full ingest."""
        with self.lock:
            for event, row in zip(events, ids, strict=True):
                if row is not None:
                    self._observe_event(event)

    def observe_event(self, event: Event) -> None:
        with self.lock:
            self._observe_event(event)

    def _observe_event(self, event: Event) -> None:
        payload = event.payload
        etype = event.event_type if event.event_type in KNOWN_EVENT_TYPES else "other"
        outcome = run_outcome(event.event_type)
        self.events.inc(etype, event.source_kind.value)
        rule = synth_rule(event.tags, event.idempotency_key)
        if rule is not None:
            self.synthesized.inc(rule)
        if outcome is not None:
            runtime = self.runtime_of(event.tenant, event.host, event.session)
            self.runs.inc(event.tenant, runtime, outcome)
        if event.event_type == "validation_error":
            self.validation.inc(text(payload, "reason"))
        elif event.event_type == "run.cancelled":
            if (latency := number(payload, "latency_ms")) is not None:
                self.cancel_latency.observe(latency / 1000.0)
        elif event.event_type == "command":
            self.commands.inc(text(payload, "verb"), text(payload, "outcome"))
            if (rtt := number(payload, "round_trip_ms")) is not None:
                self.command_rtt.observe(rtt / 1000.0)

    def observe_heartbeat(self, lag_s: float) -> None:
        # Host and controller clocks differ; a heartbeat "from the future" lagged by nothing.
        with self.lock:
            self.heartbeat_lag.observe(max(0.0, lag_s))
        self.recent.lags_s.append(lag_s)

    def observe_round_trip(self, rtt_ms: float) -> None:
        """A command the controller forwarded, timed from request to the agent's answer."""
        self.recent.round_trips_ms.append(rtt_ms)

    def observe_transition(self, transition: Transition) -> None:
        with self.lock:
            self.transitions.inc(transition.new.value)
            if transition.new is HostState.DOWN and transition.silent_s is not None:
                self.detection.observe(transition.silent_s)

    # -- output ------------------------------------------------------------------------------
    def _external(self) -> list[tuple[str, str, float]]:
        names = {
            "heartbeats": ("fleet_heartbeats_total", "counter"),
            "heartbeats_stale": ("fleet_heartbeats_stale_total", "counter"),
            "malformed_heartbeats": ("fleet_malformed_heartbeats_total", "counter"),
            "malformed_lifecycle": ("fleet_malformed_lifecycle_total", "counter"),
            "invalid_events": ("fleet_malformed_events_total", "counter"),
            "sequence_gaps": ("fleet_sequence_gaps", "gauge"),
        }
        got = self.external()
        return [(name, kind, float(got.get(src, 0))) for src, (name, kind) in names.items()]

    def render_prometheus(self) -> str:
        lines: list[str] = []
        for name, kind, value in self._external():
            lines += [f"# HELP {name} {name}", f"# TYPE {name} {kind}", f"{name} {_num(value)}"]
        with self.lock:
            for metric in self.all:
                lines += metric.render()
        return "\n".join(lines) + "\n"

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: value for name, _kind, value in self._external()}
        with self.lock:
            for metric in self.all:
                out[metric.name] = metric.snapshot()
        return out


# -- the endpoint ------------------------------------------------------------------------------
MAX_REQUEST_BYTES: Final = 8192
REQUEST_TIMEOUT_S: Final = 5.0


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics address must be HOST:PORT, not {addr!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


async def _answer(metrics: FleetMetrics, stream: SocketStream) -> None:
    async with stream:
        head = b""
        with anyio.move_on_after(REQUEST_TIMEOUT_S):
            while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_BYTES:
                try:
                    head += await stream.receive(4096)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
        line = head.split(b"\r\n", 1)[0].split()
        if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
            body = (await anyio.to_thread.run_sync(metrics.render_prometheus)).encode()
            status, ctype = b"200 OK", b"text/plain; version=0.0.4; charset=utf-8"
        else:
            body, status, ctype = b"not found: try GET /metrics\n", b"404 Not Found", b"text/plain"
        reply = (
            b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype
            + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n" + body
        )  # fmt: skip
        try:
            await stream.send(reply)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the scraper hung up; nothing to tell it


async def serve_metrics(
    metrics: FleetMetrics,
    addr: str,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `GET /metrics` on HOST:PORT until cancelled; reports the bound port at start."""
    host, port = parse_addr(addr)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    async with listener:
        bound = listener.listeners[0].extra(SocketAttribute.local_port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        task_status.started(bound)
        await listener.serve(lambda stream: _answer(metrics, stream))
