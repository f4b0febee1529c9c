"""The webhook outbox contract, and its in-memory reference implementation.

Webhook deliveries (``tandem.webhooks``) live in the same database as the
documents, so a restart resends every delivery that was queued and not yet
answered. Three tables (migration ``webhooks``): the deliveries, a cursor per
subscriber URL and document (the highest version a delivery was queued for),
and when each URL was first subscribed.

Rules every backend keeps (``tests/contract/test_outbox.py``):

* ``enqueue`` is atomic and compare-and-set on the cursor: it queues the
  delivery and moves the cursor to ``to_version`` only if the cursor is still
  ``expected`` (None: no cursor yet); otherwise it writes nothing and returns
  False. Two nodes (or a node and its restarted self) can never queue
  overlapping ranges. A delivery's ``id`` is its idempotency key; queuing one
  whose id exists changes nothing.
* ``claim`` returns due deliveries, at most one per (url, doc) (the oldest:
  ranges reach a receiver in order), and leases each for ``lease`` seconds (its
  ``next_attempt`` moves on), so another sender does not take it meanwhile.
* What ``enqueue``, ``retry`` and ``finish`` wrote is durable when they return.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

__all__ = ["Delivery", "MemoryOutbox", "Outbox"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook POST owed to ``url``: ``doc`` changed in ``from_version < v <= to_version``."""

    id: str
    url: str
    doc: str
    from_version: int
    to_version: int
    #: Attempts made so far (0 until the first one fails).
    attempts: int
    #: When it may be (re)sent, seconds since the epoch.
    next_attempt: float
    created: float


class Outbox(Protocol):
    """Durable webhook deliveries (see the module rules)."""

    async def subscribe(self, url: str, now: float) -> float:
        """When ``url`` was first subscribed (``now`` if this is the first time)."""

    async def cursors(self, url: str) -> dict[str, int]:
        """``doc`` → the highest version a delivery to ``url`` was queued for."""

    async def set_cursor(self, url: str, doc: str, version: int) -> None:
        """Record ``version`` as handled for (url, doc) (Python hooks keep their place so)."""

    async def enqueue(self, delivery: Delivery, expected: int | None) -> bool:
        """Queue ``delivery`` if the cursor of (url, doc) is ``expected``; True if it did."""

    async def claim(self, now: float, lease: float, limit: int) -> list[Delivery]:
        """Up to ``limit`` due deliveries, one per (url, doc), each leased until ``now + lease``."""

    async def retry(self, id: str, attempts: int, next_attempt: float) -> None:
        """Record a failed attempt: ``attempts`` so far, next try at ``next_attempt``."""

    async def finish(self, id: str) -> None:
        """Forget a delivery: it was answered with 2xx, or dropped."""

    async def pending(self) -> int:
        """How many deliveries are queued."""

    async def next_due(self) -> float | None:
        """The earliest ``next_attempt`` of any delivery (None when there is none)."""

    async def forget_document(self, doc: str) -> None:
        """Remove every delivery and cursor of ``doc`` (erasing a document)."""


class MemoryOutbox:
    """An ``Outbox`` in a dict: the reference implementation, and the memory store's."""

    def __init__(self) -> None:
        self._deliveries: dict[str, Delivery] = {}
        self._cursors: dict[tuple[str, str], int] = {}
        self._since: dict[str, float] = {}

    async def subscribe(self, url: str, now: float) -> float:
        return self._since.setdefault(url, now)

    async def cursors(self, url: str) -> dict[str, int]:
        return {doc: v for (u, doc), v in self._cursors.items() if u == url}

    async def set_cursor(self, url: str, doc: str, version: int) -> None:
        self._cursors[(url, doc)] = version

    async def enqueue(self, delivery: Delivery, expected: int | None) -> bool:
        key = (delivery.url, delivery.doc)
        if self._cursors.get(key) != expected:
            return False
        self._deliveries.setdefault(delivery.id, delivery)
        self._cursors[key] = delivery.to_version
        return True

    async def claim(self, now: float, lease: float, limit: int) -> list[Delivery]:
        first: dict[tuple[str, str], Delivery] = {}
        for delivery in self._deliveries.values():
            key = (delivery.url, delivery.doc)
            if key not in first or delivery.from_version < first[key].from_version:
                first[key] = delivery
        due = sorted(
            (d for d in first.values() if d.next_attempt <= now), key=lambda d: d.next_attempt
        )[:limit]
        for delivery in due:
            self._deliveries[delivery.id] = replace(delivery, next_attempt=now + lease)
        return due

    async def retry(self, id: str, attempts: int, next_attempt: float) -> None:
        if id in self._deliveries:
            self._deliveries[id] = replace(
                self._deliveries[id], attempts=attempts, next_attempt=next_attempt
            )

    async def finish(self, id: str) -> None:
        self._deliveries.pop(id, None)

    async def pending(self) -> int:
        return len(self._deliveries)

    async def next_due(self) -> float | None:
        return min((d.next_attempt for d in self._deliveries.values()), default=None)

    def rows_of(self, doc: str) -> tuple[int, int]:
        """Deliveries and cursors of ``doc`` (what an erasure must leave at zero)."""
        deliveries = sum(d.doc == doc for d in self._deliveries.values())
        return deliveries, sum(key[1] == doc for key in self._cursors)

    async def forget_document(self, doc: str) -> None:
        self._deliveries = {k: d for k, d in self._deliveries.items() if d.doc != doc}
        self._cursors = {k: v for k, v in self._cursors.items() if k[1] != doc}
