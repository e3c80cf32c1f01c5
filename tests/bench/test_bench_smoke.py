"""The benchmark harness at tiny scale, so it cannot rot: every scenario runs end to end
(real nats-server, real controller, real fleet-agent for `cmd`) and its result has the right
shape with nothing lost. Speed is not asserted here; docs/benchmarks.md has the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.scen_keepalive import keepalive

REPO = Path(__file__).resolve().parents[2]

TINY: dict[str, list[str]] = {
    "fanin": ["--hosts", "60", "--duration", "2", "--interval", "1", "--flood", "3000"],
    "dead": ["--hosts", "40", "--kills", "5", "--interval", "0.3"],
    "ps": ["--hosts", "60", "--interval", "1", "--repeats", "2"],
    "restart": ["--hosts", "40", "--interval", "0.5"],
    "ingest": ["--events", "1000", "--interval", "1"],
    "search": ["--events", "2000"],
    "cmd": ["--commands", "10", "--sessions", "2"],
    "intake": ["--hosts", "60", "--duration", "3", "--interval", "1", "--cost-us", "50"],
    "notify": ["--events", "20", "--gap-ms", "20"],
}


def run_bench(scenario: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"{scenario}.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            scenario,
            "--procs",
            "2",
            *TINY[scenario],
            *extra,
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert out.exists(), result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["machine"]["nproc"] >= 1
    (res,) = report["results"]
    assert "error" not in res, res.get("error", "") + "\n" + result.stderr[-2000:]
    assert result.returncode == 0, result.stderr[-2000:]
    assert res["scenario"] == scenario
    assert all({"value", "goal", "met"} <= set(g) for g in res["goals"].values())
    return res


@pytest.mark.timeout(180)
@pytest.mark.parametrize("scenario", sorted(TINY))
def test_scenario_runs_and_counts_match(scenario: str, tmp_path: Path) -> None:
    res = run_bench(scenario, tmp_path)
    if scenario == "fanin":
        assert res["heartbeats_per_s"] > 0 and res["raw_heartbeats_per_s"] > 0
        assert res["offered_per_s"] > 0 and res["lag_steady"]["n"] > 0
        assert res["cpu_pct"]["generators"] > 0 and res["cpu_pct"]["nats_server"] > 0
        assert res["raw_limit"]["flood_published"] > 0
        assert res["raw_limit"]["controller_caught_up"] and res["raw_limit"]["raw_caught_up"]
        assert res["memory"]["controller_rss_mib"] > 0
    elif scenario == "dead":
        assert res["down_s"]["n"] == res["kills"] == 5
        assert res["suspect_s"]["n"] <= 5
    elif scenario == "ps":
        assert res["api_full_listing"]["rows"] == res["sessions"] == 600
        assert res["api_full_listing"]["total_reported"] == 600
        assert res["cli"]["json_full"]["rc"] == 0 and res["cli"]["json_full"]["rows"] == 600
        assert res["api_problems"]["rows"] >= 1  # host 0 has a dead pane
    elif scenario == "restart":
        assert res["hosts_heard"] == res["restored_hosts"] == 40
        assert res["false_down_after_restart"] == 0
    elif scenario == "ingest":
        assert res["published_acked"] == res["stored_agent_events"] == 1000
        assert res["lost"] == 0 and res["sequence_gaps"] == 0
        assert res["raw_insert_rate_per_s"] > 0
        assert res["cpu_us_per_event"]["controller"] > 0 and res["raw_cpu_us_per_event"] > 0
        assert res["cpu_bound_rate_per_s"] > 0 and res["capacity_ratio"] > 0
        assert res["floor_cpu_us_per_event"]["decode"] > 0
    elif scenario == "search":
        assert res["direct"]["n"] == res["api"]["n"] == 200
        assert res["direct"]["hits"] > 0 and res["cli"]["rc"] == 0
    elif scenario == "intake":
        (sample,) = res["samples"].values()
        assert sample["processed_per_s"] > 0 and sample["connection_errors"] == 0
    elif scenario == "notify":
        assert res["published"] == res["delivered"] == res["latency"]["n"] == 20
        assert res["lost"] == res["duplicates"] == res["unexpected_posts"] == 0
        assert res["counters"]["reaction_delivered"] == 21  # and the warm-up
        assert res["counters"]["reaction_failed"] == 0
    elif scenario == "cmd":
        # delivered, or queued behind the stub's previous run: every send taken
        assert set(res["send"]["outcomes"]) <= {"delivered", "queued"}, res["send"]
        assert sum(res["send"]["outcomes"].values()) == 10
        assert res["send_verify"]["n"] == 1
        assert res["agent_rss_mib"] > 0


@pytest.mark.timeout(180)
def test_fanin_with_keepalives_counts_them_all(tmp_path: Path) -> None:
    res = run_bench("fanin", tmp_path, "--full-every", "12", "--flood", "0")
    assert res["full_every"] == 12 and res["lag_steady"]["n"] > 0
    kept = res["keepalives"]
    # 60 hosts at 1 s for the ramp and 2 s steady: most beats are keepalives, all understood
    assert kept["keepalives"] > 60 and kept["keepalives_mismatched"] == 0, kept
    assert res["false_suspect_or_down"] == 0


@pytest.mark.timeout(180)
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--pin needs two CPUs")
def test_pin_gives_the_controller_a_cpu_of_its_own(tmp_path: Path) -> None:
    res = run_bench("fanin", tmp_path, "--pin")
    cpus = res["cpus"]
    assert cpus["controller"] and cpus["rest"] and not set(cpus["controller"]) & set(cpus["rest"])
    # Read from /proc while the scenario ran: what the processes really had.
    assert res["affinity"]["controller"] == cpus["controller"]
    assert res["affinity"]["generators"] == cpus["rest"]
    assert res["affinity"]["nats_server"] == cpus["rest"]
    assert res["heartbeats_per_s"] > 0


def test_keepalive_cost_scenario_runs() -> None:
    res = keepalive(50, rounds=1)
    assert res["keepalive_bytes"] < res["full_bytes"]
    assert res["keepalive_us_per_heartbeat"] > 0 and res["full_us_per_heartbeat"] > 0
    assert res["bytes_per_host_min_after_unchanged"] < res["bytes_per_host_min_before"]
