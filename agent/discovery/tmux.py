"""tmux on one private socket (`tmux -L NAME`): discover panes, launch sessions.

Every call is one tmux client process; discovery is exactly one `list-panes -a` per tick.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from agent.discovery.launch import session_argv

# Fields of one pane, in order. \x1f (unit separator) cannot appear in a session name that
# tmux accepts from us, and tmux prints unprintable characters of titles escaped.
_FIELDS = (
    "session_name",
    "window_index",
    "pane_index",
    "pane_id",
    "pane_pid",
    "pane_dead",
    "pane_dead_status",
    "pane_dead_signal",
    "window_activity",
    "pane_title",
    "pane_width",
    "pane_height",
    "pane_pipe",
)
_SEP = "\x1f"
_FORMAT = _SEP.join(f"#{{{f}}}" for f in _FIELDS)

# Set on the server when we start it, and per window when we create one, so that a pane whose
# process exits stays visible as dead instead of vanishing.
TMUX_CONF = """\
set-option -g remain-on-exit on
set-option -g history-limit 20000
set-option -g exit-empty off
"""


class TmuxError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Pane:
    session: str
    window_index: int
    pane_index: int
    pane_id: str
    pid: int | None
    dead: bool
    dead_status: int | None
    dead_signal: int | None
    activity: float | None
    title: str
    width: int
    height: int
    piped: bool


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def parse_list_panes(output: str) -> list[Pane]:
    panes = []
    for line in output.splitlines():
        parts = line.split(_SEP)
        if len(parts) != len(_FIELDS):
            continue
        f = dict(zip(_FIELDS, parts, strict=True))
        panes.append(
            Pane(
                session=f["session_name"],
                window_index=_int(f["window_index"]) or 0,
                pane_index=_int(f["pane_index"]) or 0,
                pane_id=f["pane_id"],
                pid=_int(f["pane_pid"]),
                dead=f["pane_dead"] == "1",
                dead_status=_int(f["pane_dead_status"]),
                dead_signal=_int(f["pane_dead_signal"]),
                activity=float(f["window_activity"]) if f["window_activity"].isdigit() else None,
                title=f["pane_title"],
                width=_int(f["pane_width"]) or 0,
                height=_int(f["pane_height"]) or 0,
                piped=f["pane_pipe"] == "1",
            )
        )
    return panes


def literal(arg: str) -> str:
    """``arg`` as one literal argument in a tmux command line we build from argv.

    tmux splits its argv into commands at every argument that *ends* in ``;`` (not only at a
    lone ``;``), so a spawn argument or roster command word like ``5;`` would end our command
    and start one of the caller's choosing (``kill-session -t =coder``). A trailing ``\\;``
    is tmux's escape for a literal ``;``."""
    return arg[:-1] + "\\;" if arg.endswith(";") else arg


def _clean_env() -> dict[str, str]:
    # Inside a tmux pane TMUX points at *that* server; our calls must only see our socket.
    return {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}


class Tmux:
    """A tmux server on a private socket."""

    def __init__(
        self, socket_name: str, conf_path: Path | None = None, prefix: Sequence[str] = ()
    ) -> None:
        self.socket_name = socket_name
        self.conf_path = conf_path
        # e.g. setpriv …: every tmux call, and so the server and its panes, as the tenant.
        self.prefix = list(prefix)
        # (server pid, session id) of every session this object created: `fleet up` removes
        # exactly these at its end, never a user's session of the same name or another server's.
        self.created: list[tuple[int, str]] = []

    def _argv(self, args: Sequence[str]) -> list[str]:
        argv = [*self.prefix, "tmux", "-L", self.socket_name]
        if self.conf_path is not None:
            argv += ["-f", str(self.conf_path)]
        return [*argv, *args]

    async def run(self, *args: str, check: bool = True, stdin: bytes | None = None) -> str:
        # stdin: data for `load-buffer -` (text on argv would show in every `ps`)
        result = await anyio.run_process(
            self._argv(args), input=stdin, check=False, env=_clean_env()
        )
        if check and result.returncode != 0:
            raise TmuxError(
                f"tmux {' '.join(args[:2])} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout.decode(errors="replace")

    async def list_panes(self) -> list[Pane]:
        """Every pane on the socket; an absent server means no panes, not an error."""
        result = await anyio.run_process(
            self._argv(["list-panes", "-a", "-F", _FORMAT]), check=False, env=_clean_env()
        )
        if result.returncode != 0:
            err = result.stderr.decode(errors="replace")
            if "no server running" in err or "error connecting" in err or "No such file" in err:
                return []
            raise TmuxError(f"tmux list-panes failed: {err.strip()}")
        return parse_list_panes(result.stdout.decode(errors="replace"))

    async def new_session(
        self,
        name: str,
        command: str | Sequence[str] | None,
        *,
        cwd: str | None,
        env: Mapping[str, str],
        width: int,
        height: int,
    ) -> None:
        args = ["new-session", "-d", "-P", "-F", "#{pid} #{session_id}", "-s", literal(name)]
        args += ["-x", str(width), "-y", str(height)]
        if cwd:
            args += ["-c", literal(os.path.expanduser(cwd))]
        for key, value in env.items():
            args += ["-e", literal(f"{key}={value}")]
        # `-e` alone loses PATH to the client's: the pane runs `env … command` (launch.py).
        args += [literal(a) for a in session_argv(command, env, session=name) or []]
        # Chained in the same client call so the option is set before the pane can exit.
        args += [";", "set-option", "-w", "-t", f"={name}:", "remain-on-exit", "on"]
        pid, _, session_id = (await self.run(*args)).strip().partition(" ")
        if pid.isdigit() and session_id:
            self.created.append((int(pid), session_id))

    async def respawn(self, name: str) -> None:
        await self.run("respawn-pane", "-k", "-t", f"={name}:")

    async def pipe_to(self, pane_id: str, shell_command: str) -> None:
        """Append the pane's output to a command's stdin (`pipe-pane -o`: only if unpiped)."""
        await self.run("pipe-pane", "-o", "-t", pane_id, shell_command)

    async def kill_session(self, name: str) -> None:
        await self.run("kill-session", "-t", f"={name}")

    async def capture(self, target: str, *, escapes: bool = False) -> str:
        args = ["capture-pane", "-p", "-t", target]
        if escapes:
            args.append("-e")
        return await self.run(*args)

    def kill_server_sync(self) -> None:
        subprocess.run(
            self._argv(["kill-server"]), capture_output=True, env=_clean_env(), check=False
        )
