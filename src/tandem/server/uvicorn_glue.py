"""Uses uvicorn and websockets internals; tested against uvicorn 0.50–0.55, websockets 16–17.

The one module of Tandem that reaches into another library's private parts
(the architecture test holds every other module to their public API, and
``pyproject.toml`` pins both libraries to the range above: uvicorn 0.49 and
websockets 15 fail this module's tests). What it relies on:

* uvicorn: that ``Config(ws=...)`` accepts a protocol factory and calls it with
  ``(config, server_state, app_state)``; ``WebSocketsSansIOProtocol`` (the
  protocol other WebSocket paths are handed to); ``ServerState.connections``
  and ``.tasks``; the ``parser``
  attribute of its httptools protocol (``release_http_protocol``); its
  ``LOGGING_CONFIG``; ``HttpToolsProtocol``'s ``connection_made``,
  ``on_headers_complete`` and ``connection_lost`` (the handshake deadline);
  ``Server.handle_exit`` (``serve``'s second-signal exit).
* websockets: the sans-I/O ``ServerProtocol`` and, for the frame fast path,
  its parser's state (``state``, ``current_size``, the generator's
  ``gi_yieldfrom`` chain, ``max_message_size``) as websockets 16–17 keep it;
  ``tests/property/test_frames.py`` checks the two parsers agree.
* asyncio: ``run_eagerly`` drives a coroutine by hand, as a task does
  (``_asyncio_future_blocking``).

``tandem serve``'s WebSocket protocol: ``/collab`` sockets served without ASGI.

uvicorn hands every upgraded connection to the protocol its ``ws=`` option
names; ``serve`` passes ``CollabServer(tandem)``. For ``/collab``, the
``CollabProtocol`` does the handshake, asks the server's one ``Admission``
(``tandem.server.admission``) as every endpoint does, then is the socket's
``Wire`` (``tandem.server.collab``): each complete text frame goes straight to
``Connection.handle`` from ``data_received`` — no ASGI task, receive queue or
wake-up per message — and frames are written straight to the transport, with
uvloop's flow control (``pause_writing``/``resume_writing``) deciding when the
``Connection`` may write. Any other WebSocket path (``/yjs``, ``/hocuspocus``)
is handed to uvicorn's own sans-I/O protocol, which runs the ASGI app as before.

The WebSocket protocol itself (handshake checks, frame parsing, masking,
control frames, size limits, closing) is the ``websockets`` library's sans-I/O
``ServerProtocol``: one for the handshake, then a fresh one in the OPEN state
for the frames, so the request and its headers are not kept. One exception,
for speed: the whole, unfragmented data frames a read starts with (a typical
message) are cut and unmasked here (``_take_frames``), and the parser gets the
rest of the read from a frame boundary. Keepalive pings
and their deadlines use the shared ``deadlines`` heap.

Messages from one client are handled in order: ``handle`` runs at once, and
usually finishes without suspending (an op is sequenced and queued for commit
synchronously); when it does suspend (a join loading a document, an offline
merge), a task carries it on, and later frames wait for it with reading paused.

Must not import FastAPI or Starlette.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import os
import random
import struct
import threading
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeAlias, cast
from urllib.parse import parse_qsl, quote, unquote

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

try:  # websockets' C unmasking, which its own parser uses when it is built
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without it
    from websockets.utils import apply_mask

from tandem.auth import extract_token
from tandem.errors import TandemError
from tandem.protocol import encode, error_message
from tandem.server.admission import Slot
from tandem.server.collab import Connection
from tandem.server.deadlines import Deadline, deadlines

if TYPE_CHECKING:
    from types import FrameType

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from tandem.server.context import Context

__all__ = [
    "CollabProtocol",
    "CollabServer",
    "log_config",
    "release_http_protocol",
    "run_eagerly",
    "serve",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

#: The log uvicorn's WebSocket protocols write their request lines to.
access_log = logging.getLogger("uvicorn.error")
_frames_log = logging.getLogger("tandem.collab.frames")


def release_http_protocol(protocol: object) -> None:
    """Let uvicorn's HTTP protocol of an upgraded socket be freed without the collector.

    uvicorn's httptools protocol and its parser reference each other (the parser
    holds the protocol's callbacks), and the protocol holds the transport: once
    it has handed the socket over, that cycle is garbage that only the cyclic
    collector frees. Once promoted to the oldest generation (collections that
    ran while the handshake was in progress, as under a crowd of handshakes) it
    waits for a full collection, which ``tandem.runtime`` makes rare: about
    5 KB a connection piled up under churn. Dropping the
    protocol's reference to its parser (run once the upgrade has returned, so
    the parser is no longer on the stack) leaves no cycle; reference counting
    frees both at once. Protocols without a parser (h11) hold no such cycle.
    """
    if getattr(protocol, "parser", None) is not None:
        protocol.parser = None  # type: ignore[attr-defined]


class CollabServer:
    """What uvicorn's ``ws=`` option gets: one ``CollabProtocol`` per upgraded socket."""

    path = "/collab"

    def __init__(self, tandem: Context) -> None:
        self.tandem = tandem

    def __call__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> CollabProtocol:
        return CollabProtocol(self, config, server_state, app_state)


class CollabProtocol(asyncio.Protocol):
    """One upgraded socket: a ``/collab`` connection, or a hand-over to uvicorn."""

    __slots__ = (
        "transport",
        "connection",
        "_server",
        "_config",
        "_state",
        "_app_state",
        "_ws",
        "_head",
        "_other",
        "_fragments",
        "_busy",
        "_backlog",
        "_pending_join",
        "_read_paused",
        "_write_paused",
        "_lost",
        "_ping",
        "_ping_payload",
        "_close_timer",
    )

    def __init__(
        self,
        server: CollabServer,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
    ) -> None:
        self._server = server
        self._config = config
        self._state = server_state
        self._app_state = app_state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.connection: Connection | None = None
        #: The handshake's protocol, then (``/collab``) a fresh one for the frames.
        self._ws = ServerProtocol(max_size=config.ws_max_size, logger=_frames_log)
        #: The bytes of the request, kept until we know whose it is.
        self._head: bytearray | None = bytearray()
        #: uvicorn's protocol, when the socket is not ours.
        self._other: asyncio.Protocol | None = None
        #: The start of a fragmented message: (text?, parts).
        self._fragments: tuple[bool, list[Buffer]] | None = None
        #: A message's handling suspended; later ones wait in ``_backlog``.
        self._busy = False
        self._backlog: deque[str | bytes] | None = None
        #: The ``join`` a ``?doc=`` query asks for, sent once admission is done.
        self._pending_join: str | None = None
        self._read_paused = False
        self._write_paused = False
        self._lost = False
        self._ping: Deadline | None = None
        self._ping_payload: bytes | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._state.connections.add(self)  # type: ignore[arg-type]
        upgraded = transport.get_protocol()  # uvicorn's HTTP protocol, until it hands over
        if upgraded is not None and upgraded is not self:
            asyncio.get_running_loop().call_soon(release_http_protocol, upgraded)

    def data_received(self, data: bytes) -> None:
        if self._other is not None:
            self._other.data_received(data)
            return
        ws = self._ws
        if self._head is not None:
            ws.receive_data(data)
            self._head += data
            self._on_request()
            return
        taken = self._take_frames(data)
        if taken < len(data):
            ws.receive_data(data[taken:] if taken else data)
            self._on_frames()

    def eof_received(self) -> None:
        if self._other is not None:
            self._other.eof_received()

    def pause_writing(self) -> None:
        if self._other is not None:
            self._other.pause_writing()
        self._write_paused = True

    def resume_writing(self) -> None:
        if self._other is not None:
            self._other.resume_writing()
        self._write_paused = False
        if self.connection is not None:
            self.connection.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._other is not None:
            self._server.tandem.admission.transports.pop(_peer(self.transport), None)
            self._other.connection_lost(exc)
            return
        self._state.connections.discard(self)
        self._lost = True
        self._stop_keepalive()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if not self._busy:  # else when the message being handled is done
            self._end()
        if exc is None:
            self.transport.close()

    def shutdown(self) -> None:
        """The server is stopping (uvicorn calls this): the drain (``tandem.server.shutdown``)
        finishes what is in flight, then closes every connection with 1012."""
        if self._other is not None:
            self._other.shutdown()  # type: ignore[attr-defined]
            return
        if self.connection is None:  # no session (still in the handshake, or refused)
            self.transport.close()
            return
        self._server.tandem.shutdown.begin()

    # -- the handshake ------------------------------------------------------------------------

    def _on_request(self) -> None:
        handshake = self._ws
        for event in handshake.events_received():
            if isinstance(event, Request):
                self._on_handshake(handshake, event)
                return
        if handshake.handshake_exc is not None:  # not a valid request: websockets said 400
            self._send_pending(handshake)
            self.transport.close()

    def _on_handshake(self, handshake: ServerProtocol, request: Request) -> None:
        raw_path, _, query_string = request.path.partition("?")
        if unquote(raw_path) != self._server.path:
            self._hand_over()
            return
        self._head = None
        response = handshake.accept(request)
        if response.status_code != 101:
            handshake.send_response(response)
            self._send_pending(handshake)
            self.transport.close()
            return
        tandem = self._server.tandem
        admission = tandem.admission
        headers = request.headers
        peer = self.transport.get_extra_info("peername")
        peer_host, peer_port = (peer[0], peer[1]) if isinstance(peer, tuple) else ("unknown", 0)
        client = (
            admission.client_address(
                peer_host, headers.get_all("X-Forwarded-For"), headers.get_all("Forwarded")
            ),
            peer_port,
        )
        if not admission.origin_allowed(headers.get("Origin")):
            admission.metrics.error("ERR_FORBIDDEN")
            self._log_request(client, request.path, "403")
            handshake.send_response(handshake.reject(403, ""))
            self._send_pending(handshake)
            self.transport.close()
            return
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        offered = [
            protocol.strip()
            for header in headers.get_all("Sec-WebSocket-Protocol")
            for protocol in header.split(",")
        ]
        token, subprotocol = extract_token(
            query.get("token"), headers.get("Authorization"), offered
        )
        del response.headers["Date"]
        response.headers.update(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self._state.default_headers
        )
        if subprotocol:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
        handshake.send_response(response)
        self._send_pending(handshake)
        self._log_request(client, request.path, "[accepted]")
        self._ws = ServerProtocol(state=OPEN, max_size=self._config.ws_max_size, logger=_frames_log)
        # Admission finishes at once unless the identity provider's keys must be
        # fetched first; frames that arrive meanwhile wait in the backlog.
        self._busy = True
        task = run_eagerly(self._admit(tandem, token, query, client[0]))
        if task is None:
            self._admitted()
        else:
            self._state.tasks.add(task)
            task.add_done_callback(self._handled)

    async def _admit(
        self, tandem: Context, token: str | None, query: dict[str, str], ip: str
    ) -> None:
        admission = tandem.admission
        slot: Slot | None = None
        try:
            slot = admission.enter(ip)
            principal, client_id, doc = await admission.admit(token, query, slot)
        except TandemError as error:
            if slot is not None:
                slot.release()
            self._ws.send_text(encode(error_message(error)).encode())
            self.send_close(admission.close_code(error), error.code)
            return
        if self._lost:
            slot.release()
            return
        connection = self.connection = Connection(self, principal, client_id, tandem, slot)
        connection.opened()
        self._start_keepalive()
        if doc is not None:
            self._pending_join = encode({"type": "join", "doc": doc})

    def _admitted(self) -> None:
        """Admission finished without suspending: carry on as ``_handled`` would."""
        self._busy = False
        join, self._pending_join = self._pending_join, None
        if join is not None:
            self._on_message(join)

    def _hand_over(self) -> None:
        """Not ``/collab``: uvicorn's own protocol takes the socket, request and all."""
        other = WebSocketsSansIOProtocol(
            config=self._config, server_state=self._state, app_state=self._app_state
        )
        head, self._head = bytes(self._head or b""), None
        self._state.connections.discard(self)
        self._other = other
        # A slow consumer of /yjs or /hocuspocus is cut through its transport
        # (``Admission.abort``): an ASGI send that waits for a drain never returns.
        self._server.tandem.admission.transports[_peer(self.transport)] = self.transport
        other.connection_made(self.transport)
        other.data_received(head)
        # We stay the transport's protocol and forward every callback: connection_lost
        # must reach us too, to forget the transport (one call per read costs less
        # than a registry that could outlive its sockets).

    def _log_request(self, client: tuple[str, int], target: str, outcome: str) -> None:
        """The request line uvicorn logs for a WebSocket (tokens are redacted by the filter)."""
        if access_log.isEnabledFor(logging.INFO):
            path, _, query = target.partition("?")
            target = quote(unquote(path)) + ("?" + query if query else "")
            who = f"{client[0]}:{client[1]}"
            access_log.info('%s - "WebSocket %s" %s', who, target, outcome)

    # -- frames ---------------------------------------------------------------------------------

    def _take_frames(self, data: bytes) -> int:
        """Handle the whole, unfragmented data frames ``data`` starts with; the bytes taken.

        The usual read is one client message in one masked frame, and websockets'
        parser (generators over a stream reader, a ``Frame`` object) costs about
        25 µs of Python for it (``bench.op_path``). Those frames are read here
        instead; websockets' parser gets the rest of the read from a frame
        boundary, and every frame it would treat otherwise: control frames,
        fragments, a frame split across reads, RSV bits, no mask, a 64-bit
        length, one over the size limit, anything once the socket is closing.
        It reads the parser's state (``state``, ``current_size``, where its
        generator waits, ``max_message_size``) as websockets 16–17 keep it;
        ``tests/property/test_frames.py`` checks the two agree.
        """
        ws = self._ws
        if ws.state is not OPEN or ws.current_size is not None or not _between_frames(ws):
            return 0
        limit = ws.max_message_size
        end = len(data)
        at = 0
        while end - at >= 6:
            first, second = data[at], data[at + 1]
            if (first != 0x81 and first != 0x82) or second < 0x80:  # FIN and mask set
                break
            size = second & 0x7F
            start = at + 6
            if size == 126:  # a 16-bit length, in bytes 2 and 3
                size = (data[at + 2] << 8) | data[at + 3]
                start = at + 8
            elif size == 127:
                break
            if start + size > end or (limit is not None and size > limit):
                break
            payload = apply_mask(data[start : start + size], data[start - 4 : start])
            at = start + size
            self._on_data(first == 0x81, payload)
            if ws.state is not OPEN:  # refused, closing: the parser takes it from here
                break
        return at

    def _on_frames(self) -> None:
        ws = self._ws
        for frame in cast(list[Frame], ws.events_received()):  # only frames once OPEN
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    self._on_data(opcode is Opcode.TEXT, frame.data)
                else:
                    self._fragments = (opcode is Opcode.TEXT, [frame.data])
            elif opcode is Opcode.CONT:
                if self._fragments is not None:
                    text, parts = self._fragments
                    parts.append(frame.data)
                    if frame.fin:
                        self._fragments = None
                        self._on_data(text, b"".join(parts))
            elif opcode is Opcode.PING:
                self._send_pending(ws)  # websockets queued the pong
            elif opcode is Opcode.PONG:
                self._on_pong(frame)
            elif opcode is Opcode.CLOSE:
                self._send_pending(ws)  # our echo, if we had not closed first
                self.transport.close()
                return
        if ws.parser_exc is not None:  # websockets failed the connection (1002, 1009, ...)
            self._send_pending(ws)
            self.transport.close()

    def _on_data(self, text: bool, data: Buffer) -> None:
        if not text:
            self._on_message(bytes(data))
            return
        try:
            message = bytes(data).decode()
        except UnicodeDecodeError:
            self._ws.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
            self._send_pending(self._ws)
            self.transport.close()
            return
        self._on_message(message)

    def _on_message(self, message: str | bytes) -> None:
        connection = self.connection
        if connection is not None and connection.closed:
            return  # past our close frame: only the client's close matters now
        if self._busy:  # a message, or admission, is being handled
            if self._backlog is None:
                self._backlog = deque()
            self._backlog.append(message)
            if not self._read_paused:
                self._read_paused = True
                self.transport.pause_reading()
            return
        if connection is None:
            return  # refused
        self._handle(connection, message)

    def _handle(self, connection: Connection, message: str | bytes) -> None:
        task = run_eagerly(connection.handle(message))
        if task is not None:
            self._busy = True
            self._state.tasks.add(task)
            task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._state.tasks.discard(task)
        self._busy = False
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover
            access_log.error("collab handler failed", exc_info=task.exception())
        connection = self.connection
        if self._lost or connection is None:
            self._end()
            return
        join, self._pending_join = self._pending_join, None
        if join is not None:
            self._handle(connection, join)
        backlog = self._backlog
        while backlog and not self._busy and not connection.closed:
            self._handle(connection, backlog.popleft())
        if not self._busy:
            self._backlog = None
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()

    def _end(self) -> None:
        connection = self.connection
        if connection is not None:
            self.connection = None
            connection.closed = True
            connection.ended()

    # -- keepalive ------------------------------------------------------------------------------

    def _start_keepalive(self) -> None:
        interval = self._config.ws_ping_interval
        if interval:
            self._ping = deadlines.add(interval, self._send_ping)

    def _stop_keepalive(self) -> None:
        if self._ping is not None:
            self._ping.cancel()
            self._ping = None
        self._ping_payload = None

    def _send_ping(self) -> None:
        self._ping = None
        ws = self._ws
        if ws.state is not OPEN or self.transport.is_closing():
            return
        # A random payload names this ping: a stale or unsolicited pong is ignored.
        self._ping_payload = payload = struct.pack("!I", random.getrandbits(32))
        ws.send_ping(payload)
        self._send_pending(ws)
        timeout = self._config.ws_ping_timeout
        if timeout is not None:
            self._ping = deadlines.add(timeout, self._ping_timed_out)
        else:
            self._start_keepalive()

    def _on_pong(self, frame: Frame) -> None:
        if self._ping_payload is None or bytes(frame.data) != self._ping_payload:
            return
        self._stop_keepalive()
        self._start_keepalive()

    def _ping_timed_out(self) -> None:
        self._ping = None
        self._ping_payload = None
        ws = self._ws
        if ws.state is not OPEN or self.transport.is_closing():
            return
        ws.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        self._send_pending(ws)
        self.transport.close()

    # -- Wire: what the Connection writes through -------------------------------------------------

    def writable(self) -> bool:
        return not self._write_paused and not self.transport.is_closing()

    def write(self, frame: bytes) -> None:
        self.transport.write(frame)

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def send_close(self, code: int, reason: str) -> None:
        ws = self._ws
        if ws.state is not OPEN or self.transport.is_closing():
            return
        ws.send_close(code, reason)
        self._send_pending(ws)
        # Keep reading, to see the client's reply; cut the socket if it never comes.
        self._backlog = None
        self._resume_reading()
        # abort, not close: a transport's close waits for its buffer to drain, and the
        # buffer of a client that does not answer may never drain.
        self._close_timer = asyncio.get_running_loop().call_later(
            self._server.tandem.settings.close_timeout, self.transport.abort
        )

    def drain(self, connection: Connection) -> None:
        """Nothing to do: ``resume_writing`` wakes the connection."""

    def abort(self) -> None:
        self.transport.abort()

    def _send_pending(self, ws: ServerProtocol) -> None:
        data = ws.data_to_send()
        if data:
            self.transport.write(b"".join(data))


def _peer(transport: asyncio.BaseTransport) -> tuple[str, int]:
    """The (host, port) uvicorn puts in an ASGI scope's ``client`` for this socket."""
    peer = transport.get_extra_info("peername")
    return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("", 0)


def _between_frames(ws: ServerProtocol) -> bool:
    """Is websockets' parser waiting for a frame to start, not inside one?

    Its buffer alone cannot tell: once a frame's header and mask are read, it
    waits for the payload with an empty buffer. Between frames its generator
    waits in ``StreamReader.at_eof`` (which implies an empty buffer); inside
    a frame, in ``read_exact``.
    """
    waiting: Any = ws.parser
    while (inner := getattr(waiting, "gi_yieldfrom", None)) is not None:
        waiting = inner
    return getattr(waiting, "__name__", "") == "at_eof"


def run_eagerly(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coroutine`` up to its first suspension, here and now; a task carries on from
    there if there is one (what Python 3.12's eager tasks do). None: it finished.
    """
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_carry_on(coroutine, awaited))


async def _carry_on(coroutine: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive ``coroutine`` on, as a task's steps would, from its suspension on ``awaited``
    (a future, or None for a bare yield)."""
    while True:
        try:
            if awaited is None:
                await asyncio.sleep(0)
            else:
                awaited._asyncio_future_blocking = False
                await asyncio.wait((awaited,))
        except asyncio.CancelledError as cancelled:
            if awaited is not None:
                awaited.cancel()
            try:
                awaited = coroutine.throw(cancelled)
            except StopIteration:
                return
            continue
        try:
            awaited = coroutine.send(None)
        except StopIteration:
            return


def serve(app: Any, tandem: Context, *, log_level: str, deadline: float) -> None:
    """Run ``app`` under uvicorn, ``/collab`` on ``CollabServer``, until it is stopped.

    Chosen by measurement (docs/performance.md): uvloop and httptools; ``/collab``
    sockets are served by ``CollabProtocol`` (no ASGI task, queue or wake-up per
    message; frames written straight to the transport), every other WebSocket path
    by uvicorn's sans-I/O protocol, to which ``CollabServer`` hands it over. No
    permessage-deflate: a zlib context per connection costs more memory and CPU
    than the small JSON messages gain. The first SIGTERM/SIGINT drains (uvicorn's
    shutdown, bounded by a watchdog at ``deadline`` seconds), a second exits at once.
    """
    settings = tandem.settings
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        loop="auto",
        http=_with_handshake_deadline(settings.handshake_timeout),
        ws=CollabServer(tandem),  # type: ignore[arg-type]
        ws_per_message_deflate=False,
        ws_max_size=settings.max_frame_bytes + 1024,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        access_log=False,
        log_config=log_config(),
        timeout_graceful_shutdown=math.ceil(deadline),
        # Whose X-Forwarded-For to believe is Tandem's trusted_proxies, for every endpoint.
        proxy_headers=False,
    )
    _Server(config, deadline=deadline).run()


def _with_handshake_deadline(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, cut (``abort``) unless a request's headers are complete
    within ``seconds`` of the connection: a socket that never finishes its HTTP request
    (or its WebSocket handshake) holds a descriptor and memory for nothing."""

    class HandshakeDeadline(HttpToolsProtocol):
        _handshake: Deadline | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._handshake = deadlines.add(seconds, transport.abort)

        def on_headers_complete(self) -> None:
            self._cancel_handshake()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_handshake()
            super().connection_lost(exc)

        def _cancel_handshake(self) -> None:
            if self._handshake is not None:
                self._handshake.cancel()
                self._handshake = None

    return HandshakeDeadline


class _Server(uvicorn.Server):
    """uvicorn's server, with Tandem's answer to signals: the first drains (uvicorn's
    shutdown, bounded by a watchdog), a second exits at once."""

    def __init__(self, config: uvicorn.Config, *, deadline: float) -> None:
        super().__init__(config)
        self._deadline = deadline

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            # A second signal: exit now. Nothing acknowledged is lost by it: every
            # ack went out only once its op was durable (SQLite synced, PostgreSQL
            # committed); unacknowledged ops are resent by their clients.
            os.write(2, b"tandem: second signal, exiting at once\n")
            os._exit(128 + sig)
        super().handle_exit(sig, frame)
        watchdog = threading.Timer(self._deadline, _overran, args=(self._deadline,))
        watchdog.daemon = True
        watchdog.start()


def _overran(deadline: float) -> None:
    os.write(2, f"tandem: shutdown overran {deadline:g}s, exiting\n".encode())
    os._exit(1)


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with tokens redacted from every record it writes.

    uvicorn logs WebSocket request lines with their query string
    (``?token=…``) and, at debug level, request headers.
    """
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": "tandem.auth.TokenRedactingFilter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    return config
