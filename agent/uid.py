"""Running a tenant's sessions as the tenant's Linux user.

A host agent started as root must not hand root to its agent sessions: they run code an AI
wrote. The policy is a pure function (:func:`session_identity`); the mechanics are an argv
prefix (``setpriv``) that every tmux call goes through, so the tmux server — and with it
every pane — is owned by the tenant's uid, and a socket under ``/tmp/tmux-<uid>/`` that
other tenants cannot open.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class UidError(RuntimeError):
    """The configured identity cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Identity:
    uid: int
    gid: int
    name: str
    home: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What to run sessions as: ``run_as`` None means "as this process already is"."""

    run_as: Identity | None
    warning: str | None = None


def resolve(user: str | int) -> Identity:
    """A Linux user by name or uid."""
    try:
        entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except KeyError:
        raise UidError(f"no such Linux user: {user!r}") from None
    return Identity(uid=entry.pw_uid, gid=entry.pw_gid, name=entry.pw_name, home=entry.pw_dir)


def session_identity(
    euid: int, tenant: str, tenant_user: Identity | None, allow_root: bool
) -> Decision:
    """Who the sessions of ``tenant`` run as, given who the agent runs as.

    - not root: as the agent itself (it cannot switch); a different configured user is
      worth a warning, because the operator expected isolation they do not get;
    - root with a tenant user: as that user, with a warning that the agent itself is root;
    - root without one: refused, unless ``allow_root`` says root sessions are intended.
    """
    if euid != 0:
        if tenant_user is not None and tenant_user.uid != euid:
            return Decision(
                None,
                f"tenant {tenant} is configured to run as {tenant_user.name} "
                f"(uid {tenant_user.uid}) but fleet-agent runs as uid {euid} and cannot "
                f"switch: sessions run as uid {euid}",
            )
        return Decision(None)
    if tenant_user is not None and tenant_user.uid != 0:
        return Decision(
            tenant_user,
            f"fleet-agent runs as root; sessions of tenant {tenant} start as "
            f"{tenant_user.name} (uid {tenant_user.uid}). Run the agent as that user instead.",
        )
    if allow_root:
        return Decision(None, f"sessions of tenant {tenant} run as root (--allow-root)")
    raise UidError(
        f"fleet-agent runs as root and tenant {tenant} has no Linux user: configure one "
        "(run_as_user) or pass --allow-root to run its sessions as root"
    )


def setpriv_binary() -> str:
    found = shutil.which("setpriv")
    if found is None:
        raise UidError("setpriv (util-linux) is needed to run sessions as another user")
    return found


def as_user_prefix(ident: Identity | None) -> list[str]:
    """An argv prefix that runs the rest as ``ident`` (nothing if None).

    setpriv rather than a preexec setuid: it sets the user's supplementary groups, drops
    inheritable capabilities, and resets the environment (HOME, USER, PATH of the target
    user): nothing of root's environment, secrets included, reaches a tenant's sessions.
    Works the same for a tmux client (whose first call starts the server) as for any command.
    """
    if ident is None:
        return []
    return [
        setpriv_binary(),
        f"--reuid={ident.uid}",
        f"--regid={ident.gid}",
        "--init-groups",
        "--inh-caps=-all",
        "--reset-env",
        "--",
    ]


def as_user(ident: Identity | None, argv: Sequence[str]) -> list[str]:
    return [*as_user_prefix(ident), *argv]


def private_dir(path: Path, ident: Identity | None) -> Path:
    """Create ``path`` (0700) owned by ``ident``: a tenant's outbox, logs and captures."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if ident is not None and os.geteuid() == 0:
        os.chown(path, ident.uid, ident.gid)
    path.chmod(0o700)
    return path
