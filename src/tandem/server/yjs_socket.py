"""One Yjs socket's I/O, shared by ``/yjs`` and ``/hocuspocus``: its bounded ``Outbox``,
the frames it reads (``binary_frames``) and the close for a client over the message
rate (``rate_limited``).

Must not import the endpoints (``tandem.server.yjs``, ``tandem.server.hocuspocus``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from tandem.errors import RateLimited
from tandem.server.admission import TRACKED_BYTES, settle

if TYPE_CHECKING:
    from tandem.server.context import Context

__all__ = ["Outbox", "binary_frames", "rate_limited", "settle"]


class Outbox:
    """One socket's outbound frames: bounded, written by one task, with a keep-alive.

    ``push`` never blocks. Past ``send_queue_frames`` queued frames, or past
    ``max_connection_bytes`` queued beyond the largest frame (the server's
    ``Budget``, which may also shed the heaviest outboxes first), the client is
    a slow consumer: what is queued is dropped, the socket closes with 4408
    (``ERR_SLOW_CONSUMER``), and is cut after ``slow_consumer_grace`` if that
    close cannot go out. ``close`` drops what is queued (unless ``flush``: then
    it goes out first) and ends the writer with that close frame.
    """

    def __init__(self, websocket: WebSocket, tandem: Context, keepalive: bytes) -> None:
        settings = tandem.settings
        self.websocket = websocket
        self.tandem = tandem
        self._queue: deque[bytes] = deque()
        self._limit = settings.send_queue_frames
        self._keepalive = keepalive
        self._every = settings.yjs_keepalive
        self._ready = asyncio.Event()
        #: Bytes queued, and the largest frame queued yet.
        self._queued = 0
        self._largest = 0
        self.closing: tuple[int, str] | None = None

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def push(self, frame: bytes) -> None:
        if self.closing is not None:
            return
        if len(self._queue) >= self._limit:
            self.shed()
            return
        size = len(frame)
        self._largest = max(self._largest, size)
        self._queued += size
        self._queue.append(frame)
        self._ready.set()
        if self._queued >= TRACKED_BYTES:
            budget = self.tandem.admission.budget
            if budget.over(self._queued, self._largest):
                self.shed()
            else:
                budget.hold(self, self._queued)

    def shed(self) -> None:
        """Drop the client as a slow consumer (see the class docstring)."""
        if self.closing is not None:
            return
        self.tandem.metrics.slow_consumer()
        self.tandem.metrics.error("ERR_SLOW_CONSUMER")
        self.close(4408, "ERR_SLOW_CONSUMER")
        asyncio.get_running_loop().call_later(self.tandem.settings.slow_consumer_grace, self.cut)

    def cut(self) -> None:
        """Reset the socket now (``Admission.abort``): nothing more goes out."""
        peer = self.websocket.client
        self.tandem.admission.abort((peer.host, peer.port) if peer is not None else None)

    async def finish(self, writer: asyncio.Task[None]) -> None:
        """The connection is over: give ``writer`` ``slow_consumer_grace`` to send what
        is left and the close, then cut the socket. A client that sends without
        reading while the server waits to write to it (reading is paused meanwhile:
        backpressure) would otherwise hold the socket until one of them gives up."""
        try:
            await asyncio.wait_for(writer, self.tandem.settings.slow_consumer_grace)
        except TimeoutError:
            self.cut()
        except Exception:  # noqa: BLE001 - the writer's own failure: the socket is gone
            pass

    def close(self, code: int, reason: str, *, flush: bool = False) -> None:
        if self.closing is None:
            self.closing = (code, reason)
            if not flush:
                self._queue.clear()
                self._queued = 0
                self.tandem.admission.budget.release(self)
            self._ready.set()

    async def writer(self) -> None:
        try:
            await self._write()
        finally:
            self.tandem.admission.budget.release(self)

    async def _write(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), self._every)
            except TimeoutError:
                self._queue.append(self._keepalive)
            self._ready.clear()
            while self._queue:
                frame = self._queue.popleft()
                self._queued -= len(frame)
                await self.websocket.send_bytes(frame)
            if self._queued < TRACKED_BYTES:
                self.tandem.admission.budget.release(self)
            if self.closing is not None:
                code, reason = self.closing
                with contextlib.suppress(Exception):
                    await self.websocket.close(code, reason)
                return


def rate_limited(tandem: Context, outbox: Outbox) -> None:
    """Over the message rate (``messages_per_second``): the socket closes with 4429.

    A Yjs client cannot be told to slow down and keep its socket: a dropped update
    would leave it believing the server has it. It reconnects and syncs again.
    """
    tandem.metrics.error(RateLimited.code)
    outbox.close(4429, RateLimited.code)


async def binary_frames(
    websocket: WebSocket, writer: asyncio.Task[None]
) -> AsyncIterator[bytes | None]:
    """The frames a Yjs client sends, until it disconnects or ``writer`` ends.

    A text frame is None: y-websocket and the Hocuspocus provider send none, and
    the caller skips it, but only after counting it against the message rate
    (else text frames would be a free way to keep the server parsing).
    """
    while not writer.done():
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        yield message.get("bytes")
