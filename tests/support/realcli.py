"""Run the real agent CLIs (Claude Code, Codex, pi) in a private tmux server, for tests.

- `cli_bin_dir()` / `cli_path(runtime)`: the CLIs `./dev.sh setup` installs into
  `$AGENTFLEET_CLI_DIR` (default `${XDG_CACHE_HOME:-~/.cache}/agentfleet/agent-clis`, as
  dev.sh), under `node_modules/.bin`.
- `require_cli(runtime)`: the binary, or `pytest.skip` naming how to install it; when `CI` is
  set a missing CLI fails the test instead (CI installs them through dev.sh).
- `Tmux`: one private tmux server (`tmux -L <unique>`) that only kills itself.
- `Pane.wait_for(...)`: deadline-based polling of `capture-pane`, never a fixed sleep.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support import runtime_home

REPO = Path(__file__).resolve().parents[2]
PINNED = {
    "claude": ("@anthropic-ai/claude-code", "2.1.197"),
    "codex": ("@openai/codex", "0.171.0"),
    "pi": ("@mariozechner/pi-coding-agent", "0.73.1"),
}

BRAILLE_SPINNER = re.compile(r"^[\u2801-\u28ff]")
PASTE_PLACEHOLDER = re.compile(r"\[(Pasted text #\d+|Pasted Content \d+ chars|paste #\d+)")
PI_LOADER = re.compile(r"^\s*[\u2801-\u28ff] Working\.\.\.", re.M)


@dataclass(frozen=True)
class Signs:
    """What the screen and the pane title show per state, for these pinned versions
    (docs/runtimes.md; the recorded screens are in tests/fixtures/screens/<runtime>/)."""

    idle: re.Pattern[str]  # on screen when ready for a prompt (may also show while working)
    working: Callable[[str, str], bool]  # (screen, title) -> busy
    approval: re.Pattern[str] | None  # a tool-approval dialog; None: the runtime never asks

    def is_idle(self, screen: str, title: str) -> bool:
        return (
            bool(self.idle.search(screen))
            and not self.working(screen, title)
            and not (self.approval and self.approval.search(screen))
        )

    def is_working(self, screen: str, title: str) -> bool:
        return self.working(screen, title)

    def is_blocked(self, screen: str, title: str) -> bool:
        return bool(self.approval and self.approval.search(screen))


SIGNS: dict[str, Signs] = {
    # Claude Code: footer "? for shortcuts" when idle, "esc to interrupt" while it works (the
    # spinner line "✻ Philosophising… (3s · ↓ 14 tokens)" above the input box); the title is
    # "✳ Claude Code" when idle or blocked and starts with a braille spinner while it works.
    "claude": Signs(
        idle=re.compile(r"\? for shortcuts"),
        working=lambda s, t: "esc to interrupt" in s or bool(BRAILLE_SPINNER.match(t)),
        approval=re.compile(r"Do you want to proceed\?"),
    ),
    # Codex: the composer (U+203A) over "? for shortcuts" shows the same idle or streaming;
    # only the title tells: a braille spinner before "<thread> | <dir>" while it works,
    # "[ ! ] Action Required | ..." (blinking "[ . ]") on an approval.
    # While it loads, Codex already draws the composer over a bare "? for shortcuts" (and the
    # header says "loading"); "← for agents · ? for shortcuts" shows once it is ready.
    "codex": Signs(
        idle=re.compile(r"← for agents · \? for shortcuts"),
        working=lambda s, t: bool(BRAILLE_SPINNER.match(t)) or "esc to interrupt" in s,
        approval=re.compile(r"Would you like to run the following command\?"),
    ),
    # pi: "⠋ Working..." over the editor while it works; the footer (context use, model id)
    # always shows; the title is a constant "π - <dir>". pi never asks before a tool call.
    "pi": Signs(
        idle=re.compile(r"\d+\.\d%/\d+k"),
        working=lambda s, t: PI_LOADER.search(s) is not None,
        approval=None,
    ),
}

# Any dialog the seeding is meant to prevent; seen on an idle screen it fails the test.
FIRST_RUN_DIALOGS = re.compile(
    r"Quick safety check|trust this folder|Do you trust|Detected a custom API key|"
    r"Choose the text style|Select login method|Sign in with ChatGPT|Provide your own API key|"
    r"Welcome to Claude Code|update available|Update available|Allow Codex to work",
    re.I,
)


def cli_dir() -> Path:
    d = os.environ.get("AGENTFLEET_CLI_DIR")
    if d:
        return Path(d)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "agentfleet" / "agent-clis"


def cli_bin_dir() -> Path:
    return cli_dir() / "node_modules" / ".bin"


def cli_path(runtime: str) -> Path | None:
    p = cli_bin_dir() / runtime
    return p if os.access(p, os.X_OK) else None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_cli(runtime: str) -> Path:
    """The installed CLI; skip (or, under CI, fail) when it is not there."""
    import pytest

    if shutil.which("tmux") is None:
        if in_ci():
            pytest.fail("tmux is not installed (./dev.sh setup installs it)")
        pytest.skip("tmux is not installed")
    p = cli_path(runtime)
    if p is None:
        pkg, version = PINNED[runtime]
        why = (
            f"{runtime} CLI not installed in {cli_bin_dir()} "
            f"({pkg}@{version}; `./dev.sh setup` installs it with npm)"
        )
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)
    return p


def node_path_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with the CLI cache's .bin and node's directory first on PATH."""
    env = dict(env)
    parts = [str(cli_bin_dir())]
    node = shutil.which("node")
    if node:
        parts.append(str(Path(node).parent))
    env["PATH"] = ":".join([*parts, env.get("PATH", "/usr/bin:/bin")])
    return env


class Timeout(AssertionError):
    pass


@dataclass
class Pane:
    tmux: Tmux
    target: str  # session name

    def capture(self, escapes: bool = False) -> str:
        args = ["capture-pane", "-p", "-t", self.target]
        if escapes:
            args.insert(2, "-e")
        return self.tmux.run(*args).stdout

    def title(self) -> str:
        return self.tmux.run(
            "display-message", "-p", "-t", self.target, "#{pane_title}"
        ).stdout.rstrip("\n")

    def dead(self) -> bool:
        out = self.tmux.run(
            "display-message", "-p", "-t", self.target, "#{pane_dead}", check=False
        ).stdout.strip()
        return out != "0"

    def send_keys(self, *keys: str, literal: bool = False) -> None:
        args = ["send-keys", "-t", self.target]
        if literal:
            args.append("-l")
        self.tmux.run(*args, *keys)

    def paste(self, text: str, bracketed: bool = True) -> None:
        """Text in through a tmux buffer; `-p` wraps it in bracketed-paste markers when the
        application asked for them."""
        name = "af-" + uuid.uuid4().hex[:8]
        subprocess.run(
            [*self.tmux.base, "load-buffer", "-b", name, "-"],
            input=text.encode(),
            check=True,
            capture_output=True,
        )
        args = ["paste-buffer", "-d", "-b", name, "-t", self.target]
        if bracketed:
            args.insert(1, "-p")
        self.tmux.run(*args)

    def wait_for(
        self,
        cond: str | re.Pattern[str] | Callable[[str, str], bool],
        timeout: float = 20.0,
        interval: float = 0.1,
        what: str = "",
    ) -> str:
        """Poll the screen (and title) until `cond` holds; return that screen. `cond` is a
        substring, a regex searched in the screen, or a predicate (screen, title) -> bool."""
        if isinstance(cond, str):
            needle = cond

            def check(screen: str, title: str) -> bool:
                return needle in screen
        elif isinstance(cond, re.Pattern):
            pattern = cond

            def check(screen: str, title: str) -> bool:
                return pattern.search(screen) is not None
        else:
            check = cond
        deadline = time.monotonic() + timeout
        screen = title = ""
        while True:
            screen = self.capture()
            title = self.title()
            if check(screen, title):
                return screen
            if self.dead():
                raise Timeout(
                    f"pane {self.target} exited while waiting for {what or cond!r}:\n{screen}"
                )
            if time.monotonic() >= deadline:
                raise Timeout(
                    f"timed out after {timeout}s waiting for {what or cond!r}; "
                    f"title {title!r}, screen:\n{screen}"
                )
            time.sleep(interval)

    def wait_gone(self, cond: str | re.Pattern[str], timeout: float = 20.0) -> str:
        if isinstance(cond, str):
            return self.wait_for(lambda s, t: cond not in s, timeout, what=f"no {cond!r}")
        return self.wait_for(lambda s, t: cond.search(s) is None, timeout, what=f"no {cond!r}")


class Tmux:
    """A private tmux server on its own socket; `kill()` ends that server only."""

    def __init__(self, label: str = "realcli", width: int = 120, height: int = 40) -> None:
        self.socket = f"af-{label}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.base = ["tmux", "-L", self.socket, "-f", "/dev/null"]
        self.width, self.height = width, height

    @classmethod
    def existing(cls, socket: str) -> Tmux:
        """A client of a server someone else started (e.g. a host agent's): never `kill()` it."""
        tmux = cls.__new__(cls)
        tmux.socket, tmux.base = socket, ["tmux", "-L", socket]
        tmux.width, tmux.height = 0, 0
        return tmux

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], check=check, capture_output=True, text=True)

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Pane:
        """A detached session running `argv` with exactly `env` (tmux's own environment is
        replaced: `env -i`), in `cwd`. The pane stays after the process exits."""
        cmd = shlex.join(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv])
        self.run(
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            str(self.width),
            "-y",
            str(self.height),
            "-c",
            str(cwd),
            cmd,
        )
        self.run("set-option", "-t", name, "remain-on-exit", "on")
        self.run("set-option", "-g", "allow-rename", "off")
        self.run("set-option", "-g", "set-titles", "on")
        return Pane(self, name)

    def kill(self) -> None:
        self.run("kill-server", check=False)

    def __enter__(self) -> Tmux:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def submit(pane: Pane, text: str, timeout: float = 10.0, submit_key: str = "Enter") -> None:
    """Paste `text` (bracketed), wait until the input shows it, then press `submit_key`.

    Waiting for the echo instead of a fixed settle: Codex takes an Enter that arrives in the
    same burst as typed text as part of a paste, Claude Code drops an Enter that arrives in the
    same burst as a bracketed paste. A long paste shows as a placeholder: "[Pasted text #1]"
    (Claude), "[Pasted Content 1206 chars]" (Codex), "[paste #1 1206 chars]" (pi)."""
    first = text.strip().splitlines()[0][:30] if text.strip() else ""
    pane.paste(text)
    pane.wait_for(
        lambda s, t: first in s or PASTE_PLACEHOLDER.search(s) is not None,
        timeout,
        what=f"the pasted text {first!r} in the input",
    )
    pane.send_keys(submit_key)


def start_runtime(
    tmux: Tmux,
    runtime: str,
    root: Path,
    model_url: str,
    *,
    name: str | None = None,
    binary: Path | None = None,
    **seed_kw: object,
) -> tuple[Pane, runtime_home.Launch]:
    """Seed `runtime` under `root` against `model_url`, start it in `tmux`; (pane, launch).
    `binary` defaults to `require_cli(runtime)` (skips the test when not installed)."""
    binary = binary or require_cli(runtime)
    cwd = root / "project"
    launch = runtime_home.seed(runtime, root, cwd, model_url, binary=str(binary), **seed_kw)
    pane = tmux.start(name or runtime, launch.argv, node_path_env(launch.env), cwd)
    return pane, launch
