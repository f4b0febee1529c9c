"""Per-node delivery of bus messages to local handlers, shared by every backend.

Owns the channel → subscriptions table and the delivery rule: a handler is
called in publish order; if it returns an awaitable (an ``async def``
handler), that awaitable is queued on the subscription's one worker task and
awaited there, in order, one at a time. Synchronous handlers cost one call and
no task; an async handler costs one queue append, and one task per
subscription (not per message). A raising handler is logged and skipped; a
slow async handler only delays its own queue, which is bounded: past
``max_pending`` its messages are dropped (the bus is at-most-once, see
``base.py``). Imports asyncio only; never storage, the network or ``documents``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from tandem.bus.base import Handler

__all__ = ["DEFAULT_MAX_PENDING", "Fanout", "LocalSubscription"]

logger = logging.getLogger("tandem.bus")

#: Awaitables queued for one async handler before further messages to it are dropped.
DEFAULT_MAX_PENDING = 10_000

OnEmpty = Callable[[str], Awaitable[None]]


class LocalSubscription:
    """One handler on one channel; ``unsubscribe()`` returns once it will never run again."""

    __slots__ = (
        "_closed",
        "_fanout",
        "_handler",
        "_on_empty",
        "_overflowing",
        "_pending",
        "_wakeup",
        "_worker",
        "channel",
    )

    def __init__(
        self, fanout: Fanout, channel: str, handler: Handler, on_empty: OnEmpty | None
    ) -> None:
        self.channel = channel
        self._fanout = fanout
        self._handler = handler
        self._on_empty = on_empty
        self._pending: deque[Awaitable[None]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._overflowing = False

    def deliver(self, message: bytes) -> None:
        """Call the handler now; queue what it returns, if anything. Never raises."""
        try:
            result = self._handler(message)
        except Exception:
            logger.exception("bus handler for channel %r failed", self.channel)
            return
        if result is not None:
            self._enqueue(result)

    def _enqueue(self, awaitable: Awaitable[None]) -> None:
        if self._closed:
            _discard(awaitable)
            return
        if len(self._pending) >= self._fanout.max_pending:
            _discard(awaitable)
            if not self._overflowing:
                self._overflowing = True
                logger.warning(
                    "bus handler for channel %r is %d messages behind; dropping",
                    self.channel,
                    len(self._pending),
                )
            return
        self._pending.append(awaitable)
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name=f"tandem-bus-handler:{self.channel}"
            )
        else:
            assert self._wakeup is not None
            self._wakeup.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        pending, wakeup = self._pending, self._wakeup
        while not self._closed:
            while pending and not self._closed:
                awaitable = pending.popleft()
                try:
                    await awaitable
                except Exception:
                    logger.exception("bus handler for channel %r failed", self.channel)
            self._overflowing = False
            wakeup.clear()
            if not self._closed:
                await wakeup.wait()

    async def unsubscribe(self) -> None:
        """Stop delivery to this handler, dropping what is queued for it. Idempotent.

        Safe to call from inside the handler itself: the current call finishes
        and nothing after it runs.
        """
        if self._closed:
            return
        emptied = self._fanout._remove(self)
        await self._stop()
        if emptied and self._on_empty is not None:
            await self._on_empty(self.channel)

    async def _stop(self) -> None:
        self._closed = True
        while self._pending:
            _discard(self._pending.popleft())
        worker, self._worker = self._worker, None
        if worker is None or worker is asyncio.current_task():
            if self._wakeup is not None:
                self._wakeup.set()  # a self-unsubscribing worker exits after this call
            return
        worker.cancel()
        try:
            await worker
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we were cancelled too, not just the worker


def _discard(awaitable: Awaitable[None]) -> None:
    """Drop a queued awaitable; a coroutine is closed so it never warns 'never awaited'."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


class Fanout:
    """Channel → subscriptions on this node; ``deliver`` is the hot path of every broadcast."""

    def __init__(self, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        # Tuples, replaced on change: ``deliver`` iterates without copying, and a
        # handler that (un)subscribes mid-delivery does not disturb the loop.
        self._channels: dict[str, tuple[LocalSubscription, ...]] = {}

    def add(
        self, channel: str, handler: Handler, on_empty: OnEmpty | None = None
    ) -> tuple[LocalSubscription, bool]:
        """Register ``handler``; returns the subscription and whether the channel was new.

        ``on_empty(channel)`` is awaited when this subscription's unsubscribe
        leaves the channel without subscribers.
        """
        subscription = LocalSubscription(self, channel, handler, on_empty)
        existing = self._channels.get(channel, ())
        self._channels[channel] = (*existing, subscription)
        return subscription, not existing

    def _remove(self, subscription: LocalSubscription) -> bool:
        """Unregister; True when the channel is left without subscribers."""
        existing = self._channels.get(subscription.channel, ())
        remaining = tuple(s for s in existing if s is not subscription)
        if remaining:
            self._channels[subscription.channel] = remaining
            return False
        self._channels.pop(subscription.channel, None)
        return bool(existing)

    def deliver(self, channel: str, message: bytes) -> None:
        """Hand ``message`` to every subscriber of ``channel`` on this node. Never raises."""
        for subscription in self._channels.get(channel, ()):
            subscription.deliver(message)

    def channels(self) -> list[str]:
        """Channels with at least one subscriber."""
        return list(self._channels)

    def has(self, channel: str) -> bool:
        """True when ``channel`` has a subscriber on this node."""
        return channel in self._channels

    async def close(self) -> None:
        """Stop every subscription (without ``on_empty`` callbacks)."""
        subscriptions = [s for subs in self._channels.values() for s in subs]
        self._channels.clear()
        for subscription in subscriptions:
            await subscription._stop()
