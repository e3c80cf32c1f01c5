"""`fleet deploy` into a real second host: a network namespace with its own address and a
real OpenSSH server, reached with asyncssh; the shipped unit files and NATS templates."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.natsserver.embedded import nats_server_binary
from tests.support.fleet import BIN, REPO, wait_for
from tests.support.netns import (
    SecondHost,
    second_host_env,
    skip_reason,
    snapshot_wheelhouse,
    stub_roster,
)

DEPLOY = REPO / "deploy"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = skip_reason()
    if reason:  # before building: nothing here is used without a second host
        pytest.skip(reason)
    return snapshot_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture(scope="module")
def second_host(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Iterator[SecondHost]:
    # One host for the module: the tests after the first deploy only dry-run against it.
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with second_host_env(tmp_path_factory.mktemp("second-host"), wheelhouse) as host:
        yield host


@pytest.mark.root
def test_deploy_into_a_second_host_then_unchanged(second_host: SecondHost) -> None:
    from tests.system.test_events_delivery import send_prompts, stored

    host = second_host
    roster = stub_roster(host.tmp / "roster.toml")
    plan = host.deploy("--dry-run", roster=roster, build=True)
    assert plan.returncode == 0, plan.stderr
    assert "dry-run" in plan.stdout and "venv: install" in plan.stdout, plan.stdout
    assert not (host.remote_dir / "agent.toml").exists()  # a dry run writes nothing

    first = host.deploy(roster=roster)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "changed" in first.stdout, first.stdout

    # Files as promised: config and supervisor there, the agent running inside the namespace.
    config = host.remote_dir / "agent.toml"
    assert f'servers = ["{host.fleet.nats.url}"]' in config.read_text()
    supervisor = int((host.remote_dir / "supervisor.pid").read_text())
    assert supervisor in host.ns.pids()

    rows = host.fleet.ps("--tenant", host.tenant)
    assert {(r["host"], r["host_state"]) for r in rows} == {("h2", "ok")}
    assert rows[0]["session"]["name"] == "coder"

    # Events cross the veth into the controller's store.
    wait_for(lambda: (host.remote_dir / "state" / "logs" / "coder.log").exists(), what="capture on")
    send_prompts(host.tmux_socket, "coder", ["cross the veth"])
    wait_for(
        lambda: (
            {"run.started", "run.completed"}
            <= {r["event_type"] for r in stored(host.fleet, host.tenant, "coder")}
        ),
        timeout=30,
        what="the remote run stored",
    )

    again = host.deploy(roster=roster)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "unchanged" in again.stdout, again.stdout
    # Same supervisor: nothing was restarted.
    assert int((host.remote_dir / "supervisor.pid").read_text()) == supervisor

    # A changed roster is a change: the agent restarts under the same supervisor loop.
    stub_roster(roster, work="0.3")
    changed = host.deploy(roster=roster)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "config: write" in changed.stdout and "service: restart" in changed.stdout


@pytest.mark.root
def test_unknown_host_key_is_refused_unless_accepted(second_host: SecondHost) -> None:
    host = second_host
    empty = host.tmp / "empty_known_hosts"
    empty.write_text("")
    refused = host.deploy("--known-hosts", str(empty), "--dry-run")
    assert refused.returncode == 1
    assert "step 'connect' failed" in refused.stderr
    assert "--accept-new-host-key" in refused.stderr

    accepted = host.deploy("--known-hosts", str(empty), "--accept-new-host-key", "--dry-run")
    assert accepted.returncode == 0, accepted.stderr
    assert host.ns.ns_addr in empty.read_text()  # trusted from now on

    # A different key for a known host is never accepted, even with --accept-new-host-key.
    other = host.tmp / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    empty.write_text(f"{host.ns.ns_addr} {other.with_suffix('.pub').read_text()}")
    mismatch = host.deploy("--known-hosts", str(empty), "--accept-new-host-key", "--dry-run")
    assert mismatch.returncode == 1
    assert "step 'connect' failed" in mismatch.stderr


@pytest.mark.root
def test_failed_step_is_named_with_remote_output(second_host: SecondHost) -> None:
    result = second_host.deploy("--remote-python", "python2.5-nowhere", "--dry-run")
    assert result.returncode == 1
    assert "step 'probe' failed" in result.stderr
    assert "python2.5-nowhere" in result.stderr  # the remote shell's own complaint

    # The namespace has no systemd: the default mode says so and names the way out.
    result = second_host.deploy("--systemd", "--dry-run")
    assert result.returncode == 1
    assert "step 'probe' failed: systemd is not running" in result.stderr
    assert "--no-systemd" in result.stderr


def test_unit_files_pass_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # A template is verified through an instance of it.
    shutil.copy(DEPLOY / "fleet-agent@.service", tmp_path / "fleet-agent@acme.service")
    shutil.copy(DEPLOY / "fleet-controller.service", tmp_path / "fleet-controller.service")
    for unit in ("fleet-agent@acme.service", "fleet-controller.service"):
        result = subprocess.run(
            [analyze, "verify", str(tmp_path / unit)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
        )
        assert result.returncode == 0, result.stderr
        # Only the backoff keys of systemd >= 254 may be unknown to an older systemd.
        problems = [
            line
            for line in result.stderr.splitlines()
            if line.strip() and "RestartSteps" not in line and "RestartMaxDelaySec" not in line
        ]
        assert problems == [], problems


@pytest.mark.parametrize("template", ["single.conf", "cluster-node.conf", "leafnode.conf"])
def test_nats_templates_are_valid(template: str) -> None:
    result = subprocess.run(
        [str(nats_server_binary()), "-t", "-c", str(DEPLOY / "nats" / template)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_help_names_the_options() -> None:
    result = subprocess.run(
        [str(BIN / "fleet"), "deploy", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    for option in ("--tenant", "--host-id", "--dry-run", "--accept-new-host-key", "--no-systemd"):
        assert option in result.stdout


def test_the_packaged_unit_is_the_one_in_deploy() -> None:
    # The wheel ships controller/deploy/templates/ for installs without a source tree: same bytes.
    repo = Path(__file__).resolve().parents[2]
    packaged = repo / "controller" / "deploy" / "templates" / "fleet-agent@.service"
    assert packaged.read_bytes() == (repo / "deploy" / "fleet-agent@.service").read_bytes()
