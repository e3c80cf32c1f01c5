"""Signal handling shaped like uvicorn's: handlers only set flags; the daemon acts on them."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field

import anyio
from anyio import CancelScope

log = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM)


@dataclass
class ExitFlags:
    """``should_exit`` on the first signal (graceful), ``force_exit`` on the second."""

    should_exit: anyio.Event = field(default_factory=anyio.Event)
    force_exit: bool = False
    scope: CancelScope | None = None  # cancelled on force_exit

    def request_exit(self) -> None:
        if self.should_exit.is_set():
            self.force_exit = True
            if self.scope is not None:
                self.scope.cancel()
        self.should_exit.set()


async def watch_signals(flags: ExitFlags) -> None:
    with anyio.open_signal_receiver(*HANDLED) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            flags.request_exit()
