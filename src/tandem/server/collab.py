"""The ``/collab`` WebSocket: frame → protocol → documents → frame; nothing else.

One ``Connection`` per socket. Its reader parses each frame and dispatches it
to the document sessions. What the sessions queue for a client within one
event-loop tick goes out as one frame, once that tick's work is done: a single
``_Flusher`` callback per tick visits every connection that has something
queued. Where the server is uvicorn with its ``websockets-sansio`` protocol
(``tandem serve``; see ``collab_fast_lane``) and the socket is writable, the
flusher frames the batch itself and writes it straight to the transport, and a
batch that several clients share (a broadcast) is framed once for all of them;
otherwise, and for closing, a writer task sends through ASGI (an idle
connection keeps no task).
The queue is bounded: a client that stops reading is dropped with
``ERR_SLOW_CONSUMER`` (close 4408) rather than slowing its document or growing
memory.

Every exception raised while handling a message becomes exactly one ``error``
reply; only fatal ones (auth, oversized frames, slow consumer) close the
socket, with the code ``TandemError.close_code`` gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from tandem.auth import Principal, extract_token
from tandem.documents import DocumentSession
from tandem.errors import (
    AuthError,
    JoinLimitExceeded,
    LimitExceeded,
    NotJoined,
    RateLimited,
    SlowConsumer,
    TandemError,
    TokenExpired,
)
from tandem.limits import TokenBucket
from tandem.protocol import (
    Join,
    Leave,
    Merge,
    Ping,
    Presence,
    Submit,
    batch,
    encode,
    error_message,
    hello_message,
    parse,
    validate_client_id,
    validate_doc_id,
)

if TYPE_CHECKING:
    from tandem.server.app import Tandem

__all__ = ["Connection", "collab_fast_lane", "serve_collab"]

log = logging.getLogger("tandem.collab")

#: Seconds a slow consumer's close may take before its connection is cut.
SLOW_CONSUMER_GRACE = 2.0

#: Scope key under which ``collab_fast_lane`` leaves the server's own ``send``.
ASGI_SEND_KEY = "tandem.asgi_send"

_SansIOProtocol: type | None
try:  # uvicorn's sans-I/O websockets protocol, the one ``tandem serve`` runs
    from uvicorn.protocols.websockets.websockets_sansio_impl import (
        WebSocketsSansIOProtocol as _SansIOProtocol,
    )
except ImportError:  # pragma: no cover - another ASGI server
    _SansIOProtocol = None


def collab_fast_lane(app: ASGIApp, tandem: Tandem) -> ASGIApp:
    """The ASGI app ``tandem serve`` runs: ``/collab`` sockets go straight to
    ``serve_collab``, everything else (REST, ``/yjs``, lifespan) to ``app``.

    The same ``serve_collab`` runs either way. The lane skips FastAPI's routing
    and middleware, some twenty coroutine frames held by every open socket, and
    leaves the server's own ``send`` in the scope: it lets a connection write
    frames directly (see ``_DirectFrames``).
    """

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[ASGI_SEND_KEY] = send
            if scope["path"] == "/collab":
                await serve_collab(WebSocket(scope, receive, send), tandem)
                return
        await app(scope, receive, send)

    return lane


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked WebSocket text frame (server to client) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


class _DirectFrames:
    """Writes ready-made frames to uvicorn's transport, skipping ASGI and re-framing.

    Only used while the socket is open and writable: under back-pressure or
    while closing, the connection falls back to a writer task, which awaits
    the protocol's flow control.
    """

    __slots__ = ("_protocol", "_transport")

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._transport = protocol.transport

    @classmethod
    def find(cls, websocket: WebSocket) -> _DirectFrames | None:
        protocol = getattr(websocket.scope.get(ASGI_SEND_KEY), "__self__", None)
        if _SansIOProtocol is None or not isinstance(protocol, _SansIOProtocol):
            return None
        return cls(protocol)

    def writable(self) -> bool:
        protocol = self._protocol
        return (
            protocol.handshake_complete
            and not protocol.close_sent
            and not protocol.disconnected
            and protocol.writable.is_set()
            and not self._transport.is_closing()
        )

    def write(self, frame: bytes) -> None:
        self._transport.write(frame)

    def abort(self) -> None:
        self._transport.abort()


class _Flusher:
    """Once per event-loop tick, sends what each connection queued during it.

    Batches made of the very same message objects (a broadcast every member
    received in the same tick) are joined and framed once per tick.
    """

    def __init__(self) -> None:
        self._dirty: list[Connection] = []

    def schedule(self, connection: Connection) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._flush)
        self._dirty.append(connection)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        # key: the ids of the messages in order -> (the messages, kept alive, and the frame)
        frames: dict[tuple[int, ...], tuple[list[str], bytes]] = {}
        for connection in dirty:
            connection.flush(frames)


_flusher = _Flusher()


class Connection:
    """One client socket: identity, joined documents, bounded outbound queue."""

    def __init__(
        self, websocket: WebSocket, principal: Principal, client: str, tandem: Tandem
    ) -> None:
        self.websocket = websocket
        self.principal = principal
        self.client = client
        self.user = principal.user
        self.name = principal.name
        self.tandem = tandem
        settings = tandem.settings
        self.documents: dict[str, DocumentSession] = {}
        #: Messages not yet sent (a list: it is always taken whole).
        self._queue: list[str] = []
        self._limit = settings.send_queue_frames
        self._direct = _DirectFrames.find(websocket)
        self._scheduled = False
        #: The task sending through ASGI, while there is one (see ``_kick``).
        self._writer: asyncio.Task[None] | None = None
        #: The close frame went out, or the peer is gone: stop reading.
        self.closed = False
        self._closing: tuple[int, str] | None = None
        self._bucket = TokenBucket(
            settings.messages_per_second, settings.message_burst, time.monotonic()
        )

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    # -- outbound ---------------------------------------------------------------

    def send(self, message: str) -> None:
        if self._closing is not None:
            return
        if len(self._queue) >= self._limit:
            self.tandem.metrics.slow_consumer()
            error = SlowConsumer("you are not reading your messages fast enough; reconnect")
            self._queue = [encode(error_message(error))]
            self.close(error.close_code or 4408, "slow consumer")
            return
        self._queue.append(message)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            _flusher.schedule(self)

    def flush(self, frames: dict[tuple[int, ...], tuple[list[str], bytes]]) -> None:
        """Send what is queued: straight to the socket if possible, else via a writer."""
        self._scheduled = False
        messages = self._queue
        if not messages or self._writer is not None:
            return  # the writer takes everything queued before it finishes
        direct = self._direct
        if direct is None or self._closing is not None or not direct.writable():
            self._kick()
            return
        self._queue = []
        key = tuple(map(id, messages))
        known = frames.get(key)
        if known is None:
            known = frames[key] = (messages, text_frame(batch(messages).encode()))
        direct.write(known[1])

    def close(self, code: int, reason: str) -> None:
        """Flush what is queued, then close with ``code``."""
        if self._closing is None:
            self._closing = (code, reason)
            self._kick()
            if code == SlowConsumer.close_code:
                # A client that never reads again would keep the writer blocked on flow
                # control forever: cut the connection if the close has not gone out soon.
                asyncio.get_running_loop().call_later(SLOW_CONSUMER_GRACE, self._abort)

    def _abort(self) -> None:
        """Drop the connection without the client's cooperation."""
        if self.closed:
            return
        self.closed = True
        if self._direct is not None:
            self._direct.abort()  # uvicorn then reports the disconnect to the reader
        if self._writer is not None:
            self._writer.cancel()

    def _kick(self) -> None:
        """Start a writer task unless one runs (an idle connection keeps no task)."""
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="tandem-writer")

    async def _write(self) -> None:
        """Send everything queued through ASGI (awaiting flow control), then close if asked."""
        websocket = self.websocket
        try:
            while self._queue:
                messages, self._queue = self._queue, []
                await websocket.send_text(batch(messages))
            if self._closing is not None:
                code, reason = self._closing
                with contextlib.suppress(Exception):
                    await websocket.close(code, reason)
                self.closed = True
        except (WebSocketDisconnect, RuntimeError):
            self.closed = True  # the peer is gone; the receive loop sees the disconnect
        finally:
            self._writer = None

    async def finish(self, timeout: float) -> None:
        """On the way out: say goodbye (1000) after what is queued, within ``timeout``."""
        self.close(1000, "bye")
        writer = self._writer
        if writer is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(writer), timeout=timeout)
        except (TimeoutError, Exception):  # noqa: BLE001
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer

    def reply_error(self, error: TandemError, **where: Any) -> None:
        self.tandem.metrics.error(error.code)
        self._queue.append(encode(error_message(error, **where)))
        self._schedule()
        if error.close_code is not None:
            self.close(error.close_code, error.code)

    # -- inbound ------------------------------------------------------------------

    async def handle(self, frame: str | bytes) -> None:
        """Handle one frame; any error becomes one reply."""
        where: dict[str, Any] = {}
        try:
            if not self._bucket.take(time.monotonic()):
                raise RateLimited("too many messages; slow down (the message was dropped)")
            message = parse(
                frame,
                max_bytes=self.tandem.settings.max_frame_bytes,
                max_components=self.tandem.settings.max_op_components,
                max_merge_ops=self.tandem.settings.max_merge_ops,
            )
            if isinstance(message, Submit):
                where = {"seq": message.seq, "ref": message.ref, "doc": message.doc}
                session = self._session(message.doc)
                where["doc"] = session.doc
                member = session.member(self)
                session.touch(self, time.monotonic())
                await session.submit(
                    member, message.op, message.base_version, message.seq, message.ref
                )
            elif isinstance(message, Merge):
                where = {"seq": message.seq, "ref": message.ref, "doc": message.doc}
                session = self._session(message.doc)
                where["doc"] = session.doc
                member = session.member(self)
                session.touch(self, time.monotonic())
                await session.merge(
                    member, message.base_version, message.seq, list(message.ops), message.ref
                )
            elif isinstance(message, Presence):
                where = {"ref": message.ref, "doc": message.doc}
                session = self._session(message.doc)
                where["doc"] = session.doc
                session.update_presence(
                    session.member(self),
                    message.cursor,
                    message.state,
                    message.base_version,
                    time.monotonic(),
                )
            elif isinstance(message, Join):
                where = {"ref": message.ref, "doc": message.doc}
                await self.join(message.doc, message.version)
            elif isinstance(message, Leave):
                where = {"ref": message.ref, "doc": message.doc}
                left = self.documents.pop(message.doc, None)
                if left is None:
                    raise NotJoined(f"not joined to document {message.doc!r}")
                left.leave(self)
            elif isinstance(message, Ping):
                for session in self.documents.values():
                    session.touch(self, time.monotonic())
                reply: dict[str, Any] = {"type": "pong"}
                if message.id is not None:
                    reply["id"] = message.id
                self.send(encode(reply))
        except TandemError as error:
            self.reply_error(error, **where)
        except Exception:  # noqa: BLE001 - a bug must not kill the connection
            log.exception("internal error handling a message")
            self.reply_error(TandemError("internal error; the message was not applied"), **where)

    def _session(self, doc: str | None) -> DocumentSession:
        if doc is None:
            if len(self.documents) != 1:
                raise NotJoined(
                    "'doc' is required when the connection has joined "
                    f"{'no' if not self.documents else 'several'} documents"
                )
            return next(iter(self.documents.values()))
        session = self.documents.get(doc)
        if session is None:
            raise NotJoined(f"not joined to document {doc!r}; send a join first")
        return session

    async def join(self, doc: str, version: int | None) -> None:
        self.principal.require_read(doc)
        if doc in self.documents:
            self.documents[doc].leave(self)
            del self.documents[doc]
        limit = self.tandem.settings.max_joins_per_connection
        if len(self.documents) >= limit:
            raise JoinLimitExceeded(f"a connection may join at most {limit} documents")
        permission = "write" if self.principal.can_write(doc) else "read"
        session = await self.tandem.documents.open(doc)
        self.documents[doc] = session
        await session.join(self, permission, version)

    def leave_all(self) -> None:
        for session in self.documents.values():
            session.leave(self)
        self.documents.clear()


def _query_doc(websocket: WebSocket) -> str | None:
    doc = websocket.query_params.get("doc")
    return None if doc is None else validate_doc_id(doc)


async def serve_collab(websocket: WebSocket, tandem: Tandem) -> None:
    """Run one ``/collab`` connection from handshake to close."""
    settings = tandem.settings
    origin = websocket.headers.get("origin")
    if settings.allowed_origins and origin is not None and origin not in settings.allowed_origins:
        await websocket.close(4403, "origin not allowed")
        return
    token, subprotocol = extract_token(
        websocket.query_params.get("token"),
        websocket.headers.get("authorization"),
        websocket.scope.get("subprotocols") or [],
    )
    await websocket.accept(subprotocol=subprotocol)
    started = time.perf_counter()
    try:
        if not token:
            raise AuthError(
                "a token is required (query 'token', Authorization header or subprotocol)"
            )
        principal = tandem.authenticator.verify(token)
        raw_client = websocket.query_params.get("client")
        client = validate_client_id(raw_client) if raw_client else "c" + secrets.token_hex(6)
        doc = _query_doc(websocket)
    except TandemError as error:
        tandem.metrics.error(error.code)
        close_code = error.close_code or (4401 if isinstance(error, AuthError) else 4400)
        with contextlib.suppress(Exception):
            await websocket.send_text(encode(error_message(error)))
            await websocket.close(close_code, error.code)
        return
    finally:
        tandem.metrics.auth_time(time.perf_counter() - started)
    ip = websocket.client.host if websocket.client else "unknown"
    try:
        tandem.connections.acquire(principal.user, ip)
    except LimitExceeded as error:
        tandem.metrics.error(error.code)
        with contextlib.suppress(Exception):
            await websocket.send_text(encode(error_message(error)))
            await websocket.close(error.close_code or 4429, error.code)
        return
    connection = Connection(websocket, principal, client, tandem)
    tandem.metrics.connection_opened("collab")
    expiry = _schedule_expiry(connection, principal, settings.token_expiry_warning)
    try:
        connection.send(
            encode(hello_message(client, principal.user, principal.name, principal.expires))
        )
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
        for handle in expiry:
            handle.cancel()
        connection.leave_all()
        tandem.connections.release(principal.user, ip)
        tandem.metrics.connection_closed("collab")
        await connection.finish(timeout=1.0)
        if websocket.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(1000)


def _schedule_expiry(
    connection: Connection, principal: Principal, warning: float
) -> list[asyncio.TimerHandle]:
    """Warn before the token expires, then close with 4401 when it does."""
    if principal.expires is None:
        return []
    loop = asyncio.get_running_loop()
    left = principal.expires - time.time()
    handles = []

    def warn() -> None:
        connection.send(encode({"type": "token_expiring", "expires": int(principal.expires or 0)}))

    def expire() -> None:
        connection.reply_error(TokenExpired("your token has expired; reconnect with a fresh one"))

    if left > warning:
        handles.append(loop.call_later(left - warning, warn))
    else:
        warn()
    handles.append(loop.call_later(max(left, 0.0), expire))
    return handles
