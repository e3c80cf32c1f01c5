"""Placeholder: filled in by the work on its issue (register() adds its commands)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
