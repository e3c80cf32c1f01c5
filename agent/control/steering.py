"""Sending input to a session and interrupting it, with proof of what happened.

"The pane changed" is not proof. `send --verify` counts as delivered only when the session
went to work (its screen state became working or blocked) or the runtime acknowledged the
prompt (a `run.started` emission in the pane's output after the send).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from agent.discovery.detect import Match, classify
from agent.discovery.runtimes import RuntimeSpec
from agent.discovery.tmux import Pane, Tmux
from agent.events.capture import file_size
from protocol.commands import Outcome
from protocol.emission import EmissionParser, Emitted
from protocol.heartbeat import SessionState

CHUNK = 256
ENTER_RETRIES = 3
FIRST_WAIT_S = 1.0
POLL_S = 0.1
EXCERPT_LINES = 12

BUSY = (SessionState.WORKING, SessionState.BLOCKED)


@dataclass(frozen=True, slots=True)
class Outcomes:
    outcome: Outcome
    message: str
    screen: str | None = None
    details: dict[str, object] | None = None


def excerpt(lines: list[str]) -> str:
    kept = [ln.rstrip() for ln in lines if ln.strip()]
    return "\n".join(kept[-EXCERPT_LINES:])


@dataclass
class Steering:
    tmux: Tmux
    logs_dir: Path

    async def screen(self, pane: Pane) -> list[str]:
        return (await self.tmux.capture(pane.pane_id)).splitlines()

    async def state(self, pane: Pane, spec: RuntimeSpec) -> tuple[SessionState, Match, list[str]]:
        # Screen and title from one tmux call: the title in `pane` may be seconds old, and a
        # stale "working" title would outvote a fresh idle prompt.
        out = await self.tmux.run(
            "capture-pane",
            "-p",
            "-t",
            pane.pane_id,
            ";",
            "display-message",
            "-p",
            "-t",
            pane.pane_id,
            "#{pane_title}",
        )
        lines = out.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        title = lines.pop() if lines else ""
        match = classify(lines, title, spec.rules)
        return match.state, match, lines

    def _acknowledged(self, session: str, spec: RuntimeSpec, since_offset: int) -> bool:
        """Did the runtime emit `run.started` after ``since_offset`` of its pane log?"""
        path = self.logs_dir / f"{session}.log"
        if file_size(path) <= since_offset:
            return False
        with path.open("rb") as f:
            f.seek(since_offset)
            data = f.read(1024 * 1024).decode("utf-8", errors="replace")
        parser = EmissionParser(spec.events_begin, spec.events_end)
        return any(
            isinstance(r, Emitted) and r.event_type == "run.started"
            for r in parser.feed(data, time.time())
        )

    async def send(
        self, pane: Pane, spec: RuntimeSpec, text: str, verify: bool, timeout_s: float
    ) -> Outcomes:
        before, _, _ = await self.state(pane, spec)
        offset = file_size(self.logs_dir / f"{pane.session}.log")
        for start in range(0, len(text), CHUNK):
            # -l: literally, never as key names; "--": text starting with "-" is not a flag.
            await self.tmux.run(
                "send-keys", "-t", pane.pane_id, "-l", "--", text[start : start + CHUNK]
            )
        if not verify:
            await self.tmux.run("send-keys", "-t", pane.pane_id, spec.submit_key)
            return Outcomes(
                Outcome.DELIVERED, "typed and submitted (not verified)", details={"verified": False}
            )
        deadline = time.monotonic() + timeout_s
        wait = FIRST_WAIT_S
        lines: list[str] = []
        for attempt in range(ENTER_RETRIES + 1):
            await self.tmux.run("send-keys", "-t", pane.pane_id, spec.submit_key)
            until = min(deadline, time.monotonic() + wait)
            while True:
                if await anyio.to_thread.run_sync(self._acknowledged, pane.session, spec, offset):
                    return Outcomes(
                        Outcome.DELIVERED,
                        "delivered: the runtime started a run",
                        details={"proof": "run.started", "enters": attempt + 1},
                    )
                state, match, lines = await self.state(pane, spec)
                if state in BUSY and before not in BUSY:
                    return Outcomes(
                        Outcome.DELIVERED,
                        f"delivered: the session is {state.value}",
                        details={
                            "proof": f"screen:{state.value}",
                            "rule": match.rule,
                            "enters": attempt + 1,
                        },
                    )
                if time.monotonic() >= until:
                    break
                await anyio.sleep(POLL_S)
            if time.monotonic() >= deadline:
                break
            wait *= 2  # backoff between Enter retries
        return Outcomes(
            Outcome.NOT_VERIFIED,
            f"typed, but after {attempt + 1} Enter presses the session did not start working",
            screen=excerpt(lines),
            details={"enters": attempt + 1, "state": before.value},
        )
