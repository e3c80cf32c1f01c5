"""The life every daemon shares: startup → main loop → shutdown, under the exit flags.

A stop request (signal or ``flags.request_exit()``) ends a startup that waits (for NATS, say)
and the main loop; shutdown always runs, shielded, once startup has begun; a second request
cancels even that (``ExitFlags.force_exit``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from common.signals import ExitFlags, watch_signals

Step = Callable[[], Awaitable[None]]


async def run_daemon(
    flags: ExitFlags,
    startup: Step,
    main_loop: Step,
    shutdown: Step,
    *,
    install_signal_handlers: bool = True,
) -> None:
    async with anyio.create_task_group() as tg:
        if install_signal_handlers:
            tg.start_soon(watch_signals, flags)
        with anyio.CancelScope() as scope:
            flags.scope = scope
            await until_exit_requested(flags, startup)
            try:
                await main_loop()
            finally:
                with anyio.CancelScope(shield=True):
                    await shutdown()
        tg.cancel_scope.cancel()


async def until_exit_requested(flags: ExitFlags, step: Step) -> None:
    """Run ``step``, cut short by a stop request (startup may wait forever for NATS)."""
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await flags.should_exit.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        await step()
        tg.cancel_scope.cancel()
