"""Sessions run as their tenant's uid: the policy, and (as root) two real tenant users whose
tmux servers, panes and files stay apart."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.uid import Identity, UidError, as_user, private_dir, resolve, session_identity
from tests.support.fleet import wait_for

ALICE = Identity(uid=1500, gid=1500, name="alice", home="/home/alice")


def test_root_with_a_tenant_user_runs_sessions_as_that_user_and_warns() -> None:
    decision = session_identity(0, "acme", ALICE, allow_root=False)
    assert decision.run_as == ALICE
    assert decision.warning and "runs as root" in decision.warning


def test_root_without_a_tenant_user_is_refused_unless_allowed() -> None:
    with pytest.raises(UidError, match="--allow-root"):
        session_identity(0, "acme", None, allow_root=False)
    allowed = session_identity(0, "acme", None, allow_root=True)
    assert allowed.run_as is None and "root" in (allowed.warning or "")


def test_a_non_root_agent_runs_sessions_as_itself() -> None:
    assert session_identity(1500, "acme", ALICE, allow_root=False).run_as is None
    other = session_identity(1600, "acme", ALICE, allow_root=False)
    assert other.run_as is None and "cannot switch" in (other.warning or "")
    assert session_identity(1600, "acme", None, allow_root=False).warning is None


def test_unknown_users_are_named() -> None:
    with pytest.raises(UidError, match="no such Linux user"):
        resolve(f"nobody-{uuid.uuid4().hex[:8]}")
    assert resolve(0).name == "root"


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("tmux") is None,
    reason="needs root, useradd and tmux",
)


@pytest.fixture
def two_tenants() -> Iterator[tuple[Identity, Identity]]:
    names = [f"ft{tag}{uuid.uuid4().hex[:6]}" for tag in ("a", "b")]
    made: list[str] = []
    try:
        for name in names:
            subprocess.run(
                ["useradd", "--create-home", "--shell", "/bin/sh", name],
                check=True,
                capture_output=True,
            )
            made.append(name)
        yield resolve(names[0]), resolve(names[1])
    finally:
        for name in made:  # the test stopped its tmux servers: nothing of the user runs
            subprocess.run(["userdel", "-r", name], capture_output=True, check=False)


def pane_pid(ident: Identity, socket: str) -> int:
    out = subprocess.run(
        as_user(ident, ["tmux", "-L", socket, "list-panes", "-a", "-F", "#{pane_pid}"]),
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[0])


def uids_of(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(v) for v in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


@needs_root
@pytest.mark.root
def test_each_tenants_sessions_run_as_its_uid_and_cannot_read_the_other(
    two_tenants: tuple[Identity, Identity],
) -> None:
    a, b = two_tenants
    base = Path(tempfile.mkdtemp(prefix="fleet-uid-"))
    base.chmod(0o711)  # traversable, not listable: each tenant reaches only its own dir
    socket = f"fleet-uidtest-{uuid.uuid4().hex[:6]}"
    started: list[Identity] = []
    try:
        dirs = {}
        for ident in (a, b):
            outbox = private_dir(base / ident.name / "outbox", ident)
            logs = private_dir(base / ident.name / "logs", ident)
            os.chown(base / ident.name, ident.uid, ident.gid)
            (base / ident.name).chmod(0o700)
            dirs[ident.name] = (outbox, logs)
        a_outbox, a_logs = dirs[a.name]
        b_outbox, _ = dirs[b.name]
        # Tenant a's session writes its outbox and log; tenant b's session tries to read them.
        script_a = f"echo secret > {a_outbox}/event; echo log > {a_logs}/agent.log; sleep 60"
        script_b = (
            f"cat {a_outbox}/event {a_logs}/agent.log > {b_outbox}/stolen 2> {b_outbox}/err;"
            f" echo $? > {b_outbox}/rc; ls {base / a.name} >> {b_outbox}/err 2>&1; sleep 60"
        )
        for ident, script in ((a, script_a), (b, script_b)):
            subprocess.run(
                as_user(ident, ["tmux", "-L", socket, "new-session", "-d", "-s", "s1", script]),
                check=True,
                capture_output=True,
            )
            started.append(ident)
        wait_for(lambda: (b_outbox / "rc").exists(), what="tenant b's attempt finished")
        assert (a_outbox / "event").read_text() == "secret\n"
        for ident in (a, b):
            pid = pane_pid(ident, socket)
            assert uids_of(pid) == [ident.uid] * 4, (ident, pid)
        assert (b_outbox / "rc").read_text().strip() != "0"
        assert (b_outbox / "stolen").read_text() == ""
        err = (b_outbox / "err").read_text()
        assert err.count("Permission denied") >= 3, err  # outbox, logs, and listing a's dir
        # Nor can b reach a's tmux server (and so a's panes) through its socket.
        peek = subprocess.run(
            as_user(b, ["tmux", "-S", f"/tmp/tmux-{a.uid}/{socket}", "list-panes", "-a"]),
            capture_output=True,
            text=True,
        )
        assert peek.returncode != 0
    finally:
        for ident in started:
            subprocess.run(
                as_user(ident, ["tmux", "-L", socket, "kill-server"]), capture_output=True
            )
        shutil.rmtree(base, ignore_errors=True)
