"""What `fleet init` finds: this user's tmux servers (every socket in tmux's socket dir),
each session's primary pane, and what runs there by the host agent's own rules (process
tree, runtime specs), with the `command`, `cwd` and `env` a roster would need to take the
session as it is.

Towards tmux it is read-only: `list-sessions` and `list-panes`, nothing else.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from agent.discovery.launch import SHELL as LAUNCH_SHELL
from agent.discovery.procs import ProcessTable
from agent.discovery.runtimes import SHELL, RuntimeSpec, observed_runtime
from agent.discovery.sessions import primary_panes
from agent.discovery.tmux import Pane, Tmux, TmuxError
from protocol.ids import IdError, validate_session

PROBE_TIMEOUT_S = 5.0  # a stopped (SIGSTOP) tmux server never answers: skip it, don't hang
PROBES_AT_ONCE = 8
_SEP = "\x1f"
_DETAILS = _SEP.join(("#{pane_id}", "#{pane_current_path}", "#{pane_start_command}"))
# How a tmux client says the socket has no server behind it (a stale socket file).
_GONE = ("no server running", "error connecting", "server exited unexpectedly")
_SHELL_FLAGS = {"-l", "-i", "--login", "--interactive"}
_C_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "v": "\v", "f": "\f"}
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# A clean environment (env -i): the agent's launch wraps the adopted command again anyway.
_ENV_CLEAN = {"-i", "-", "--ignore-environment"}
_FLEET_VARS = {"FLEET_TENANT", "FLEET_HOST", "FLEET_SESSION"}  # the agent sets them anew


@dataclass(frozen=True)
class Found:
    """One session, its primary pane, and what the roster would say about it."""

    name: str
    pid: int | None
    runtime: str
    known: bool  # False: no detection rules for this runtime, its state shows as unknown
    cwd: str
    command: str | list[str] | None  # None: the runtime's default (a plain shell: tmux's)
    env: dict[str, str]  # set by an `env K=V …` in front of the command
    process: str  # the cmdline of the pane's process
    skipped: str | None = None  # why it is not in the roster


@dataclass(frozen=True)
class Server:
    socket: str
    note: str | None = None  # why it was not read (stale socket file, no answer)
    sessions: list[Found] = field(default_factory=list)

    @property
    def adoptable(self) -> list[Found]:
        return [s for s in self.sessions if s.skipped is None]


def socket_dir() -> Path:
    """Where tmux keeps its sockets (and so where `tmux -L NAME` looks): tmux's own rule."""
    return Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"


def socket_names(directory: Path, only: str | None) -> list[str]:
    if only is not None:
        if "/" in only or not _is_socket(directory / only):
            raise ValueError(f"no tmux socket {only!r} in {directory}")
        return [only]
    try:
        return sorted(p.name for p in directory.iterdir() if _is_socket(p))
    except FileNotFoundError:
        return []


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


async def probe(name: str, procs: ProcessTable, specs: dict[str, RuntimeSpec]) -> Server:
    tmux = Tmux(name)  # no -f: a config file would only matter to a server we start
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            await tmux.run("list-sessions", "-F", "#{session_name}")
            panes = primary_panes(await tmux.list_panes())
            details = await tmux.run("list-panes", "-a", "-F", _DETAILS)
    except TimeoutError:
        return Server(name, f"no answer within {PROBE_TIMEOUT_S:.0f}s, skipped")
    except TmuxError as exc:
        if any(word in str(exc) for word in _GONE):
            return Server(name, "stale socket file (no server), skipped")
        return Server(name, f"unreadable ({exc}), skipped")
    extra = {}
    for line in details.splitlines():
        pane_id, _, rest = line.partition(_SEP)
        cwd, _, start = rest.partition(_SEP)
        extra[pane_id] = (cwd, start)
    found = [
        classify(pane, *extra.get(pane.pane_id, ("", "")), procs, specs) for pane in panes.values()
    ]
    return Server(name, None if found else "no sessions", found)


def classify(
    pane: Pane, cwd: str, start: str, procs: ProcessTable, specs: dict[str, RuntimeSpec]
) -> Found:
    cmdlines = procs.tree_cmdlines(pane.pid) if pane.pid and not pane.dead else []
    runtime = observed_runtime(cmdlines, specs)
    process = cmdlines[0] if cmdlines else ""
    known = runtime is not None
    if runtime is None:  # nothing we have rules for: name it after its program
        runtime = _program(process) or "unknown"
    skipped = None
    try:
        validate_session(pane.session)
    except IdError as exc:
        skipped = str(exc)
    if skipped is None and pane.dead:
        # In a roster, the agent would respawn it: that is not adopting it as it is.
        skipped = "its process has exited (dead pane)"
    command, env = roster_command(start, runtime, specs.get(SHELL))
    return Found(pane.session, pane.pid, runtime, known, cwd, command, env, process, skipped)


def _program(cmdline: str) -> str:
    word = cmdline.split(" ", 1)[0].rsplit("/", 1)[-1].lstrip("-")
    return re.sub(r"[^A-Za-z0-9_-]", "-", word)[:64].strip("-")


def roster_command(
    start: str, runtime: str, shell: RuntimeSpec | None
) -> tuple[str | list[str] | None, dict[str, str]]:
    """The roster's `command` and `env` from tmux's `pane_start_command`, the argv tmux was
    given: one word is a shell command (a roster string), several an exec'd list."""
    try:
        argv, env = _unwrap(split_start(start))
    except ValueError:
        return start, {}
    if not argv:
        return None, env  # tmux's default shell: the roster's default does the same
    words = argv if len(argv) > 1 else argv[0].split()  # one word: a line for the shell
    plain = shell is not None and shell.matches(words[0]) and set(words[1:]) <= _SHELL_FLAGS
    if runtime == SHELL and plain:
        return None, env  # an interactive shell, no script: what the roster's default runs
    return (argv[0] if len(argv) == 1 else argv), env


def split_start(text: str) -> list[str]:
    """Words as tmux quotes them (args_escape): vis(3) C-style escapes (`\\$`, `\\n`,
    `\\ooo`) inside and outside quotes, where shlex would keep the backslash of `\\$`."""
    words: list[str] = []
    word: list[str] = []
    quote, started, i = "", False, 0
    while i < len(text):
        c = text[i]
        i += 1
        if c == "\\" and i < len(text):
            octal = re.match(r"[0-7]{1,3}", text[i:])
            if octal:
                word.append(chr(int(octal.group(), 8)))
                i += octal.end()
            else:
                word.append(_C_ESCAPES.get(text[i], text[i]))
                i += 1
            started = True
        elif quote:
            quote = "" if c == quote else quote
            if quote:
                word.append(c)
        elif c in "\"'":
            quote, started = c, True
        elif c in " \t":
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(c)
            started = True
    if quote:
        raise ValueError("unterminated quote")
    return [*words, "".join(word)] if started else words


def _unwrap(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """`env K=V … CMD` → CMD and its variables, and the agent's own launch wrapper
    (`env FLEET_…=… sh -c CMD`, agent/discovery/launch.py) → CMD: adopted as it is, it would
    run inside a second wrapper, and its stale FLEET_* values would win over the new ones."""
    if not argv or Path(argv[0]).name != "env":
        return argv, {}
    rest, env = argv[1:], {}
    while rest and (_ASSIGN.match(rest[0]) or rest[0] in _ENV_CLEAN):
        word = rest.pop(0)
        key, _, value = word.partition("=")
        if word not in _ENV_CLEAN and key not in _FLEET_VARS:
            env[key] = value
    if rest and rest[0].startswith("-"):
        return argv, {}  # an env(1) option we do not model: keep the command as it is
    if len(rest) == 3 and rest[0] == LAUNCH_SHELL and rest[1] == "-c":
        rest = [rest[2]]
    return rest, env


async def discover(
    directory: Path, only: str | None, specs: dict[str, RuntimeSpec]
) -> list[Server]:
    names = socket_names(directory, only)
    procs = ProcessTable.snapshot()
    results: dict[str, Server] = {}
    limiter = anyio.CapacityLimiter(PROBES_AT_ONCE)

    async def one(name: str) -> None:
        async with limiter:
            results[name] = await probe(name, procs, specs)

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(one, name)
    return [results[n] for n in names]
