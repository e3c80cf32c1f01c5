"""The load generator's heartbeats are the bytes a fresh encode gives, beat after beat: the
per-host template must never change what the controller is sent."""

from __future__ import annotations

import msgspec

from bench.fake import sessions_for
from bench.loadgen import AGENT_VERSION, SimHost
from protocol import encode, subjects
from protocol.heartbeat import Heartbeat, SessionState


def expected(host: SimHost, interval_s: float) -> bytes:
    """The host's last heartbeat, encoded from scratch."""
    now = host.last_sent
    return encode(
        Heartbeat(
            tenant=host.tenant,
            host=host.host,
            boot_id=host.boot,
            seq=host.seq,
            sent_at=now,
            interval_s=interval_s,
            agent_version=AGENT_VERSION,
            sessions=[
                msgspec.structs.replace(s, last_output_at=now)
                if s.state is SessionState.WORKING
                else s
                for s in host.sessions
            ],
        )
    )


def test_templated_heartbeats_equal_fresh_encodes() -> None:
    for index in (0, 1, 7):  # a dead pane, a drifted runtime, an ordinary host
        host = SimHost("acme", f"h{index:06d}", "boot1234", sessions_for(index, 10))
        for interval in (5.0, 5.0, 5.0, 2.0):  # a new interval builds a new template
            subject, data = host.heartbeat(interval)
            assert subject == subjects.heartbeat("acme", host.host)
            assert data == expected(host, interval)
