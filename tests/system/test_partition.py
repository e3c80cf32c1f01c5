"""A partition between a deployed second host and NATS: the controller calls the host
`suspect` then `down` within the liveness bounds, `ok` once the link is back, and every event
the host's stub emitted meanwhile is stored exactly once."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from agent.config import AgentConfig
from protocol.heartbeat import DOWN_AFTER_INTERVALS, SUSPECT_AFTER_INTERVALS
from tests.support.fleet import wait_for
from tests.support.netns import (
    INTERVAL,
    second_host_env,
    skip_reason,
    snapshot_wheelhouse,
    stub_roster,
)
from tests.system.test_events_delivery import (
    EVENTS_PER_RUN,
    all_stored,
    assert_exactly_once_in_order,
    emitted_keys,
    send_prompts,
    stored,
)
from tests.system.test_liveness import transitions

TICK = 0.1  # liveness_tick_s of the test controller


@pytest.mark.root
def test_partition_then_heal_detects_and_loses_nothing(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    (tmp_path / "wheels").mkdir()
    wheelhouse = snapshot_wheelhouse(tmp_path / "wheels")
    with second_host_env(tmp_path / "env", wheelhouse) as host:
        roster = stub_roster(tmp_path / "roster.toml", work="0.1")
        deployed = host.deploy(roster=roster)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        # Where the remote agent keeps its pane logs: the ground truth of what was emitted.
        config = AgentConfig(
            tenant=host.tenant, host="h2", state_dir=str(host.remote_dir / "state")
        )
        session = "coder"

        def state() -> str | None:
            rows = host.fleet.ps("--tenant", host.tenant, "--host", "h2")
            return rows[0]["host_state"] if rows else None

        wait_for(lambda: (config.state_path / "logs" / "coder.log").exists(), what="capture")
        send_prompts(host.tmux_socket, session, ["before 0", "before 1"])
        all_stored(host.fleet, host.tenant, config, session, runs=2)

        host.ns.set_link(False)
        cut, cut_wall = time.monotonic(), time.time()
        during = 4
        send_prompts(host.tmux_socket, session, [f"during {i}" for i in range(during)])
        wait_for(lambda: state() == "suspect", timeout=10, interval=0.05, what="suspect")
        seen_suspect = time.monotonic() - cut
        wait_for(lambda: state() == "down", timeout=10, interval=0.05, what="down")
        seen_down = time.monotonic() - cut
        wait_for(
            lambda: len(emitted_keys(config, session)) >= (2 + during) * EVENTS_PER_RUN,
            timeout=20,
            what="the stub's runs during the partition",
        )
        # The partition is real: what was emitted during it has not reached the store.
        assert len(stored(host.fleet, host.tenant, session)) == 2 * EVENTS_PER_RUN

        host.ns.set_link(True)
        healed = time.monotonic()
        wait_for(lambda: state() == "ok", timeout=30, interval=0.1, what="ok after the heal")
        seen_ok = time.monotonic() - healed

        rows = all_stored(host.fleet, host.tenant, config, session, runs=2 + during)
        assert_exactly_once_in_order(rows, emitted_keys(config, session))

        steps = transitions(host.fleet.tmp / "controller", host.tenant)
        assert [(old, new) for old, new, _ in steps] == [
            (None, "ok"),
            ("ok", "suspect"),
            ("suspect", "down"),
            ("down", "ok"),
        ]
        suspect_silence, down_silence = steps[1][2], steps[2][2]
        assert suspect_silence is not None and down_silence is not None
        # The controller's own clock: just past 3 and 6 intervals of silence.
        suspect_at, down_at = SUSPECT_AFTER_INTERVALS * INTERVAL, DOWN_AFTER_INTERVALS * INTERVAL
        assert suspect_at < suspect_silence <= suspect_at + 2 * TICK
        assert down_at < down_silence <= down_at + 2 * TICK
        # Counted from the cut, on the controller's clock (same machine): the last heartbeat
        # left at most one jittered interval plus one discovery pass before the cut.
        judged = transition_times(host.fleet.tmp / "controller", host.tenant)
        slack = 1.2 * INTERVAL + 0.5 + 2 * TICK
        assert 0 < judged["suspect"] - cut_wall <= suspect_at + slack
        assert 0 < judged["down"] - cut_wall <= down_at + slack
        print(
            f"\npartition: suspect {judged['suspect'] - cut_wall:.2f}s after the cut "
            f"({suspect_silence:.2f}s silence; `fleet ps` showed it at {seen_suspect:.2f}s), "
            f"down {judged['down'] - cut_wall:.2f}s ({down_silence:.2f}s; shown {seen_down:.2f}s),"
            f" ok {seen_ok:.2f}s after the heal"
        )


def transition_times(data_dir: Path, tenant: str) -> dict[str, float]:
    """When the controller judged each state (its wall clock), the first time it did."""
    with closing(sqlite3.connect(data_dir / "fleet.db")) as db:
        rows = db.execute(
            "SELECT new_state, at FROM host_transitions WHERE tenant=? ORDER BY id", (tenant,)
        ).fetchall()
    times: dict[str, float] = {}
    for state, at in rows:
        times.setdefault(state, at)
    return times
