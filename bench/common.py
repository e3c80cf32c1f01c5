"""Small helpers every scenario uses: percentiles, /proc readings, timing, result rows."""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Result = dict[str, Any]


def pct(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of durations given in seconds, reported in milliseconds."""
    return {
        "n": len(samples_s),
        "p50_ms": round(pct(samples_s, 50) * 1000, 2),
        "p95_ms": round(pct(samples_s, 95) * 1000, 2),
        "p99_ms": round(pct(samples_s, 99) * 1000, 2),
        "max_ms": round(max(samples_s, default=float("nan")) * 1000, 2),
    }


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB (empty if it is gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def rss_mib(pid: int) -> float:
    return round(proc_status(pid).get("VmRSS", 0) / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """user + system CPU time a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg_at_start": loadavg(),
    }


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll until truthy; raise TimeoutError naming ``what`` at the deadline (bounded)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last={last!r}")


def goal(
    row: Result, name: str, value: float, limit: float, below: bool = True, upto: bool = False
) -> None:
    """Record a goal check: met when value < limit (below; <= with upto) or value >= limit."""
    met = (value <= limit if upto else value < limit) if below else value >= limit
    sign = ("<=" if upto else "<") if below else ">="
    row.setdefault("goals", {})[name] = {
        "value": value,
        "goal": f"{sign} {limit:g}",
        "met": bool(met),
    }
