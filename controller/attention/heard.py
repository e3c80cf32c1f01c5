"""What other replicas said about attention items: their acks and snoozes as ``Action``s, and
``Hearsay``, the short memory of what was said about items this replica does not hold yet.

Every replica opens its own items from its own scans and its own copy of the event stream, so
an item another replica acked may not be open here yet (its scan came first): the ack is
remembered for ``HEARD_KEEP_S`` and applied when the item opens. The same memory keeps the
id another replica gave an item (its `attention.opened`), so this one opens it under that id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

HEARD_KEEP_S = 600.0  # a scan of every host takes under a minute (docs/protocol.md)
MAX_HEARD = 10_000
# Two replicas date a condition of their own clock (a host down) apart by a tick or two: the
# same condition within this much is one item.
SINCE_SLACK_S = 10.0

Order = tuple[float, str, str, float]


@dataclass(frozen=True, slots=True)
class Action:
    """An ack or snooze, as its `attention.acked|snoozed` event carries it to every replica."""

    item_id: str
    what: str  # acked, snoozed
    at: float  # wall time it was done: the latest wins
    by: str
    until: float | None = None  # snoozed until
    key: str | None = None  # the item's condition key and since (None: an older event)
    since: float | None = None

    def order(self) -> Order:
        return (self.at, self.what, self.by, self.until or 0.0)


def near(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= SINCE_SLACK_S


@dataclass(slots=True)
class Heard:
    item_id: str
    key: str | None
    since: float | None
    action: Action | None  # None: only that the item opened there
    at: float  # wall time heard


class Hearsay:
    def __init__(self, keep_s: float = HEARD_KEEP_S, most: int = MAX_HEARD) -> None:
        self.keep_s, self.most = keep_s, most
        self._by_id: dict[str, Heard] = {}  # oldest heard first
        self._by_key: dict[str, str] = {}  # condition key -> the id heard last for it

    def __len__(self) -> int:
        return len(self._by_id)

    def hear(self, heard: Heard) -> None:
        old = self._by_id.pop(heard.item_id, None)
        if old is not None and old.action is not None:
            if heard.action is None or heard.action.order() < old.action.order():
                heard.action = old.action  # the latest action stands, whatever came after
        self._by_id[heard.item_id] = heard
        if heard.key is not None:
            self._by_key[heard.key] = heard.item_id
        while len(self._by_id) > self.most:
            self._forget(next(iter(self._by_id)))

    def take(
        self, item_id: str, key: str, since: float, taken: Callable[[str], bool]
    ) -> Heard | None:
        """What was heard of the item about to open as ``item_id`` (by that id, else by its
        condition at about its since, under an id not ``taken`` here), forgotten once taken."""
        heard = self._by_id.get(item_id)
        if heard is None:
            other = self._by_id.get(self._by_key.get(key, ""))
            if other is None or not near(other.since, since) or taken(other.item_id):
                return None
            heard = other
        self._forget(heard.item_id)
        return heard

    def expire(self, now: float) -> None:
        for item_id, heard in list(self._by_id.items()):
            if now - heard.at <= self.keep_s:
                break  # oldest first: the rest are fresher
            self._forget(item_id)

    def _forget(self, item_id: str) -> None:
        heard = self._by_id.pop(item_id)
        if heard.key is not None and self._by_key.get(heard.key) == item_id:
            del self._by_key[heard.key]
