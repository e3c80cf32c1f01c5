"""`python -m bench SCENARIO [--hosts N] [--duration S] [--json FILE] ...`

Scenarios: fanin, dead, ps, ingest, search, cmd, restart, intake, notify, all. Each starts its own
embedded nats-server and controller subprocess in a temp dir and stops them at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Result, machine

SCENARIOS = ("fanin", "dead", "ps", "ingest", "search", "cmd", "restart", "intake", "notify")

# Full-scale defaults per scenario (hosts or events), from the goals in docs/benchmarks.md.
DEFAULT_SIZE = {
    "fanin": 50_000,
    "dead": 10_000,
    "ps": 50_000,
    "ingest": 200_000,
    "search": 1_000_000,
    "cmd": 1_000,
    "restart": 10_000,
    "intake": 50_000,
    "notify": 200,
}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("scenario", choices=(*SCENARIOS, "all"))
    p.add_argument("--hosts", type=int, help="simulated hosts (fanin, dead, ps, restart)")
    p.add_argument("--events", type=int, help="events (ingest, search, notify)")
    p.add_argument("--commands", type=int, help="send commands (cmd); verify: a tenth")
    p.add_argument("--duration", type=float, default=30.0, help="steady-state seconds (fanin)")
    p.add_argument("--interval", type=float, default=5.0, help="heartbeat interval, seconds")
    p.add_argument("--procs", type=int, default=3, help="load generator processes")
    p.add_argument(
        "--full-every",
        type=int,
        default=1,
        help="fanin: a full snapshot every N beats, keepalives between (the agent: 12)",
    )
    p.add_argument("--flood", type=int, default=15_000, help="raw-limit burst size (fanin)")
    p.add_argument("--kills", type=int, default=100, help="hosts to stop (dead)")
    p.add_argument("--sessions", type=int, default=20, help="stub sessions (cmd)")
    p.add_argument("--repeats", type=int, default=20, help="ps repetitions")
    p.add_argument(
        "--gap-ms", type=float, default=50.0, help="pause between two published events (notify)"
    )
    p.add_argument(
        "--cost-us", type=float, default=120.0, help="CPU per heartbeat after decode (intake)"
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="the controller on a CPU of its own, nats-server and the load on the others",
    )
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    return p.parse_args(argv)


def run(name: str, a: argparse.Namespace) -> Result:
    from bench import scen_cmd, scen_events, scen_fleet, scen_intake, scen_notify, scen_ps

    size = a.hosts or DEFAULT_SIZE[name]
    if name == "fanin":
        return scen_fleet.fanin(size, a.duration, a.interval, a.procs, a.flood, a.full_every)
    if name == "dead":
        return scen_fleet.dead(size, min(a.kills, max(1, size // 2)), a.interval, a.procs)
    if name == "ps":
        return scen_ps.ps(size, a.interval, a.procs, a.repeats)
    if name == "restart":
        return scen_fleet.restart(size, a.interval, a.procs)
    if name == "intake":
        return scen_intake.intake(size, a.duration, a.interval, a.procs, a.cost_us)
    if name == "ingest":
        return scen_events.ingest(a.events or DEFAULT_SIZE[name], 100, a.procs, a.interval)
    if name == "search":
        return scen_events.search(a.events or DEFAULT_SIZE[name], 200)
    if name == "notify":
        return scen_notify.notify(a.events or DEFAULT_SIZE[name], a.gap_ms / 1000)
    count = a.commands or DEFAULT_SIZE["cmd"]
    return scen_cmd.cmd(count, max(1, count // 10), a.sessions)


def _flat(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, float):
        out.append((prefix, "nan" if math.isnan(value) else f"{value:g}"))
    else:
        out.append((prefix, str(value)))


def table(result: Result) -> str:
    rows: list[tuple[str, str]] = []
    goals = result.get("goals", {})
    _flat("", {k: v for k, v in result.items() if k != "goals"}, rows)
    width = max((len(k) for k, _ in rows), default=10)
    lines = [f"== {result.get('scenario')} =="]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    for name, g in goals.items():
        mark = "met" if g["met"] else "MISSED"
        lines.append(f"  goal {name}: {g['value']} (goal {g['goal']}) {mark}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so every `with` stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = SCENARIOS if a.scenario == "all" else (a.scenario,)
    report: dict[str, Any] = {"machine": machine(), "started_at": time.time(), "results": []}
    if a.pin:
        from bench.harness import split_cpus

        report["cpus"] = split_cpus()
    failed = False
    for name in names:
        start = time.monotonic()
        try:
            result = run(name, a)
        except Exception as exc:  # one broken scenario must not hide the others' figures
            result = {"scenario": name, "error": f"{type(exc).__name__}: {exc}"}
            failed = True
        result["wall_s"] = round(time.monotonic() - start, 1)
        if "cpus" in report:
            result["cpus"] = report["cpus"]
        report["results"].append(result)
        print(table(result), flush=True)
        if a.json:
            a.json.write_text(json.dumps(report, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
