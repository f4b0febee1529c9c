"""``/collab`` over ASGI: the ``Connection`` driven through Starlette's ``WebSocket``.

What runs when Tandem's router is mounted in another app or served by another
ASGI server (``tandem serve`` uses ``tandem.server.collab_transport`` instead).
``serve_collab`` admits the socket as every endpoint does
(``tandem.server.admission``), then feeds each received message to
``Connection.handle``; ``AsgiWire`` is the connection's ``Wire``, whose sends are
awaited by a writer task that exists only while there is something to send.

Must not import the composition root (``tandem.server.app``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from tandem.errors import TandemError
from tandem.protocol import batch, encode, error_message
from tandem.server.admission import enter_with_token
from tandem.server.collab import Connection

if TYPE_CHECKING:
    from tandem.server.context import Context

__all__ = ["AsgiWire", "serve_collab"]


class AsgiWire:
    """A ``Wire`` over Starlette's ``WebSocket``: every send is awaited, in a writer task.

    The task exists only while there is something to send (an idle connection
    keeps none); it takes the whole queue each time and closes when asked.
    """

    __slots__ = ("websocket", "_writer")

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._writer: asyncio.Task[None] | None = None

    def writable(self) -> bool:
        return False  # ASGI sends are awaited: always through the writer

    def buffered(self) -> int:
        return 0  # the writer holds at most the batch it is sending

    def write(self, frame: bytes) -> int:
        return -1  # never writable: the message is queued for the writer

    def send_close(self, code: int, reason: str) -> None:  # pragma: no cover
        raise RuntimeError("AsgiWire is never writable; use drain")

    def drain(self, connection: Connection) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(connection), name="tandem-writer")

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.cancel()

    async def _write(self, connection: Connection) -> None:
        websocket = self.websocket
        try:
            while messages := connection.take():
                await websocket.send_text(batch(messages))
            if connection.closing is not None:
                code, reason = connection.closing
                connection.closed = True
                with contextlib.suppress(Exception):
                    await websocket.close(code, reason)
        except (WebSocketDisconnect, RuntimeError):
            connection.closed = True  # the peer is gone; the receive loop sees the disconnect
        finally:
            self._writer = None

    async def finish(self, connection: Connection, timeout: float) -> None:
        """On the way out: say goodbye (1000) after what is queued, within ``timeout``."""
        connection.close(1000, "bye")
        connection.flush()
        writer = self._writer
        if writer is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(writer), timeout=timeout)
        except (TimeoutError, Exception):  # noqa: BLE001
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer


async def serve_collab(websocket: WebSocket, tandem: Context) -> None:
    """Run one ``/collab`` connection from handshake to close, over ASGI."""
    admission = tandem.admission
    entered = await enter_with_token(websocket, admission)
    if entered is None:
        return
    slot, token = entered
    try:
        principal, client, doc = await admission.admit(token, websocket.query_params, slot)
    except TandemError as error:
        slot.release()
        with contextlib.suppress(Exception):
            await websocket.send_text(encode(error_message(error)))
            await websocket.close(admission.close_code(error), error.code)
        return
    except BaseException:
        slot.release()
        raise
    wire = AsgiWire(websocket)
    connection = Connection(wire, principal, client, tandem, slot)
    connection.opened()
    try:
        if doc is not None:
            await connection.handle(encode({"type": "join", "doc": doc}))
        while not connection.closed:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            await connection.handle(text if text is not None else message.get("bytes") or b"")
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        connection.ended()
        await wire.finish(connection, timeout=tandem.settings.slow_consumer_grace)
        if websocket.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(1000)
