"""The stub agent: a real interactive TTY program that behaves like an AI coding agent.

It lets the whole fleet (tmux, detection, emission contract, cancel, takeover) run and be
tested where no AI agent is installed. Screen strings, exact (agent/runtimes/stub.toml
and tests rely on them)::

    stub> hello                                idle prompt (PROMPT)
    run r-1a2b3c4d started: hello
      working: step 1/3 ...                    one permanent line per step
      tool call: lookup / tool result: lookup ok
      / busy 1.2s (ctrl-c to cancel)           live status line, on a TTY, only while working
    result: done: hello (3 steps, 3.0s)        or "result: error: ...", "result: declined: ..."
    cancelled: run r-1a2b3c4d at step 2/3      after Ctrl-C during a run
    Proceed? [y/N]                             /confirm; erased once answered

Each run also prints emission-contract blocks (one JSON object per block, on one line).
Directives: ``/confirm TEXT`` asks first, ``/fail TEXT`` ends in an error, ``/sleep N TEXT``
works N seconds. Stdlib only: it must start anywhere the package's Python runs.
"""

# Long on purpose: one standalone program; its screen strings and run states read side by side.
from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from agent.stub.term import Terminal, isatty, no_echo, sigint_raises

EVENTS_BEGIN = "<!--FLEET_EVENTS_BEGIN-->"
EVENTS_END = "<!--FLEET_EVENTS_END-->"
PROMPT = "stub> "
CONFIRM_QUESTION = "Proceed? [y/N] "
CANCEL_HINT = "(ctrl-c to cancel)"
EMIT_MODES = ("all", "none", "malformed", "partial")
ENV_PREFIX = "FLEET_STUB_"
TOOL = "lookup"
_SPINNER = "|/-\\"
_TICK_S = 0.2
_MAX_PROMPT_CHARS = 2000
_SHOWN_PROMPT_CHARS = 60


@dataclass(frozen=True)
class StubConfig:
    work_seconds: float = 3.0
    steps: int = 3
    emit: str = "all"  # one of EMIT_MODES
    ignore_input: bool = False
    name: str = "stub"


@dataclass(frozen=True)
class Task:
    """One prompt with its directive taken apart."""

    prompt: str
    text: str
    confirm: bool = False
    fail: bool = False
    seconds: float | None = None


@dataclass
class _Run:
    id: str
    task: Task
    steps: int
    seconds: float
    started_at: float = field(default_factory=time.monotonic)
    step: int = 0
    seq: int = 0
    asking: bool = False  # the confirm question is on screen


def parse_task(prompt: str) -> Task:
    word, _, rest = prompt.partition(" ")
    rest = rest.strip()
    if word == "/confirm":
        return Task(prompt, rest or "confirm", confirm=True)
    if word == "/fail":
        return Task(prompt, rest or "fail", fail=True)
    if word == "/sleep":
        number, _, text = rest.partition(" ")
        try:
            seconds = float(number)
        except ValueError:
            return Task(prompt, prompt)
        if 0 <= seconds <= 86400:
            return Task(prompt, text.strip() or f"sleep {number}", seconds=seconds)
    return Task(prompt, prompt)


def _shown(text: str) -> str:
    one_line = " ".join(text.split())
    if len(one_line) <= _SHOWN_PROMPT_CHARS:
        return one_line
    return one_line[: _SHOWN_PROMPT_CHARS - 3] + "..."


class Stub:
    def __init__(self, config: StubConfig, inp: TextIO, out: TextIO) -> None:
        self.config = config
        self.inp = inp
        self.term = Terminal(out)
        self._echo_input = not isatty(inp)  # no terminal echoes piped input: do it here
        self._tty_fd = inp.fileno() if isatty(inp) else None
        self._title_name = "-".join(config.name.split()) or "stub"

    def serve(self) -> int:
        with sigint_raises():
            self._banner()
            try:
                while True:
                    try:
                        line = self._read(PROMPT, "idle")
                    except KeyboardInterrupt:
                        self.term.newline()  # the tty echoed ^C: redraw on a fresh line
                        continue
                    if line is None:
                        break
                    if line.strip() and not self.config.ignore_input:
                        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C
                            if not self.run(parse_task(line.strip()[:_MAX_PROMPT_CHARS])):
                                break
            finally:
                self.term.status(None)
                self.term.title(f"stub:{self._title_name} exited")
            self.term.lines("bye")
        return 0

    def run(self, task: Task) -> bool:
        """One run; False when input ended during it (the stub then exits)."""
        seconds = self.config.work_seconds if task.seconds is None else task.seconds
        run = _Run(f"r-{secrets.token_hex(4)}", task, self.config.steps, seconds)
        try:
            self._work(run)
        except KeyboardInterrupt:
            self._cancel(run, "interrupted")
        except EOFError:
            self._cancel(run, "input closed")
            return False
        return True

    def _work(self, run: _Run) -> None:
        task, n = run.task, run.steps
        self.term.lines(f"run {run.id} started: {_shown(task.text)}")
        if self.config.emit == "malformed":
            self._emit_malformed(run)
        # The prompt as sent, directive included: what the controller matches a `send` to.
        self._emit(run, "run.started", f"run started: {_shown(task.text)}", prompt=task.prompt)
        if task.confirm and not self._confirm(run):
            self._finish(run, "declined", f"declined: {_shown(task.text)}")
            return
        self.term.title(f"stub:{self._title_name} working")
        with no_echo(self._tty_fd):
            for step in range(1, n + 1):
                run.step = step
                self.term.lines(f"  working: step {step}/{n} ...")
                if step == 1:
                    self.term.lines(f"  tool call: {TOOL}")
                    call = self._emit(
                        run, "tool_call", f"tool call: {TOOL}", tool=TOOL, input=_shown(task.text)
                    )
                self._sleep(run, run.seconds / n)
                if step == 1:
                    self.term.lines(f"  tool result: {TOOL} ok")
                    self._emit(
                        run,
                        "tool_result",
                        f"tool result: {TOOL} ok",
                        tool=TOOL,
                        ok=True,
                        links=[{"type": "caused_by", "target": call}],
                    )
        self.term.status(None)
        if task.fail:
            self._finish(run, "error", f"error: simulated failure ({_shown(task.text)})")
        else:
            elapsed = time.monotonic() - run.started_at
            steps = f"{n} step{'s' if n != 1 else ''}"
            self._finish(run, "ok", f"done: {_shown(task.text)} ({steps}, {elapsed:.1f}s)")

    def _sleep(self, run: _Run, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            elapsed = time.monotonic() - run.started_at
            spin = _SPINNER[int(elapsed / _TICK_S) % len(_SPINNER)]
            self.term.status(f"  {spin} busy {elapsed:.1f}s {CANCEL_HINT}")
            time.sleep(min(_TICK_S, left))

    def _confirm(self, run: _Run) -> bool:
        run.asking = True
        answer = self._read(CONFIRM_QUESTION, "blocked")
        if answer is None:
            raise EOFError
        run.asking = False
        if self._tty_fd is not None:
            self.term.erase_answered_question()
        yes = answer.strip().lower() in ("y", "yes")
        self.term.lines(f"  confirm: {'yes' if yes else 'no'}")
        return yes

    def _read(self, prompt: str, state: str) -> str | None:
        self.term.title(f"stub:{self._title_name} {state}")
        self.term.ask(prompt)
        line = self.inp.readline()
        if not line:
            self.term.newline()
            return None
        if self._echo_input:
            self.term.lines(line.rstrip("\n"))
        return line

    def _finish(self, run: _Run, status: str, result: str) -> None:
        self.term.title(f"stub:{self._title_name} idle")
        self.term.lines(f"result: {result}")
        if status == "error":
            self._emit(
                run,
                "run.error",
                result,
                status=status,
                error="simulated failure",
                severity="error",
                operator_action_required=True,
                confidence=1.0,
            )
            return
        refs = [f"stub://{self._title_name}/{run.id}/result.txt"] if status == "ok" else []
        verb = "completed" if status == "ok" else status
        self._emit(
            run,
            "run.completed",
            f"{verb}: {_shown(run.task.text)}",
            status=status,
            result=result,
            operator_action_required=False,
            artifact_refs=refs,
            risk_detected=False,
            confidence=0.9 if status == "ok" else 1.0,
        )

    def _cancel(self, run: _Run, reason: str) -> None:
        self.term.status(None)
        if run.asking:
            self.term.erase_line()  # the question must not outlive the run on screen
        self.term.title(f"stub:{self._title_name} idle")
        where = f"step {run.step}/{run.steps}" if run.step else "start"
        self.term.lines(f"cancelled: run {run.id} at {where}")
        self._emit(
            run,
            "run.cancelled",
            f"cancelled at {where}",
            reason=reason,
            step=run.step,
            steps=run.steps,
        )

    # Top-level event fields the emission contract knows; everything else is payload.
    _TOP_LEVEL = (
        "severity",
        "operator_action_required",
        "artifact_refs",
        "risk_detected",
        "confidence",
        "links",
    )

    def _emit(self, run: _Run, event_type: str, summary: str, **fields: Any) -> str:
        run.seq += 1
        key = f"{run.id}:{run.seq}"
        mode = self.config.emit
        if mode == "all" or (mode == "partial" and event_type in ("run.started", "tool_call")):
            top = {k: fields.pop(k) for k in self._TOP_LEVEL if k in fields}
            event = {
                "event_type": event_type,
                "summary": summary,
                "idempotency_key": key,
                "tags": ["stub"],
                "payload": {"run_id": run.id, **fields},
                **top,
            }
            self.term.lines(EVENTS_BEGIN, json.dumps(event, separators=(",", ":")), EVENTS_END)
        return key

    def _emit_malformed(self, run: _Run) -> None:
        broken = f'{{"event_type":"run.started","summary":"run {run.id}","payload":{{oops'
        self.term.lines(EVENTS_BEGIN, broken, EVENTS_END)

    def _banner(self) -> None:
        c = self.config
        mode = " (ignoring input)" if c.ignore_input else ""
        self.term.lines(
            f"agentfleet stub agent {c.name!r}, pid {os.getpid()}{mode}: type a prompt.",
            f"  {c.steps} steps in {c.work_seconds:g}s, emit {c.emit}; directives: "
            "/confirm, /fail, /sleep N. Ctrl-C cancels a run, Ctrl-D quits.",
        )


def _env_flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _bounded(kind: type[float] | type[int], low: float, high: float) -> Any:
    def convert(text: str) -> float | int:
        value = kind(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its error message
    return convert


def parse_args(argv: list[str] | None, env: Mapping[str, str]) -> StubConfig:
    """Flags override ``FLEET_STUB_*`` variables, which a roster can set per session."""
    p = argparse.ArgumentParser(prog="fleet-agent stub", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--work-seconds",
        type=_bounded(float, 0, 86400),
        default=env.get(f"{ENV_PREFIX}WORK_SECONDS", "3"),
        help="seconds a run works (env FLEET_STUB_WORK_SECONDS; default 3)",
    )
    p.add_argument(
        "--steps",
        type=_bounded(int, 1, 1000),
        default=env.get(f"{ENV_PREFIX}STEPS", "3"),
        help="progress steps per run (env FLEET_STUB_STEPS; default 3)",
    )
    p.add_argument(
        "--emit",
        choices=EMIT_MODES,
        default=env.get(f"{ENV_PREFIX}EMIT", "all"),
        help="emission blocks to print (env FLEET_STUB_EMIT; default all)",
    )
    p.add_argument(
        "--ignore-input",
        action="store_true",
        default=_env_flag(env.get(f"{ENV_PREFIX}IGNORE_INPUT")),
        help="read and discard prompts, never run (env FLEET_STUB_IGNORE_INPUT=1)",
    )
    p.add_argument(
        "--name",
        default=env.get(f"{ENV_PREFIX}NAME", "stub"),
        help="shown in the banner and title (env FLEET_STUB_NAME)",
    )
    ns = p.parse_args(argv)
    if ns.emit not in EMIT_MODES:  # a default from the environment skips `choices`
        p.error(f"argument --emit: invalid choice: {ns.emit!r} (choose from {EMIT_MODES})")
    return StubConfig(ns.work_seconds, ns.steps, ns.emit, ns.ignore_input, ns.name)


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_args(argv, os.environ)
    except SystemExit as exc:  # --help, or a bad flag (argparse has printed why)
        return exc.code if isinstance(exc.code, int) else 0
    return Stub(config, sys.stdin, sys.stdout).serve()


if __name__ == "__main__":
    sys.exit(main())
