"""Placeholder: filled in by the evidence work (register() adds the controller API verbs)."""

from __future__ import annotations

from typing import Any


def register(controller: Any) -> None:
    return None
