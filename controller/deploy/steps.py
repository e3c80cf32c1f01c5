"""The wheels `fleet deploy` puts on a host, built locally, and the error every step raises.

The remote host may have no route to a package index, so the agent and every dependency go
over as wheels, pinned to the versions installed here, cached under the user's cache dir by
(agentfleet version, source hash, target interpreter). Every artifact has a fingerprint so a
second deploy can tell that nothing changed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from common.version import VERSION

SOURCE_PARTS = ("protocol", "common", "agent", "controller", "pyproject.toml", "README.md")
CACHE_KEEP = 4  # wheelhouses kept in the cache


class StepError(RuntimeError):
    """A deploy step failed; ``output`` is what the failing command printed."""

    def __init__(self, step: str, message: str, output: str = "") -> None:
        self.step = step
        self.output = output.strip()
        super().__init__(message)

    def __str__(self) -> str:
        text = f"step {self.step!r} failed: {self.args[0]}"
        return f"{text}\n{self.output}" if self.output else text


@dataclass(frozen=True)
class PyTarget:
    """The remote interpreter, as far as wheel compatibility goes."""

    version: tuple[int, int]
    machine: str
    glibc: tuple[int, int] | None

    @property
    def key(self) -> str:
        libc = f"glibc{self.glibc[0]}.{self.glibc[1]}" if self.glibc else "nolibc"
        return f"cp{self.version[0]}{self.version[1]}-{self.machine}-{libc}"

    @classmethod
    def local(cls) -> PyTarget:
        import platform

        name, ver = platform.libc_ver()
        glibc = None
        if name == "glibc" and ver:
            major, minor = ver.split(".")[:2]
            glibc = (int(major), int(minor))
        return cls((sys.version_info.major, sys.version_info.minor), platform.machine(), glibc)


@dataclass(frozen=True)
class Wheelhouse:
    directory: Path
    wheels: dict[str, str]  # file name -> fingerprint (hash of the wheel's RECORD)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.wheels, sort_keys=True).encode()).hexdigest()

    @property
    def agent_wheel(self) -> str:
        return next(n for n in self.wheels if n.startswith("agentfleet-"))

    @property
    def pip_wheel(self) -> str:
        return next(n for n in self.wheels if n.startswith("pip-"))


def wheel_fingerprint(path: Path) -> str:
    """The hash of a wheel's RECORD: it lists the hash of every file, and unlike the zip's
    bytes it does not change when the same source is built twice."""
    try:
        with zipfile.ZipFile(path) as zf:
            record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
            return hashlib.sha256(zf.read(record)).hexdigest()
    except (OSError, zipfile.BadZipFile, StopIteration) as exc:
        raise StepError("wheels", f"{path} is not a usable wheel: {exc}") from None


def source_root() -> Path:
    """The source tree of the running agentfleet (an editable install or a checkout)."""
    try:
        raw = importlib.metadata.distribution("agentfleet").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        raw = None
    if raw:
        url = json.loads(raw).get("url", "")
        if url.startswith("file://") and (Path(url[7:]) / "pyproject.toml").exists():
            return Path(url[7:])
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").exists():
        return here
    raise StepError("wheels", "cannot find the agentfleet source tree to build the wheel from")


def source_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for part in SOURCE_PARTS:
        path = root / part
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                digest.update(str(file.relative_to(root)).encode() + b"\0")
                digest.update(file.read_bytes())
    return digest.hexdigest()


def _run(step: str, argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StepError(step, what, (result.stdout + result.stderr)[-4000:])


def _constraints() -> str:
    # Pin every dependency to what runs here: the remote agent is this exact software.
    lines = {
        f"{d.metadata['Name']}=={d.version}"
        for d in importlib.metadata.distributions()
        if d.metadata["Name"] and d.metadata["Name"].lower() != "agentfleet"
    }
    return "\n".join(sorted(lines)) + "\n"


def _retarget(out: Path, target: PyTarget) -> None:
    """Swap platform wheels built for this interpreter for ones the remote one can load."""
    major, minor = target.version
    platforms: list[str] = []
    if target.glibc:
        platforms += [f"manylinux_2_{m}_{target.machine}" for m in range(target.glibc[1], 16, -1)]
        platforms += [f"manylinux2014_{target.machine}"]
    platforms.append(f"linux_{target.machine}")
    for wheel in sorted(out.glob("*.whl")):
        name, version, *_, tag = wheel.name[:-4].split("-")
        if tag == "any":
            continue
        argv = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check"]
        argv += ["--only-binary=:all:", "--no-deps", "-d", str(out)]
        argv += ["--python-version", f"{major}{minor}", "--implementation", "cp"]
        argv += ["--abi", f"cp{major}{minor}", "--abi", "abi3", "--abi", "none"]
        for plat in platforms:
            argv += ["--platform", plat]
        wheel.unlink()
        _run("wheels", [*argv, f"{name}=={version}"], f"no wheel of {name} for {target.key}")


def _copy_source(root: Path, dest: Path) -> None:
    dest.mkdir()
    for part in SOURCE_PARTS:
        path = root / part
        if path.is_dir():
            shutil.copytree(path, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, dest / part)


def _build(src: Path, out: Path, target: PyTarget, tmp: Path) -> None:
    constraints = tmp / "constraints.txt"
    constraints.write_text(_constraints())
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check"]
    # Build from the copy: pip writes build/ and egg-info into the tree it builds.
    _run("wheels", [*pip, "--no-deps", "-w", str(tmp), str(src)], "building the agent wheel")
    own = next(tmp.glob("agentfleet-*.whl"))
    shutil.copy2(own, out / own.name)
    _run(
        "wheels",
        [*pip, "-w", str(out), "-c", str(constraints), str(own), "pip"],
        "collecting dependency wheels",
    )
    if target != PyTarget.local():
        _retarget(out, target)


def build_wheelhouse(target: PyTarget, cache: Path | None = None) -> Wheelhouse:
    """Wheels of agentfleet and its whole dependency closure (and pip), for ``target``.

    Built from a snapshot of the source tree, so the wheel and its cache key agree even while
    someone edits the tree; cached by (version, source hash, target), the last few kept.
    """
    cache = cache or Path(platformdirs.user_cache_dir("agentfleet")) / "deploy"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fleet-deploy-", dir=cache) as tmp_name:
        tmp = Path(tmp_name)
        _copy_source(source_root(), tmp / "src")
        out = cache / f"{VERSION}-{source_hash(tmp / 'src')[:16]}-{target.key}"
        if not (out / ".complete").exists():
            staged = tmp / "wheels"
            staged.mkdir()
            _build(tmp / "src", staged, target, tmp)
            (staged / ".complete").write_text(VERSION + "\n")
            shutil.rmtree(out, ignore_errors=True)
            staged.rename(out)  # atomic: a parallel deploy sees all of it or none
    (out / ".complete").touch()
    _prune(cache, keep=CACHE_KEEP)
    return load_wheelhouse(out)


def _prune(cache: Path, keep: int) -> None:
    done = sorted(
        (p for p in cache.iterdir() if (p / ".complete").exists()),
        key=lambda p: (p / ".complete").stat().st_mtime,
        reverse=True,
    )
    for old in done[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def load_wheelhouse(directory: Path) -> Wheelhouse:
    """A directory of wheels as they are (prebuilt by CI, or from the cache)."""
    wheels = {p.name: wheel_fingerprint(p) for p in sorted(directory.glob("*.whl"))}
    for prefix in ("agentfleet-", "pip-"):
        if not any(n.startswith(prefix) for n in wheels):
            raise StepError("wheels", f"no {prefix}*.whl in {directory}")
    return Wheelhouse(directory, wheels)
