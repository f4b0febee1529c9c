"""The ``Bus`` contract: fire-and-forget fan-out between nodes.

A bus carries bytes on named channels to every subscriber of that channel,
on this node and (for Redis) on every other node. Delivery is at-most-once
and unordered across publishers but ordered per publisher and channel;
correctness never rests on the bus — clients detect version gaps and catch up
from the store. ``tests/contract/test_bus.py`` checks every backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

__all__ = ["Bus", "Handler", "Subscription"]

#: Called with each message's bytes, in publish order per publisher.
Handler = Callable[[bytes], Awaitable[None] | None]


@runtime_checkable
class Subscription(Protocol):
    async def unsubscribe(self) -> None:
        """Stop delivery to this handler. Idempotent."""


@runtime_checkable
class Bus(Protocol):
    async def open(self) -> None:
        """Connect. Idempotent."""

    async def close(self) -> None:
        """Disconnect and drop every subscription. Idempotent."""

    async def publish(self, channel: str, message: bytes) -> None:
        """Send ``message`` to every subscriber of ``channel`` (including this node's)."""

    async def subscribe(self, channel: str, handler: Handler) -> Subscription:
        """Deliver every later message on ``channel`` to ``handler`` until unsubscribed."""
