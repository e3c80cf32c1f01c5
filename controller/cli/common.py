"""What every `fleet` command module shares: the common options, one way to fail, and one way
to talk to the controller. Command modules import this, never controller.cli.app."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn

import anyio
import msgspec
import typer
from rich.console import Console

from controller.cli.client import (
    ClientError,
    ControllerClient,
    resolve_operator,
    resolve_settings,
)

console = Console()

NatsOpt = Annotated[
    str | None,
    typer.Option(
        "--nats",
        envvar="FLEET_NATS_URL",
        help="NATS URL(s) of the fleet, comma-separated (default: the context `fleet up` wrote)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
LogLevelOpt = Annotated[str, typer.Option(help="debug|info|warning|error")]

# The CLI reports an unreachable controller within this bound, whatever the network does.
CLI_DEADLINE_S = 3.0


def print_json(value: Any) -> None:
    """One JSON document on one line of stdout (what `--json` prints)."""
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def fail(message: str, code: int = 2) -> NoReturn:
    # Plain write: one line, never wrapped to the terminal width.
    sys.stderr.write(f"fleet: {message}\n")
    raise typer.Exit(code)


def run_client(
    fn: Callable[[ControllerClient], Awaitable[Any]],
    nats_url: str | None,
    deadline: float | None = CLI_DEADLINE_S,
) -> Any:
    """Connect, run ``fn`` with the client, and turn every failure into one line and an exit."""

    async def main() -> Any:
        settings = resolve_settings(nats_url)
        operator = resolve_operator(nats_url)
        with anyio.fail_after(deadline):
            async with ControllerClient(settings, operator=operator) as client:
                return await fn(client)

    try:
        return anyio.run(main)
    except BaseExceptionGroup as group:  # from a task group (watch, follow): one real cause
        first = _leaf(group)
        if isinstance(first, BrokenPipeError):
            raise typer.Exit(0) from None
        if isinstance(first, ClientError | ValueError):
            fail(str(first), getattr(first, "exit_code", 2))
        raise
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        raise typer.Exit(0) from None
    except ClientError as exc:
        fail(str(exc), exc.exit_code)
    except TimeoutError:
        fail(
            f"no answer from the controller at {','.join(resolve_settings(nats_url).servers)} "
            f"within {deadline or CLI_DEADLINE_S:.0f}s"
        )
    except ValueError as exc:  # a bad id or argument, caught before anything was sent
        fail(str(exc))


def _leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _leaf(first) if isinstance(first, BaseExceptionGroup) else first
