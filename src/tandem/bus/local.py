"""``LocalBus``: the in-process bus of a single node (the zero-configuration default).

Owns nothing but a ``Fanout``: ``publish`` hands the message straight to this
process's subscribers, synchronously, in order. Imports asyncio (through
``fanout``); never storage, the network or ``documents``.
"""

from __future__ import annotations

from tandem.bus.base import Handler, Subscription
from tandem.bus.fanout import DEFAULT_MAX_PENDING, Fanout

__all__ = ["LocalBus"]


class LocalBus:
    """In-process ``Bus``: one node, no network, same contract as ``RedisBus``.

    ``publish`` returns after every synchronous handler has run and every async
    handler's call is queued (see ``tandem.bus.fanout`` for the delivery rule).
    Using the bus before ``open()`` or after ``close()`` raises ``RuntimeError``.
    """

    def __init__(self, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self._fanout = Fanout(max_pending=max_pending)
        self._state = "new"

    def __repr__(self) -> str:
        return f"LocalBus({self._state})"

    async def open(self) -> None:
        """Start accepting subscriptions and messages. Idempotent."""
        if self._state == "closed":
            raise RuntimeError("LocalBus is closed; create a new one")
        self._state = "open"

    async def close(self) -> None:
        """Drop every subscription. Idempotent."""
        self._state = "closed"
        await self._fanout.close()

    async def publish(self, channel: str, message: bytes) -> None:
        """Deliver ``message`` to every subscriber of ``channel``, in order."""
        if self._state != "open":
            raise RuntimeError(f"LocalBus.publish on a {self._state} bus")
        self._fanout.deliver(channel, message)

    async def subscribe(self, channel: str, handler: Handler) -> Subscription:
        """Deliver every later message on ``channel`` to ``handler`` until unsubscribed."""
        if self._state != "open":
            raise RuntimeError(f"LocalBus.subscribe on a {self._state} bus")
        subscription, _ = self._fanout.add(channel, handler)
        return subscription
