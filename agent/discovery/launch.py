"""The argv a session's pane runs, so that the roster's `env` reaches the process.

tmux's `new-session -e KEY=VALUE` sets the session environment, but for a detached session
tmux 3.x then overwrites PATH with the PATH of the tmux *client* (here: the agent, i.e.
systemd's minimal PATH). A roster `env.PATH` was ignored and `command = "claude"` exited 127
in a restart loop. So the pane runs `env KEY=VALUE … command` instead: env(1) sets every
variable, PATH included, then execs the command (same pid, so the process tree still shows
the runtime), and `respawn-pane` re-runs the same wrapper.

A bare command name is resolved on the session's PATH, not the agent's, so a name that is
not there fails with one clear log line at launch instead of a silent 127 loop.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence

from agent.discovery.envfile import EnvFileError, read_env_file

log = logging.getLogger(__name__)

# What env(1) takes as NAME=VALUE (a key with "=" or a leading "-" would be misread).
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A string command is run by this shell, like tmux runs one (`default-shell -c`).
SHELL = "/bin/sh"


def env_binary() -> str:
    """env(1) by absolute path: the agent's own PATH may be anything."""
    for candidate in ("/usr/bin/env", "/bin/env"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("env") or "/usr/bin/env"


def resolve_bare(name: str, env: Mapping[str, str]) -> str | None:
    """`name` found on the session's PATH (the agent's when the roster sets none)."""
    if "/" in name:
        return name
    return shutil.which(name, path=env.get("PATH", os.environ.get("PATH")))


def session_env(
    fleet: Mapping[str, str], env_file: str | None, env: Mapping[str, str], *, session: str = ""
) -> dict[str, str]:
    """A session's variables: the fleet's own, then its `env_file` (read now, so an edited
    file counts at the next launch), then the roster's `env`, the most specific, last."""
    from_file: dict[str, str] = {}
    if env_file:
        try:
            from_file = read_env_file(env_file)
        except EnvFileError as exc:
            # Checked at config load; gone since: launch with the rest, and say so once.
            log.warning("session %s: %s; launching without it", session or "?", exc)
    return {**fleet, **from_file, **env}


def session_argv(
    command: str | Sequence[str] | None, env: Mapping[str, str], *, session: str = ""
) -> list[str] | None:
    """The argv for tmux to exec for this session (None: tmux's default shell, no env)."""
    if command is None or (isinstance(command, str) and not command.strip()):
        if "PATH" not in env:
            return None  # tmux's `-e` covers every variable but PATH
        # Not a login shell: /etc/profile would reset PATH again.
        argv: list[str] = [os.environ.get("SHELL") or SHELL]
    elif isinstance(command, str):
        words = _split(command)
        if len(words) == 1 and resolve_bare(words[0], env) is None:
            _not_found(words[0], env, session)
        argv = [SHELL, "-c", command]
    else:
        argv = list(command)
        found = resolve_bare(argv[0], env)
        if found is None:
            _not_found(argv[0], env, session)
        else:
            argv[0] = found
    return [env_binary(), *(f"{k}={v}" for k, v in env.items() if _NAME.match(k)), *argv]


def _split(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return [command]


def _not_found(name: str, env: Mapping[str, str], session: str) -> None:
    where = "the session's PATH" if "PATH" in env else "the agent's PATH (roster sets no PATH)"
    log.warning(
        "session %s: command %r is not on %s (%s); it will exit 127",
        session or "?",
        name,
        where,
        env.get("PATH", os.environ.get("PATH", "")),
    )
