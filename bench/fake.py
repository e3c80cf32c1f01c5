"""What simulated hosts say: session snapshots and events shaped like a real fleet's.

Deterministic for a given seed, so two runs (and the raw baselines) see the same data.
"""

from __future__ import annotations

import itertools
import random
import time

from protocol.events import Event, SourceKind
from protocol.heartbeat import BootEnabled, PaneState, SessionSnapshot, SessionState

RUNTIMES = ("claude", "codex", "pi", "stub", "shell")
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def host_name(index: int) -> str:
    return f"h{index:06d}"


def tenant_of(index: int, tenants: list[str]) -> str:
    return tenants[index % len(tenants)]


def vocabulary(size: int = 5000, seed: int = 7) -> list[str]:
    """Pseudo-words, most frequent first (sampled Zipf-like by ``words``)."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < size:
        seen["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))] = None
    return list(seen)


class Words:
    def __init__(self, seed: int) -> None:
        self.vocab = vocabulary()
        self.cum = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(self.vocab))))
        self.rng = random.Random(seed)

    def text(self, n: int) -> str:
        return " ".join(self.rng.choices(self.vocab, cum_weights=self.cum, k=n))


def sessions_for(index: int, count: int) -> list[SessionSnapshot]:
    """A host's sessions: a third working, the rest idle; 1 host in 100 has a dead pane and 1
    in 250 a drifted runtime, so `ps --problems` has something to show."""
    now = time.time()
    out = []
    for k in range(count):
        runtime = RUNTIMES[(index + k) % len(RUNTIMES)]
        dead = index % 100 == 0 and k == 0
        drift = index % 250 == 1 and k == 1
        working = k % 3 == 0 and not dead
        out.append(
            SessionSnapshot(
                name=f"s{k:02d}",
                runtime_configured=runtime,
                runtime_observed="shell" if drift else (None if dead else runtime),
                pane=PaneState.DEAD if dead else PaneState.ALIVE,
                pid=None if dead else 10_000 + k,
                state=(
                    SessionState.EXITED
                    if dead
                    else (SessionState.WORKING if working else SessionState.IDLE)
                ),
                state_since=now - 60,
                last_output_at=now,
                boot_enabled=BootEnabled.UNKNOWN,
                exit_status=1 if dead else None,
            )
        )
    return out


EVENT_TYPES = ("run.started", "run.state", "tool_call", "run.state", "run.completed")


def event(
    words: Words, tenant: str, host: str, boot: str, seq: int, session: str, ts: float
) -> Event:
    """One agent event; summary and tags are words from the shared vocabulary."""
    kind = EVENT_TYPES[seq % len(EVENT_TYPES)]
    return Event(
        tenant=tenant,
        host=host,
        session=session,
        boot_id=boot,
        seq=seq,
        ts=ts,
        event_type=kind,
        summary=words.text(12),
        source_kind=SourceKind.AGENT,
        tags=words.text(2).split(),
        payload={"step": seq, "note": words.text(4)},
        run_id=f"r{seq // len(EVENT_TYPES)}",
    )
