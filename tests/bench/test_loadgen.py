"""The load generator's heartbeats are the bytes a fresh encode gives, beat after beat: the
per-host template must never change what the controller is sent."""

from __future__ import annotations

import itertools

import msgspec

from bench.fake import sessions_for
from bench.loadgen import AGENT_VERSION, SimHost
from protocol import encode, subjects
from protocol.heartbeat import Heartbeat, Keepalive, SessionState, snapshot_digest


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
            digest=snapshot_digest(host.sessions),
        )
    )


def test_keepalive_templates_equal_fresh_encodes() -> None:
    host = SimHost("acme", "h000007", "boot1234", sessions_for(7, 10))
    kinds = []
    for _ in range(30):
        _, data = host.heartbeat(5.0, 12)
        if data.startswith(b'{"msg":"heartbeat.keepalive"'):
            kinds.append("ka")
            now = host.last_sent
            digest = snapshot_digest(host.sessions)
            fresh = Keepalive(
                tenant="acme",
                host=host.host,
                boot_id=host.boot,
                seq=host.seq,
                sent_at=now,
                interval_s=5.0,
                digest=digest,
            )
            assert data == encode(fresh)
        else:
            kinds.append("full")
            assert data == expected(host, 5.0)
    assert kinds[0] == "full" and kinds.count("full") in (3, 4)  # first, then every 12th
    later = [i for i, k in enumerate(kinds) if k == "full"][1:]
    assert all(b - a == 12 for a, b in itertools.pairwise(later))


def test_templated_heartbeats_equal_fresh_encodes() -> None:
    for index in (0, 1, 7):  # a dead pane, a drifted runtime, an ordinary host
        host = SimHost("acme", f"h{index:06d}", "boot1234", sessions_for(index, 10))
        for interval in (5.0, 5.0, 5.0, 2.0):  # a new interval builds a new template
            subject, data = host.heartbeat(interval)
            assert subject == subjects.heartbeat("acme", host.host)
            assert data == expected(host, interval)
