"""Run on a deploy target by `fleet deploy` (sent as the text of `python3 -c`), before the
target's Python version is known: plain Python 3, standard library only, one JSON line out.
Never imported by agentfleet itself.

argv: TENANT REMOTE_DIR MODE, MODE being supervisor | system | user.
"""

import hashlib
import json
import os
import platform
import pwd
import socket
import subprocess
import sys


def digest(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def service_state(tenant, mode):
    if mode == "supervisor":
        return {}
    ctl = ["systemctl"] + (["--user"] if mode == "user" else [])
    unit = "fleet-agent@" + tenant

    def query(verb):
        # No capture_output: it must run (and report its version) on any Python 3.
        r = subprocess.run([*ctl, verb, unit], stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: UP022
        return r.stdout.decode().strip()

    return {"running": query("is-active") == "active", "enabled": query("is-enabled") == "enabled"}


def supervisor_state(base):
    pid = read(os.path.join(base, "supervisor.pid"))
    # The pid must still be our supervisor: after a reboot it may belong to anything.
    running = pid.isdigit() and "fleet-supervise" in read("/proc/" + pid + "/cmdline")
    return {"running": running, "enabled": False}


def main(tenant, remote_dir, mode):
    me = pwd.getpwuid(os.getuid())
    # The system unit runs as the tenant's user (User=%i); otherwise the login user runs it.
    run_as = tenant if mode == "system" else me.pw_name
    try:
        home, exists = pwd.getpwnam(run_as).pw_dir, True
    except KeyError:
        home, exists = "/nonexistent", False
    base = remote_dir.replace("~", home, 1) if remote_dir.startswith("~") else remote_dir
    base = os.path.abspath(base or os.path.join(home, ".local/share/agentfleet-agent", tenant))
    if mode == "system":
        unit_dir, env_dir = "/etc/systemd/system", "/etc/agentfleet"
    else:
        unit_dir = os.path.join(me.pw_dir, ".config/systemd/user")
        env_dir = os.path.join(me.pw_dir, ".config/agentfleet")
    paths = {
        "config": os.path.join(base, "agent.toml"),
        "creds": os.path.join(base, "creds"),
        "supervisor": os.path.join(base, "fleet-supervise.sh"),
        "unit": os.path.join(unit_dir, "fleet-agent@.service"),
        "env": os.path.join(env_dir, "agent-" + tenant + ".env"),
    }
    try:
        manifest = json.loads(read(os.path.join(base, "wheels", "MANIFEST.json")) or "{}")
    except ValueError:
        manifest = {}
    out = {
        "user": me.pw_name,
        "uid": os.getuid(),
        "hostname": socket.gethostname(),
        "python": list(sys.version_info[:2]),
        "machine": platform.machine(),
        "libc": list(platform.libc_ver()),
        "systemd": os.path.isdir("/run/systemd/system"),
        "run_as": run_as,
        "run_as_exists": exists,
        "base": base,
        "paths": paths,
        "digests": {k: digest(p) for k, p in paths.items()},
        "manifest": manifest,
        "installed": read(os.path.join(base, "venv", ".fleet-installed")),
    }
    out.update(supervisor_state(base) if mode == "supervisor" else service_state(tenant, mode))
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
