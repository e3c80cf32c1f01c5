"""Is a session's systemd unit enabled at boot? `yes`/`no` where systemd runs, else `unknown`."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import anyio

from protocol.heartbeat import BootEnabled

# systemctl's answers that mean the unit comes up at boot.
_ENABLED = {"enabled", "enabled-runtime", "static", "indirect", "generated", "alias"}


def systemd_running(root: Path = Path("/run/systemd/system")) -> bool:
    # The check sd_booted() does: this directory exists only when systemd is PID 1.
    return root.is_dir()


class BootUnits:
    """Caches `systemctl is-enabled` answers; one call per unit per ``ttl_s``."""

    def __init__(self, ttl_s: float = 60.0, available: bool | None = None) -> None:
        self.ttl_s = ttl_s
        self._available = available
        self._cache: dict[str, tuple[float, BootEnabled]] = {}

    @property
    def available(self) -> bool:
        if self._available is None:
            self._available = systemd_running() and shutil.which("systemctl") is not None
        return self._available

    async def state(self, unit: str | None) -> BootEnabled:
        if not unit or not self.available:
            return BootEnabled.UNKNOWN
        now = time.monotonic()
        cached = self._cache.get(unit)
        if cached and now - cached[0] < self.ttl_s:
            return cached[1]
        try:
            result = await anyio.run_process(["systemctl", "is-enabled", unit], check=False)
            answer = result.stdout.decode().strip()
            value = BootEnabled.YES if answer in _ENABLED else BootEnabled.NO
        except OSError:
            value = BootEnabled.UNKNOWN
        self._cache[unit] = (now, value)
        return value
