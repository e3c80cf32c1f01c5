"""`fleet answer SESSION CHOICE`: press one key in the dialog a blocked session shows.

The only way the fleet presses a key in a dialog (`send` refuses a blocked session): the
operator names the choice, the host agent presses exactly that key and records an
`operator.answer` event with the question and the choice."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from controller.cli.steer import JsonOpt, NatsOpt, run_command, session_name
from protocol.commands import ANSWER_KEYS, Answer, answer_key


def check_choice(choice: str) -> None:
    """Refuse a choice `answer` would not press, before anything is sent."""
    if answer_key(choice) is None:
        names = ", ".join(sorted(set(ANSWER_KEYS.values())))
        sys.stderr.write(
            f"fleet: cannot answer with {choice!r}: use a menu number or letter (1, y, n) "
            f"or {names}\n"
        )
        raise typer.Exit(2)


def register_answer(app: typer.Typer) -> None:
    @app.command()
    def answer(
        session: Annotated[str, typer.Argument(help="SESSION, HOST/SESSION or T/HOST/SESSION")],
        choice: Annotated[
            str, typer.Argument(help="a menu number or letter (1, y, n) or a key (Escape, Down)")
        ],
        timeout: Annotated[float, typer.Option(help="seconds")] = 10.0,
        json_out: JsonOpt = False,
        nats_url: NatsOpt = None,
    ) -> None:
        """Answer the dialog a blocked session shows. Exit 0 answered (or no dialog open),
        3 the dialog still asks, 1 failed."""
        check_choice(choice)
        run_command(
            session,
            Answer(session=session_name(session), choice=choice, timeout_s=max(1.0, timeout - 2.0)),
            timeout,
            nats_url,
            json_out,
        )
