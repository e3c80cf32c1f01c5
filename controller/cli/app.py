"""`fleet`: the operator CLI and the controller daemon. Thin: parse, call, print.

Every command module defines its commands at module level and names them on the root app in
its ``register(app)``; the modules share controller.cli.common, never this module.
"""

from __future__ import annotations

import typer

from controller.cli import (
    attention,
    daemons,
    deploy,
    doctor,
    events,
    fleet,
    init,
    install,
    operators,
    report,
    steer,
    tenancy,
    top,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="agentfleet operator CLI",
)
for module in (fleet, steer, events, report, deploy, tenancy, operators, daemons, init):
    module.register(app)
attention.register(app)
top.register(app)
install.register(app)
doctor.register(app)


def main() -> None:
    app()
