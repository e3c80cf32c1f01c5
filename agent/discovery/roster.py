"""The roster: the sessions this host agent is responsible for.

One list, owned here. It starts as the configured sessions; `spawn` adds ephemeral workers
and the supervisor removes them when they end. The session table, the supervisor and the
operations all read and change this one object, so they cannot disagree about what is managed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from agent.config import SessionSpec


class Roster:
    def __init__(self, specs: Iterable[SessionSpec] = ()) -> None:
        self._specs = list(specs)

    def __iter__(self) -> Iterator[SessionSpec]:
        # A copy: callers remove entries while they walk it (the supervisor's cleanup).
        return iter(list(self._specs))

    def __len__(self) -> int:
        return len(self._specs)

    def get(self, name: str) -> SessionSpec | None:
        return next((s for s in self._specs if s.name == name), None)

    def names(self) -> set[str]:
        return {s.name for s in self._specs}

    def add(self, spec: SessionSpec) -> None:
        self._specs.append(spec)

    def remove(self, name: str) -> None:
        self._specs[:] = [s for s in self._specs if s.name != name]
