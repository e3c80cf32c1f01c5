"""Sending input to a session and answering its dialogs, with proof of what happened.

Text goes in as one bracketed paste from a private tmux buffer, and the submit key follows
as a separate write once the text shows on screen: never a keystroke burst (Codex takes an
Enter in the same burst as typed text as part of a paste; Claude Code drops an Enter in the
same burst as a paste). Nothing is ever typed into a dialog: a `blocked` session refuses
`send`, and only `answer` presses a key there, the one the operator named.

"The pane changed" is not proof. `send --verify` counts as delivered only on the runtime's
acknowledgement: its screen went working or blocked, the text left the input box, or the
runtime's own word that it took a prompt (`acknowledge`): a prompt-submitted hook, or a
`run.started` emission the event flow read off the pane's emulated screen.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import anyio

from agent.control.screenproof import (
    Outcomes,
    delivered,
    excerpt,
    input_row,
    left_input,
    needle,
    question,
    refusal,
    text_rows,
    with_details,
)
from agent.discovery.detect import Match, classify
from agent.discovery.runtimes import RuntimeSpec
from agent.discovery.tmux import Pane, Tmux
from agent.events.origin import Origin
from protocol.commands import Command, Outcome, answer_key
from protocol.events import Event, SourceKind
from protocol.heartbeat import SessionState

ENTER_RETRIES = 3
FIRST_WAIT_S = 1.0
POLL_S = 0.1
ECHO_POLL_S = 0.05
ECHO_WAIT_S = 2.0  # longest wait for the pasted text to show before the submit key anyway
ANSWER_SETTLE_S = 0.3  # a navigation key (Up, Tab, ...) moves a cursor: look once, then go

BUSY = (SessionState.WORKING, SessionState.BLOCKED)
NAVIGATION = frozenset({"Up", "Down", "Left", "Right", "Tab", "BTab", "Space"})


@dataclass
class Steering:
    tmux: Tmux
    # Seam for the runtimes' own signals: when a hook (Claude's UserPromptSubmit) or an
    # emitted `run.started` (agent/events/flow.py) reports a prompt taken,
    # `acknowledge(session, ts, proof)` records it and `send --verify` counts it.
    acks: dict[str, tuple[float, str]] = field(default_factory=dict)

    def acknowledge(self, session: str, at: float, proof: str = "hook") -> None:
        if at >= self.acks.get(session, (0.0, ""))[0]:
            self.acks[session] = (at, proof)

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

    async def _paste(
        self, pane: Pane, spec: RuntimeSpec, text: str, lines: list[str]
    ) -> tuple[SessionState, Match, list[str]]:
        """The text as one bracketed paste (`-p`: only if the application asked for it),
        through a buffer of its own that `-d` deletes; then the state once the screen shows
        the text (`lines`: the screen before)."""
        piece = needle(text)
        shown = len(text_rows(lines, piece))
        name = f"fleet-send-{uuid.uuid4().hex}"
        # One tmux call: load-buffer reads the text from stdin, then paste-buffer runs.
        await self.tmux.run(
            "load-buffer",
            "-b",
            name,
            "-",
            ";",
            "paste-buffer",
            "-p",
            "-d",
            "-b",
            name,
            "-t",
            pane.pane_id,
            stdin=text.encode(),
        )
        # The submit key must be a separate write the runtime reads after the paste; seeing
        # the text drawn proves it read the paste. Some screens never show it (input not
        # echoed while working): then a bounded settle.
        deadline, poll = time.monotonic() + ECHO_WAIT_S, ECHO_POLL_S / 10
        while True:
            await anyio.sleep(poll)
            found = await self.state(pane, spec)
            if len(text_rows(found[2], piece)) > shown or time.monotonic() >= deadline:
                return found
            poll = min(poll * 2, ECHO_POLL_S)

    async def send(
        self,
        pane: Pane,
        spec: RuntimeSpec,
        text: str,
        verify: bool,
        timeout_s: float,
        answer: str | None = None,
    ) -> Outcomes:
        if not text.strip():
            return Outcomes(
                Outcome.BAD_REQUEST,
                "nothing to send: the text is empty (to press a key in a dialog, use "
                "`fleet answer`)",
            )
        started = time.monotonic()  # timeout_s bounds the whole send, answer and paste too
        before, match, lines = await self.state(pane, spec)
        answered: dict[str, object] = {}
        if before is SessionState.BLOCKED:
            if answer is None:
                return refusal(match, lines)
            out = await self.answer(pane, spec, answer, timeout_s)
            answered = {"answered": out.details}
            if out.outcome is not Outcome.OK:
                return with_details(out, **answered)
            before, match, lines = await self.state(pane, spec)
            if before is SessionState.BLOCKED:  # answered, and the next question came up
                return refusal(match, lines, **answered)
        since = time.time()
        # The state after the paste is the last look before the submit key: a dialog that
        # came up meanwhile must not get it.
        now, match, lines = await self._paste(pane, spec, text, lines)
        if now is SessionState.BLOCKED:
            out = refusal(match, lines, **answered, pasted=True)
            return Outcomes(
                out.outcome,
                f"blocked: {question(match)} (the dialog came up while the text was pasted; "
                "it was not submitted)",
                out.screen,
                out.details,
            )
        row = input_row(lines, needle(text))
        await self.tmux.run("send-keys", "-t", pane.pane_id, spec.submit_key)
        if before is SessionState.WORKING:
            return Outcomes(
                Outcome.QUEUED,
                "queued: the session is working; the runtime holds the prompt for its next turn",
                details={"state": "working", "verified": False, **answered},
            )
        if not verify:
            return Outcomes(
                Outcome.DELIVERED,
                "pasted and submitted (not verified)",
                details={"verified": False, **answered},
            )
        left = max(FIRST_WAIT_S, timeout_s - (time.monotonic() - started))
        out = await self._verify(pane, spec, text, row, since, left)
        return with_details(out, **answered)

    async def _proof(
        self, pane: Pane, spec: RuntimeSpec, text: str, row: int | None, since: float
    ) -> tuple[str | None, SessionState, Match, list[str]]:
        state, match, lines = await self.state(pane, spec)
        at, proof = self.acks.get(pane.session, (0.0, ""))
        if at >= since:
            return proof, state, match, lines
        if state in BUSY:
            return f"screen:{state.value}", state, match, lines
        if row is not None and left_input(lines, needle(text), row):
            return "input:left", state, match, lines
        return None, state, match, lines

    async def _verify(
        self,
        pane: Pane,
        spec: RuntimeSpec,
        text: str,
        row: int | None,
        since: float,
        timeout_s: float,
    ) -> Outcomes:
        deadline = time.monotonic() + timeout_s
        wait, enters = FIRST_WAIT_S, 1
        while True:
            until = min(deadline, time.monotonic() + wait)
            while True:
                proof, state, match, lines = await self._proof(pane, spec, text, row, since)
                if proof is not None:
                    return delivered(proof, state, match, enters)
                if time.monotonic() >= until:
                    break
                await anyio.sleep(POLL_S)
            # Another Enter only into a screen read as idle that still holds the text: on a
            # dialog it would pick the highlighted choice, on an unknown screen who knows.
            if time.monotonic() >= deadline or enters > ENTER_RETRIES:
                break
            if state is not SessionState.IDLE:
                break
            await self.tmux.run("send-keys", "-t", pane.pane_id, spec.submit_key)
            enters += 1
            wait *= 2  # backoff between Enter retries
        why = "" if state is SessionState.IDLE else f" and the screen reads {state.value}"
        return Outcomes(
            Outcome.NOT_VERIFIED,
            f"pasted, but after {enters} Enter presses the session did not take it{why}",
            screen=excerpt(lines),
            details={"enters": enters, "state": state.value},
        )

    async def answer(
        self, pane: Pane, spec: RuntimeSpec, choice: str, timeout_s: float
    ) -> Outcomes:
        """Press the key `choice` names in the dialog on screen, and only there."""
        key = answer_key(choice)
        if key is None:
            return Outcomes(
                Outcome.BAD_REQUEST,
                f"cannot answer with {choice!r}: use a menu number or letter (1, y, n) or a key "
                "(Enter, Escape, Tab, BTab, Up, Down, Left, Right, Space)",
            )
        state, match, lines = await self.state(pane, spec)
        if state is not SessionState.BLOCKED:
            return Outcomes(
                Outcome.NOOP,
                f"the session is {state.value}, not blocked: nothing to answer; no key pressed",
                screen=excerpt(lines),
                details={"state": state.value},
            )
        asks = question(match)
        details: dict[str, object] = {
            "question": asks,
            "choice": choice,
            "key": key,
            "rule": match.rule,
        }
        await self.tmux.run("send-keys", "-t", pane.pane_id, key)
        with anyio.move_on_after(ANSWER_SETTLE_S if key in NAVIGATION else timeout_s):
            while True:
                await anyio.sleep(POLL_S)
                state, match, lines = await self.state(pane, spec)
                if state is not SessionState.BLOCKED or question(match) != asks:
                    break
        details["state"] = state.value
        if key in NAVIGATION or state is not SessionState.BLOCKED or question(match) != asks:
            now = f"now asks {question(match)!r}" if state is SessionState.BLOCKED else state.value
            return Outcomes(
                Outcome.OK, f"answered {asks!r} with {choice}: the session is {now}", None, details
            )
        return Outcomes(
            Outcome.NOT_VERIFIED,
            f"pressed {key}, but the dialog still asks {asks!r}",
            excerpt(lines),
            details,
        )


def answer_events(origin: Origin, cmd: Command, out: Outcomes) -> list[Event]:
    """The `operator.answer` audit event for a key pressed in a dialog (by `answer`, or by
    `send --answer`): who answered which question with what. None when no key was pressed."""
    details = out.details or {}
    answered = details.get("answered", details)
    if not isinstance(answered, dict) or "key" not in answered:
        return []
    session, asks, choice = cmd.body.session, answered["question"], answered["choice"]
    return [
        origin.event(
            session,
            "operator.answer",
            f"{session}: {cmd.issued_by} answered {asks!r} with {choice}",
            SourceKind.OPERATOR,
            payload={**answered, "command_id": cmd.command_id, "issued_by": cmd.issued_by},
            tags=["operator", "answer"],
        )
    ]
