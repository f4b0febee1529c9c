"""One timer for many deadlines: token expiry and WebSocket keepalive of every socket.

Ten thousand idle sockets each holding two or three ``loop.call_later`` handles
(and the closures behind them) cost about a kilobyte apiece; here a deadline is
one small object in a heap, and the event loop holds a single timer, for the
earliest. A cancelled deadline drops its callback at once (so nothing it refers
to stays alive) and leaves the heap when it reaches the top, or when cancelled
ones outnumber the live ones.

A deadline on an object's method can name the function and the object
(``add(delay, Class.method, obj)``) instead of a bound method: one object the
garbage collector tracks less per deadline, and a server keeps two for every
idle socket (docs/performance.md, "The full collection a long-running server
still pays").

Must not import FastAPI, Starlette or uvicorn.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

__all__ = ["Deadline", "Deadlines", "deadlines"]

log = logging.getLogger("tandem.deadlines")

T = TypeVar("T")


class Deadline:
    """``callback(subject)`` (``callback()`` without one) due at ``when`` (event-loop time);
    ``cancel`` forgets both."""

    __slots__ = ("when", "callback", "subject", "_owner")

    def __init__(
        self, when: float, callback: Callable[..., None], subject: object, owner: Deadlines
    ) -> None:
        self.when = when
        self.callback: Callable[..., None] | None = callback
        self.subject = subject
        self._owner = owner

    def __lt__(self, other: Deadline) -> bool:
        return self.when < other.when

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = self.subject = None
            self._owner.cancelled += 1


class Deadlines:
    """A heap of ``Deadline`` objects served by one event-loop timer."""

    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        #: Cancelled deadlines still in the heap.
        self.cancelled = 0

    @overload
    def add(self, delay: float, callback: Callable[[], None]) -> Deadline: ...

    @overload
    def add(self, delay: float, callback: Callable[[T], None], subject: T) -> Deadline: ...

    def add(self, delay: float, callback: Callable[..., None], subject: Any = None) -> Deadline:
        """Call ``callback`` (on the running loop) in ``delay`` seconds: with ``subject``
        as its argument, if one is given (not None)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests): the old one's deadlines died with it
            self._heap.clear()
            self.cancelled = 0
            self._loop, self._timer, self._armed_at = loop, None, float("inf")
        deadline = Deadline(loop.time() + delay, callback, subject, self)
        heapq.heappush(self._heap, deadline)
        if deadline.when < self._armed_at:
            self._arm(deadline.when)
        if self.cancelled > 64 and self.cancelled * 2 > len(self._heap):
            self._compact()
        return deadline

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)
        self._armed_at = when

    def _compact(self) -> None:
        self._heap = [deadline for deadline in self._heap if deadline.callback is not None]
        heapq.heapify(self._heap)
        self.cancelled = 0

    def _fire(self) -> None:
        assert self._loop is not None
        self._timer, self._armed_at = None, float("inf")
        heap = self._heap
        now = self._loop.time()
        while heap and heap[0].when <= now:
            deadline = heapq.heappop(heap)
            callback, subject = deadline.callback, deadline.subject
            if callback is None:
                self.cancelled -= 1
                continue
            deadline.callback = deadline.subject = None
            try:
                if subject is None:
                    callback()
                else:
                    callback(subject)
            except Exception:  # noqa: BLE001 - one failing callback must not stop the rest
                log.exception("deadline callback failed")
        if heap:
            self._arm(heap[0].when)


#: The process's deadlines (one event loop runs the server).
deadlines = Deadlines()
