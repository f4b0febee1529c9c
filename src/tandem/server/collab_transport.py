"""The fast ``/collab`` transport: one upgraded socket, served without ASGI.

The web server (``tandem.server.uvicorn_glue`` under ``tandem serve``) hands
every upgraded connection to a ``CollabProtocol`` and describes itself in a
``Host``. For ``/collab``, the protocol does the handshake, asks the server's
one ``Admission`` (``tandem.server.admission``) as every endpoint does, then is
the socket's ``Wire`` (``tandem.server.collab``): each complete text frame goes
straight to ``Connection.handle`` from ``data_received`` — no ASGI task,
receive queue or wake-up per message — and frames are written straight to the
transport, with the event loop's flow control (``pause_writing`` /
``resume_writing``) deciding when the ``Connection`` may write. Any other
WebSocket path (``/yjs``, ``/hocuspocus``) is handed to the web server's own
WebSocket protocol (``Host.hand_over``), which runs the ASGI app as before.

The WebSocket protocol itself (handshake checks, frame parsing, masking,
control frames, size limits, closing) is the ``websockets`` library's sans-I/O
``ServerProtocol``, through its public API: one for the handshake, then a
fresh one in the OPEN state for the frames, so the request and its headers
are not kept. That one is made only when a read needs the parser and dropped
once the parser is back between frames with nothing pending, so an idle socket
holds none: a parser is nine objects the garbage collector tracks (itself,
three generators, three lists, its reader and id), and every full collection
walks them (docs/performance.md, "The full collection a long-running server
still pays"). One exception, for speed: the whole, unfragmented data frames a
read starts with (a typical message) are cut (``tandem.frames``) and unmasked
here, and so is a masked 4-byte pong (the answer to our keepalive ping); the
parser gets the rest of the read from a frame boundary. The keepalive ping (4
bytes, unmasked) is framed here too. Keepalive pings and
their deadlines use the shared ``deadlines`` heap.

Messages from one client are handled in order: ``handle`` runs at once
(``tandem.server.eager``), and usually finishes without suspending (an op is
sequenced and queued for commit synchronously); when it does suspend (a join
loading a document, an offline merge), a task carries it on, and later frames
wait for it with reading paused.

Must not import FastAPI, Starlette or uvicorn, nor websockets' private parts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast
from urllib.parse import parse_qsl, quote, unquote

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from tandem.auth import extract_token
from tandem.errors import TandemError
from tandem.frames import next_frame
from tandem.protocol import encode, error_message
from tandem.server.admission import Slot, cut
from tandem.server.collab import Connection
from tandem.server.deadlines import Deadline, deadlines
from tandem.server.eager import run_eagerly

if TYPE_CHECKING:
    from tandem.server.context import Context

__all__ = ["CollabProtocol", "Host"]

Buffer: TypeAlias = bytes | bytearray | memoryview

OPEN = State.OPEN
#: The log uvicorn's WebSocket protocols write their request lines to.
access_log = logging.getLogger("uvicorn.error")
_frames_log = logging.getLogger("tandem.collab.frames")
#: A final pong frame's first byte, and the second of a masked one with 4 payload bytes.
_PONG = 0x8A
_MASKED_4 = 0x84
#: A final ping frame's first two bytes, unmasked (a server's), with 4 payload bytes.
_PING_4 = b"\x89\x04"


@dataclass(slots=True, frozen=True)
class Host:
    """What the web server that hands sockets over provides (``uvicorn_glue`` builds one)."""

    tandem: Context
    #: The path served here; any other is handed over.
    path: str
    #: Open connections: the server calls ``shutdown()`` on each when it stops.
    connections: set[Any]
    #: Tasks the server waits for when it stops.
    tasks: set[asyncio.Task[None]]
    #: The headers the server adds to every response (its ``date``, ``server``).
    response_headers: Callable[[], Sequence[tuple[bytes, bytes]]]
    #: The largest message accepted, in bytes (None: no limit).
    max_size: int | None
    ping_interval: float | None
    ping_timeout: float | None
    #: Let go of the HTTP protocol the socket was upgraded from.
    release: Callable[[object], None]
    #: The server's own WebSocket protocol for a path not ours, given the socket and
    #: the request's bytes (already fed to it).
    hand_over: Callable[[asyncio.Transport, bytes], asyncio.Protocol]
    #: Is websockets' parser waiting for a frame to start (not inside one)?
    at_frame_start: Callable[[ServerProtocol], bool]
    #: Did websockets' parser fail the connection (1002, 1009, ...)?
    parser_failed: Callable[[ServerProtocol], bool]
    #: Unmask a client frame's payload: (payload, mask) → bytes.
    unmask: Callable[[Buffer, bytes], bytes]


class CollabProtocol(asyncio.Protocol):
    """One upgraded socket: a ``/collab`` connection, or a hand-over to uvicorn."""

    __slots__ = (
        "transport",
        "connection",
        "_host",
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

    def __init__(self, host: Host) -> None:
        self._host = host
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.connection: Connection | None = None
        #: The handshake's protocol, then (``/collab``) one in the OPEN state for the
        #: frames, or None while a fresh one would do (``_parser``).
        self._ws: ServerProtocol | None = ServerProtocol(max_size=host.max_size, logger=_frames_log)
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
        self._host.connections.add(self)
        upgraded = transport.get_protocol()  # uvicorn's HTTP protocol, until it hands over
        if upgraded is not None and upgraded is not self:
            asyncio.get_running_loop().call_soon(self._host.release, upgraded)

    def data_received(self, data: bytes) -> None:
        if self._other is not None:
            self._other.data_received(data)
            return
        if self._head is not None:
            self._parser().receive_data(data)
            self._head += data
            self._on_request()
            return
        taken = self._take_frames(data)
        if taken < len(data):
            self._parser().receive_data(data[taken:] if taken else data)
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
            self._host.tandem.admission.transports.pop(_peer(self.transport), None)
            self._other.connection_lost(exc)
            return
        self._host.connections.discard(self)
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
        self._host.tandem.shutdown.begin()

    # -- the handshake ------------------------------------------------------------------------

    def _on_request(self) -> None:
        handshake = self._parser()
        for event in handshake.events_received():
            if isinstance(event, Request):
                self._on_handshake(handshake, event)
                return
        if handshake.handshake_exc is not None:  # not a valid request: websockets said 400
            self._send_pending(handshake)
            self.transport.close()

    def _on_handshake(self, handshake: ServerProtocol, request: Request) -> None:
        raw_path, _, query_string = request.path.partition("?")
        if unquote(raw_path) != self._host.path:
            self._hand_over()
            return
        self._head = None
        response = handshake.accept(request)
        if response.status_code != 101:
            handshake.send_response(response)
            self._send_pending(handshake)
            self.transport.close()
            return
        tandem = self._host.tandem
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
            for name, value in self._host.response_headers()
        )
        if subprotocol:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
        handshake.send_response(response)
        self._send_pending(handshake)
        self._log_request(client, request.path, "[accepted]")
        self._ws = None  # the frames' parser, made when a read needs it
        # Admission finishes at once unless the identity provider's keys must be
        # fetched first; frames that arrive meanwhile wait in the backlog.
        self._busy = True
        task = run_eagerly(self._admit(tandem, token, query, client[0]))
        if task is None:
            self._admitted()
        else:
            self._host.tasks.add(task)
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
            self._parser().send_text(encode(error_message(error)).encode())
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
        """Not ``/collab``: the server's own protocol takes the socket, request and all."""
        head, self._head = bytes(self._head or b""), None
        self._host.connections.discard(self)
        # A slow consumer of /yjs or /hocuspocus is cut through its transport
        # (``Admission.abort``): an ASGI send that waits for a drain never returns.
        self._host.tandem.admission.transports[_peer(self.transport)] = self.transport
        self._other = self._host.hand_over(self.transport, head)
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

    def _parser(self) -> ServerProtocol:
        """The socket's websockets protocol: once OPEN, a fresh one if none is kept."""
        ws = self._ws
        if ws is None:
            ws = self._ws = ServerProtocol(
                state=OPEN, max_size=self._host.max_size, logger=_frames_log
            )
        return ws

    def _open(self) -> bool:
        """Is the WebSocket OPEN (no close sent or received, the parser not failed)?"""
        ws = self._ws
        return ws is None or ws.state is OPEN

    def _take_frames(self, data: bytes) -> int:
        """Handle the whole, unfragmented data frames ``data`` starts with (``tandem.frames``);
        the bytes taken. websockets' parser gets the rest, from a frame boundary.

        Only where the parser is between frames (its private state: ``Host.at_frame_start``).
        """
        ws = self._ws
        host = self._host
        if ws is not None and (ws.state is not OPEN or not host.at_frame_start(ws)):
            return 0
        limit, unmask = host.max_size, host.unmask
        at, end = 0, len(data)
        while at < end:
            if data[at] == _PONG and end - at >= 10 and data[at + 1] == _MASKED_4:
                # The answer to our keepalive ping (a masked pong of its 4 bytes): at
                # 10,000 sockets, 500 a second, each ~20 µs less than through the parser.
                self._on_pong(unmask(data[at + 6 : at + 10], data[at + 2 : at + 6]))
                at += 10
                continue
            frame = next_frame(data, at, limit)
            if frame is None:
                break
            text, start, at = frame
            self._on_data(text, unmask(data[start:at], data[start - 4 : start]))
            ws = self._ws
            if ws is not None and ws.state is not OPEN:  # refused, closing: the parser
                break  # takes it from here
        return at

    def _on_frames(self) -> None:
        ws = self._parser()
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
                self._on_pong(frame.data)
            elif opcode is Opcode.CLOSE:
                self._send_pending(ws)  # our echo, if we had not closed first
                self.transport.close()
                return
        if self._host.parser_failed(ws):  # websockets failed the connection (1002, 1009, ...)
            self._send_pending(ws)
            self.transport.close()
        elif ws.state is OPEN and self._host.at_frame_start(ws) and self._ws is ws:
            # Between frames, its events taken: a fresh one would do, when needed.
            self._send_pending(ws)
            self._ws = None

    def _on_data(self, text: bool, data: Buffer) -> None:
        if not text:
            self._on_message(bytes(data))
            return
        try:
            message = bytes(data).decode()
        except UnicodeDecodeError:
            ws = self._parser()
            ws.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
            self._send_pending(ws)
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
            self._host.tasks.add(task)
            task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._host.tasks.discard(task)
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
        interval = self._host.ping_interval
        if interval:
            self._ping = deadlines.add(interval, CollabProtocol._send_ping, self)

    def _stop_keepalive(self) -> None:
        if self._ping is not None:
            self._ping.cancel()
            self._ping = None
        self._ping_payload = None

    def _send_ping(self) -> None:
        self._ping = None
        if not self._open() or self.transport.is_closing():
            return
        # A random payload names this ping: a stale or unsolicited pong is ignored.
        self._ping_payload = payload = struct.pack("!I", random.getrandbits(32))
        if self._ws is None and not _frames_log.isEnabledFor(logging.DEBUG):
            self.transport.write(_PING_4 + payload)  # what the parser would write
        else:  # through the parser, which logs frames at DEBUG
            ws = self._parser()
            ws.send_ping(payload)
            self._send_pending(ws)
        timeout = self._host.ping_timeout
        if timeout is not None:
            self._ping = deadlines.add(timeout, CollabProtocol._ping_timed_out, self)
        else:
            self._start_keepalive()

    def _on_pong(self, payload: Buffer) -> None:
        if self._ping_payload is None or bytes(payload) != self._ping_payload:
            return
        self._stop_keepalive()
        self._start_keepalive()

    def _ping_timed_out(self) -> None:
        self._ping = None
        self._ping_payload = None
        if not self._open() or self.transport.is_closing():
            return
        ws = self._parser()
        ws.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        self._send_pending(ws)
        self.transport.close()

    # -- Wire: what the Connection writes through -------------------------------------------------

    def writable(self) -> bool:
        return not self._write_paused and not self.transport.is_closing()

    def write(self, frame: bytes) -> int:
        transport = self.transport
        if self._write_paused or transport.is_closing():  # not writable(), inlined: per delivery
            return -1
        transport.write(frame)
        return transport.get_write_buffer_size()

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def send_close(self, code: int, reason: str) -> None:
        if not self._open() or self.transport.is_closing():
            return
        ws = self._parser()
        ws.send_close(code, reason)
        self._send_pending(ws)
        # Keep reading, to see the client's reply; cut the socket if it never comes.
        self._backlog = None
        self._resume_reading()
        # abort, not close: a transport's close waits for its buffer to drain, and the
        # buffer of a client that does not answer may never drain.
        self._close_timer = asyncio.get_running_loop().call_later(
            self._host.tandem.settings.close_timeout, self.transport.abort
        )

    def drain(self, connection: Connection) -> None:
        """Nothing to do: ``resume_writing`` wakes the connection."""

    def abort(self) -> None:
        cut(self.transport)  # a reset: the kernel does not keep what the client never read

    def _send_pending(self, ws: ServerProtocol) -> None:
        data = ws.data_to_send()
        if data:
            self.transport.write(b"".join(data))


def _peer(transport: asyncio.BaseTransport) -> tuple[str, int]:
    """The (host, port) uvicorn puts in an ASGI scope's ``client`` for this socket."""
    peer = transport.get_extra_info("peername")
    return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("", 0)
