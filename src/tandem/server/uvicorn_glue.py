"""Uses uvicorn and websockets internals; tested against uvicorn 0.50–0.55, websockets 16–17.

The one module of Tandem that reaches into another library's private parts
(the architecture test holds every other module to their public API, and
``pyproject.toml`` pins both libraries to the range above: uvicorn 0.49 and
websockets 15 fail this module's tests). It holds only the code that relies
on them, and composes Tandem's own parts: ``tandem serve``'s ``/collab``
sockets are ``tandem.server.collab_transport.CollabProtocol``, to which
``CollabServer`` describes uvicorn as a ``Host``. What it relies on:

* uvicorn: that ``Config(ws=...)`` accepts a protocol factory and calls it with
  ``(config, server_state, app_state)``, and calls ``shutdown()`` on each of
  ``ServerState.connections`` and waits for ``.tasks`` when it stops;
  ``ServerState.default_headers``; ``WebSocketsSansIOProtocol`` (the protocol
  other WebSocket paths are handed to) and its ``close_timeout`` attribute
  (set from ``Settings.close_timeout``); the ``parser`` attribute of its
  httptools protocol (``release_http_protocol``); ``HttpToolsProtocol``'s
  ``connection_made``, ``on_headers_complete`` and ``connection_lost`` (the
  handshake deadline); ``Server.handle_exit`` (``serve``'s second-signal exit).
* websockets: for the frame fast path, its parser's state (``current_size``,
  the generator's ``gi_yieldfrom`` chain) and ``parser_exc`` as websockets
  16–17 keep them, and its C unmasking (``websockets.speedups``);
  ``tests/property/test_frames.py`` checks the two frame readers agree.

Must not import FastAPI or Starlette.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.server import ServerProtocol

try:  # websockets' C unmasking, which its own parser uses when it is built
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without it
    from websockets.utils import apply_mask

from tandem.redaction import redacting
from tandem.server.collab_transport import CollabProtocol, Host
from tandem.server.deadlines import Deadline, deadlines

if TYPE_CHECKING:
    from types import FrameType

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from tandem.server.context import Context

__all__ = ["CollabServer", "log_config", "release_http_protocol", "serve"]


class CollabServer:
    """What uvicorn's ``ws=`` option gets: one ``CollabProtocol`` per upgraded socket."""

    path = "/collab"

    def __init__(self, tandem: Context) -> None:
        self.tandem = tandem
        self._host: Host | None = None

    def __call__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> CollabProtocol:
        # One Host per server, rebuilt if its config changed: each socket sees the
        # config of the moment it connected, as uvicorn's own protocols do.
        host = self._host
        if (
            host is None
            or host.connections is not server_state.connections
            or (host.max_size, host.ping_interval, host.ping_timeout)
            != (config.ws_max_size, config.ws_ping_interval, config.ws_ping_timeout)
        ):
            host = self._host = self._host_for(config, server_state, app_state)
        return CollabProtocol(host)

    def _host_for(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any]
    ) -> Host:
        def hand_over(transport: asyncio.Transport, head: bytes) -> asyncio.Protocol:
            other = WebSocketsSansIOProtocol(
                config=config, server_state=server_state, app_state=app_state
            )
            # uvicorn fixes its close timer at 10 s; Tandem's setting governs every path.
            other.close_timeout = self.tandem.settings.close_timeout
            metered = MeteredInput(other, transport)
            other.connection_made(metered.gate)  # type: ignore[arg-type]
            metered.data_received(head)
            return metered

        return Host(
            tandem=self.tandem,
            path=self.path,
            connections=server_state.connections,
            tasks=server_state.tasks,
            response_headers=lambda: server_state.default_headers,
            max_size=config.ws_max_size,
            ping_interval=config.ws_ping_interval,
            ping_timeout=config.ws_ping_timeout,
            release=release_http_protocol,
            hand_over=hand_over,
            at_frame_start=at_frame_start,
            parser_failed=parser_failed,
            unmask=apply_mask,
        )


#: Bytes of input handed to uvicorn's protocol at a time (one event-loop turn each).
INPUT_SLICE = 8 << 10
#: Input parsed once the app has closed a socket (its client's close reply, and
#: what it had in flight); past it the socket is no longer read.
AFTER_CLOSE = 4 << 10


class _Gate:
    """The transport as uvicorn's ``WebSocketsSansIOProtocol`` sees it.

    Everything is the real transport's, except reading: uvicorn pauses it when
    it has queued a message for the app and resumes it when the app has taken
    them all; the gate records that for ``MeteredInput``, which decides when
    the real socket is read.
    """

    def __init__(self, transport: asyncio.Transport, resumed: Any) -> None:
        self._transport = transport
        self._resumed = resumed
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        self._resumed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class MeteredInput(asyncio.Protocol):
    """Backpressure for ``/yjs`` and ``/hocuspocus``: input is read only as the app takes it.

    uvicorn's sans-I/O protocol parses everything a read brings (up to 256 KiB,
    thousands of small frames) into its receive queue at once, however busy the
    handler is, and pauses reading only after that. Here a read is handed over
    ``INPUT_SLICE`` bytes per event-loop turn, and only while uvicorn's queue is
    empty; meanwhile the socket is not read, so what a connection holds of its
    client's input is one read, one slice's messages and one partial frame
    (docs/security.md, "Resource model"). Once the app has closed the socket
    (``close_sent``), uvicorn still parses whatever arrives while it waits for the
    close reply (up to ``close_timeout``), only to discard it: past
    ``AFTER_CLOSE`` bytes the socket is not read any more, and uvicorn's close
    timer ends it (the client has our close frame either way).
    """

    def __init__(self, inner: WebSocketsSansIOProtocol, transport: asyncio.Transport) -> None:
        self.inner = inner
        self.transport = transport
        self.gate = _Gate(transport, self._resumed)
        self._pending = b""
        self._at = 0
        self._reading = True
        self._scheduled = False
        self._after_close = 0
        self._stopped = False

    def data_received(self, data: bytes) -> None:
        if self.inner.close_sent:
            self._after_close += len(data)
            if self._after_close > AFTER_CLOSE:
                # Not worth parsing: no more reading; uvicorn's close timer ends it.
                self._stopped = True
                self._pending, self._at = b"", 0
                if self._reading and not self.transport.is_closing():
                    self._reading = False
                    self.transport.pause_reading()
                return
        if self._at < len(self._pending):
            self._pending = self._pending[self._at :] + data
        else:
            self._pending = data
        self._at = 0
        self._feed()

    def _resumed(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._feed)

    def _feed(self) -> None:
        self._scheduled = False
        if self._at < len(self._pending) and not self.gate.paused:
            chunk = self._pending[self._at : self._at + INPUT_SLICE]
            self._at += len(chunk)
            self.inner.data_received(chunk)
            if self._at < len(self._pending) and not self.gate.paused:
                self._resumed()  # the next slice on the next turn
        if self._at >= len(self._pending):
            self._pending, self._at = b"", 0
        reading = not self.gate.paused and not self._pending and not self._stopped
        if reading != self._reading and not self.transport.is_closing():
            self._reading = reading
            if reading:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def eof_received(self) -> None:
        self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._pending = b""
        self.inner.connection_lost(exc)

    def shutdown(self) -> None:
        self.inner.shutdown()


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


def at_frame_start(ws: ServerProtocol) -> bool:
    """Is websockets' parser waiting for a frame to start, not inside one?

    Not inside a fragmented message (``current_size``), and not inside a frame:
    its buffer alone cannot tell, since once a frame's header and mask are read it
    waits for the payload with an empty buffer. Between frames its generator
    waits in ``StreamReader.at_eof`` (which implies an empty buffer); inside a
    frame, in ``read_exact``.
    """
    if ws.current_size is not None:
        return False
    waiting: Any = ws.parser
    while (inner := getattr(waiting, "gi_yieldfrom", None)) is not None:
        waiting = inner
    return getattr(waiting, "__name__", "") == "at_eof"


def parser_failed(ws: ServerProtocol) -> bool:
    """Did websockets' parser fail the connection (a protocol error, 1002; too big, 1009)?"""
    return ws.parser_exc is not None


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
    return redacting(LOGGING_CONFIG)
