"""`python -m bench.top_render [--sessions 1000] [--changes-per-s 1000] [--seconds 10]`: the CPU
`fleet top` spends keeping up with a busy fleet, in-process: every session changes state at
the given rate (pushed `SessionDelta`s decoded and applied as the live view does) and a frame
is drawn 4 times a second into an 80x24 console. Prints one JSON document."""

from __future__ import annotations

import argparse
import io
import json
import random
import time

from rich.console import Console

from bench.common import machine
from controller.cli.top import REDRAW_S
from controller.cli.top_view import TopModel, frame
from protocol import decode, encode
from protocol.api import HostState, PsRow
from protocol.attention import FeedMessage, SessionDelta
from protocol.heartbeat import SessionSnapshot, SessionState


def _rows(sessions: int) -> list[PsRow]:
    now = time.time()
    return [
        PsRow(
            tenant="t0",
            host=f"h{i // 10:04d}",
            host_state=HostState.OK,
            heartbeat_age_s=1.0,
            session=SessionSnapshot(
                name=f"s{i % 10}",
                runtime_configured="stub",
                runtime_observed="stub",
                state=SessionState.IDLE,
                state_since=now,
            ),
        )
        for i in range(sessions)
    ]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.top_render", description=__doc__)
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--changes-per-s", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    rng = random.Random(1)
    model = TopModel()
    rows = _rows(a.sessions)
    model.load(rows, [])
    console = Console(file=io.StringIO(), width=80, height=24, force_terminal=True)
    states = [SessionState.IDLE.value, SessionState.WORKING.value, SessionState.BLOCKED.value]
    # Encoded beforehand: the wire's cost is the decode on our side, which is measured.
    wire = [
        encode(
            SessionDelta(
                tenant="t0",
                host=r.host,
                session=r.session.name if r.session else "",
                state=rng.choice(states),
                since=time.time(),
            )
        )
        for r in rng.choices(rows, k=int(a.changes_per_s * a.seconds))
    ]
    cpu0, wall0 = time.process_time(), time.monotonic()
    frames, applied = 0, 0
    per_frame = int(a.changes_per_s * REDRAW_S)
    for start in range(0, len(wire), per_frame):
        for data in wire[start : start + per_frame]:
            applied += model.apply(decode(data, FeedMessage))  # type: ignore[arg-type]
        console.print(frame(model, time.time(), 24))
        frames += 1
    cpu = time.process_time() - cpu0
    simulated = len(wire) / a.changes_per_s
    out = {
        "machine": machine(),
        "sessions": a.sessions,
        "changes_per_s": a.changes_per_s,
        "frames": frames,
        "applied": applied,
        "cpu_s": round(cpu, 3),
        "wall_s": round(time.monotonic() - wall0, 3),
        # What the live view would use of a core at this rate (4 frames a second).
        "cpu_pct_of_a_core": round(100 * cpu / simulated, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
