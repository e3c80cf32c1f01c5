"""Which snapshots of a heartbeat the synthesis runner hands to the engine: the same as the
loop it replaced (one statement per session), checked on random heartbeat sequences."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.events.synthesis.engine import SynthesisConfig
from controller.events.synthesis.runner import SynthesisRunner
from protocol.heartbeat import Heartbeat, SessionSnapshot, SessionState

STALE_AFTER = 300.0


class Recorder:
    """Stands in for the engine: records what reaches it."""

    config = SynthesisConfig(stale_after_s=STALE_AFTER)

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, SessionState]] = []

    def on_snapshot(self, _tenant: str, host: str, snap: SessionSnapshot, _now: float) -> list:
        self.calls.append((host, snap.name, snap.state))
        return []


def reference(working: dict[tuple[str, str], set[str]], hb: Heartbeat, now: float) -> list:
    """The loop of before, kept as the oracle."""
    hits = []
    seen = working.get((hb.tenant, hb.host))
    for snap in hb.sessions:
        if snap.state is SessionState.WORKING:
            if seen is None:
                seen = working[(hb.tenant, hb.host)] = set()
            seen.add(snap.name)
            mark = _later(snap.last_output_at, snap.state_since)
            if mark is None or now - mark <= STALE_AFTER:
                continue
        elif seen and snap.name in seen:
            seen.discard(snap.name)
        else:
            continue
        hits.append((hb.host, snap.name, snap.state))
    return hits


def _later(a: float | None, b: float | None) -> float | None:
    if a is None or (b is not None and b > a):
        return b
    return a


# Seconds before now; a second clear of the stale boundary either way, so that the few
# microseconds between the runner's clock and the oracle's cannot decide.
_ago = st.one_of(st.none(), st.floats(0, STALE_AFTER - 1), st.floats(STALE_AFTER + 1, 10_000))
_snap = st.tuples(
    st.sampled_from([SessionState.WORKING, SessionState.IDLE, SessionState.EXITED]), _ago, _ago
)
# A heartbeat: host, then a state and two ages for some of six session names.
_beat = st.tuples(
    st.sampled_from(["h1", "h2"]),
    st.dictionaries(st.sampled_from([f"s{i}" for i in range(6)]), _snap, max_size=6),
)


def heartbeat(seq: int, host: str, snaps: dict[str, Any], now: float) -> Heartbeat:
    """One generated beat: its sessions' ages turned into times before ``now``."""
    sessions = [
        SessionSnapshot(
            name=name,
            runtime_configured="stub",
            runtime_observed="stub",
            state=state,
            last_output_at=None if out is None else now - out,
            state_since=None if since is None else now - since,
        )
        for name, (state, out, since) in snaps.items()
    ]
    return Heartbeat(
        tenant="acme",
        host=host,
        boot_id="b1",
        seq=seq,
        sent_at=now,
        interval_s=5.0,
        agent_version="t",
        sessions=sessions,
    )


def recording_runner() -> tuple[SynthesisRunner, Recorder]:
    runner = SynthesisRunner(None, SynthesisConfig(), publish=None)  # type: ignore[arg-type]
    recorder = Recorder()
    runner.engine = recorder  # type: ignore[assignment]
    return runner, recorder


@settings(max_examples=300, deadline=None)
@given(beats=st.lists(_beat, max_size=12))
def test_the_engine_sees_what_the_old_loop_gave_it(beats: list[Any]) -> None:
    runner, recorder = recording_runner()
    oracle: dict[tuple[str, str], set[str]] = {}
    for seq, (host, snaps) in enumerate(beats):
        now = time.time()
        hb = heartbeat(seq, host, snaps, now)
        recorder.calls.clear()
        runner.on_heartbeat(hb)
        assert recorder.calls == reference(oracle, hb, now)


@settings(max_examples=300, deadline=None)
@given(beats=st.lists(_beat, max_size=12))
def test_a_keepalive_sees_what_the_same_heartbeat_again_would(beats: list[Any]) -> None:
    """A keepalive re-reads the held sessions only once one could have gone stale; what it
    hands the engine is what a second heartbeat of the same sessions would."""
    runner, recorder = recording_runner()
    oracle: dict[tuple[str, str], set[str]] = {}
    for seq, (host, snaps) in enumerate(beats):
        now = time.time()
        hb = heartbeat(seq, host, snaps, now)
        runner.on_heartbeat(hb)
        reference(oracle, hb, now)
        recorder.calls.clear()
        held = SimpleNamespace(tenant="acme", host=host, sessions=hb.sessions)
        runner.on_keepalive(held)  # type: ignore[arg-type]
        assert recorder.calls == reference(oracle, hb, now)
