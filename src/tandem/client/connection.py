"""The asyncio Python client: one WebSocket, reconnects, and a handle per joined document.

Owns the I/O around ``tandem.client.state.ClientState``: connecting (token and
client id in the query string), reading frames (a frame may be a JSON array
of messages, processed in order), a writer task per connection, re-joining
every document after a reconnect (``join`` with ``v``, then resending the
in-flight op with its original ``seq``), exponential backoff with jitter
cycling through the server URLs, and the public ``TandemClient`` API (a
joined document is a ``tandem.client.document.DocumentHandle``). Every
decision about ops is ``ClientState``'s; this module only moves messages and
wakes waiters.

Edits are synchronous: they apply locally at once and go out when the
connection is up, so typing keeps working while disconnected (edits compose
into the buffer and are sent after the catch-up). When a catch-up is costly to
transform them through (``merge_threshold``, see ``ClientState.merge_cost``),
they go as one offline ``merge`` instead, and the ``merged`` reply brings the
document up to date (docs/protocol.md, "Offline merge").

Must not import the server, storage or bus.

Example::

    async with TandemClient("ws://localhost:8080/collab", token) as client:
        notes = await client.join("notes")
        notes.insert(0, "Hello")
        await notes.synced()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tandem.client.carryover import carry_over
from tandem.client.document import (
    Change,
    ClientClosed,
    DocumentHandle,
    ServerError,
)
from tandem.client.state import MERGE_AT, ClientState
from tandem.errors import TandemError
from tandem.ot.delta import Delta
from tandem.tasks import cancel_and_wait

__all__ = ["TandemClient"]

log = logging.getLogger(__name__)

TokenSource = str | Callable[[], str | Awaitable[str]]

#: Close codes after which reconnecting with the same token is pointless.
AUTH_CLOSE_CODES: Final = frozenset({4401, 4403})
#: Error codes for an op that was not applied but may simply be sent again.
RETRY_CODES: Final = frozenset({"ERR_RATE_LIMITED", "ERR_STORAGE", "ERR_INTERNAL"})


class TandemClient:
    """A connection to a Tandem server, kept up across failures (see the module docstring).

    ``urls`` are ``ws://…/collab`` endpoints of one deployment, tried in turn;
    ``token`` is a JWT, or a function (sync or async) returning a fresh one,
    called before every connection attempt. It is sent in an ``Authorization:
    Bearer`` header; ``token_in_query=True`` opts in to ``?token=`` instead
    (URLs end up in proxy and server logs, so only where a header cannot pass).
    """

    def __init__(
        self,
        urls: Sequence[str] | str,
        token: TokenSource,
        *,
        client_id: str | None = None,
        initial_backoff: float = 0.05,
        max_backoff: float = 5.0,
        open_timeout: float = 10.0,
        max_frame_bytes: int = 16 << 20,
        connect_options: Mapping[str, Any] | None = None,
        rng: random.Random | None = None,
        merge_threshold: int | None = MERGE_AT,
        token_in_query: bool = False,
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("give at least one server URL")
        self._token = token
        self._token_in_query = token_in_query
        #: Our stable client id, kept across reconnects so resends are recognised.
        self.client_id = client_id or "py-" + secrets.token_hex(8)
        self.user: str | None = None
        self.name: str | None = None
        #: When the token expires (seconds since the epoch), from hello/token_expiring.
        self.expires: float | None = None
        #: Successful connections so far (1 after the first).
        self.connections = 0
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._open_timeout = open_timeout
        self._max_frame_bytes = max_frame_bytes
        self._connect_options = dict(connect_options or {})
        self._rng = rng or random.Random()
        #: ``ClientState.merge_cost`` from which a catch-up becomes a ``merge`` (None: never).
        self.merge_threshold = merge_threshold
        self._handles: dict[str, DocumentHandle] = {}
        self._outbox: asyncio.Queue[str] | None = None
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._closing = False
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._ping_ids = 0
        self._retry: asyncio.TimerHandle | None = None
        #: ``error`` messages not tied to a document.
        self.errors: deque[ServerError] = deque(maxlen=32)

    # -- lifecycle ------------------------------------------------------------

    async def __aenter__(self) -> TandemClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while a connection is up and greeted."""
        return self._outbox is not None

    async def connect(self, timeout: float | None = None) -> None:
        """Start the connection loop and wait for the first ``hello``."""
        if self._closing:
            raise ClientClosed("the client is closed")
        if self._runner is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._runner = asyncio.create_task(self._run(), name=f"tandem-client-{self.client_id}")
        assert self._ready is not None
        await asyncio.wait_for(asyncio.shield(self._ready), timeout)

    async def close(self) -> None:
        """Close the connection, stop reconnecting, fail waiters; leaves no task behind."""
        self._closing = True
        error = ClientClosed("the client was closed")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        await cancel_and_wait(self._runner)
        for handle in list(self._handles.values()):
            handle._finish(error)
        for future in self._pings.values():
            if not future.done():
                future.set_exception(error)
                future.exception()
        self._pings.clear()

    async def join(self, doc: str, timeout: float | None = None) -> DocumentHandle:
        """Open ``doc`` and wait for its content (the server's snapshot)."""
        if self._closing:
            raise ClientClosed("the client is closed")
        if self._runner is None:
            await self.connect(timeout)
        handle = self._handles.get(doc)
        if handle is None:
            handle = DocumentHandle(self, doc)
            self._handles[doc] = handle
            if self.connected:
                self._send(handle._join_message())
        await asyncio.wait_for(asyncio.shield(handle._joined), timeout)
        return handle

    async def ping(self, timeout: float | None = 10.0) -> None:
        """Send an application ``ping`` and wait for its ``pong``."""
        if self._closing:
            raise ClientClosed("the client is closed")
        self._ping_ids += 1
        ping_id = self._ping_ids
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[ping_id] = future
        self._send({"type": "ping", "id": ping_id})
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            self._pings.pop(ping_id, None)
            if not future.done():
                future.cancel()

    async def disconnect(self) -> None:
        """Drop the current connection (the client reconnects): for tests and token refresh."""
        if self._ws is not None:
            await self._ws.close()

    # -- the connection loop ------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        index = 0
        while not self._closing:
            url = self.urls[index % len(self.urls)]
            try:
                token = await self._get_token()
                options = dict(self._connect_options)
                if not self._token_in_query:
                    headers = dict(options.pop("additional_headers", None) or {})
                    options["additional_headers"] = {**headers, "Authorization": f"Bearer {token}"}
                async with connect(
                    _endpoint(url, token if self._token_in_query else None, self.client_id),
                    open_timeout=self._open_timeout,
                    max_size=self._max_frame_bytes,
                    **options,
                ) as ws:
                    greeted = await self._session(ws)
                    if greeted:
                        attempt = 0
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code in AUTH_CLOSE_CODES and isinstance(self._token, str):
                    self._fail(ClientClosed(f"the server refused the token (close {code})"))
                    return
                log.info("connection to %s closed (%s)", url, code)
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403) and isinstance(self._token, str):
                    self._fail(ClientClosed(f"the server refused the token (HTTP {status})"))
                    return
                log.info("connecting to %s failed: HTTP %s", url, status)
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                log.info("connecting to %s failed: %r", url, exc)
            finally:
                self._disconnected()
            if self._closing:
                return
            delay = min(self._max_backoff, self._initial_backoff * 2**attempt)
            attempt = min(attempt + 1, 30)
            index += 1
            await asyncio.sleep(self._rng.uniform(delay / 2, delay))

    async def _get_token(self) -> str:
        if isinstance(self._token, str):
            return self._token
        token = self._token()
        if inspect.isawaitable(token):
            token = await token
        return str(token)

    async def _session(self, ws: ClientConnection) -> bool:
        """Run one connection until it closes; True when it got as far as ``hello``."""
        self._ws = ws
        greeted = False
        outbox: asyncio.Queue[str] = asyncio.Queue()
        writer = asyncio.create_task(self._write(ws, outbox), name="tandem-client-writer")
        try:
            async for frame in ws:
                text = frame.decode() if isinstance(frame, bytes) else frame
                data = orjson.loads(text)
                for message in data if isinstance(data, list) else [data]:
                    if not greeted:
                        if message.get("type") != "hello":
                            log.warning("expected hello, got %r", message.get("type"))
                            continue
                        greeted = True
                        self._outbox = outbox
                        self._hello(message)
                        continue
                    self._dispatch(message)
        finally:
            await cancel_and_wait(writer)
        return greeted

    async def _write(self, ws: ClientConnection, outbox: asyncio.Queue[str]) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send(await outbox.get())

    def _send(self, message: Mapping[str, Any]) -> None:
        """Queue a message on the current connection; dropped while disconnected."""
        if self._outbox is not None:
            self._outbox.put_nowait(orjson.dumps(message).decode())

    def _forget(self, doc: str) -> None:
        self._handles.pop(doc, None)

    def _disconnected(self) -> None:
        self._ws = None
        self._outbox = None
        for handle in self._handles.values():
            handle.live = False

    def _fail(self, error: BaseException) -> None:
        self._closing = True
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # retrieved: connect() may never be awaited
        for handle in self._handles.values():
            handle._finish(error)

    # -- dispatch ----------------------------------------------------------------

    def _hello(self, message: Mapping[str, Any]) -> None:
        self.connections += 1
        self.client_id = message.get("client") or self.client_id
        self.user = message.get("user")
        self.name = message.get("name")
        self.expires = message.get("expires")
        for handle in self._handles.values():
            if handle._state is not None:
                handle._state.client_id = self.client_id
            self._send(handle._join_message())
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _dispatch(self, message: Mapping[str, Any]) -> None:
        kind = message.get("type")
        if kind == "pong":
            future = self._pings.get(message.get("id"))  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind == "token_expiring":
            # At expiry the server closes with 4401; a token function is then
            # asked for a fresh token on the reconnect.
            self.expires = message.get("expires")
            return
        if kind == "error" and message.get("doc") is None and not _is_join_ref(message):
            error = ServerError(message.get("code", ""), message.get("message", ""))
            self.errors.append(error)
            log.warning("server error: %s %s", error.code, error.message)
            if error.code in RETRY_CODES:
                # A message was dropped before the server could tell which one:
                # repeat whatever may be waiting on it (both are idempotent).
                self._schedule(self._repeat_pending)
            return
        doc = message.get("doc")
        if doc is None and isinstance(message.get("ref"), str):
            doc = message["ref"].removeprefix("join:")
        handle = self._handles.get(doc) if isinstance(doc, str) else None
        if handle is None:
            return
        try:
            self._dispatch_document(handle, kind, message)
        except TandemError as exc:
            # A gap, a stray ack, or a bad op from the server: re-join to catch up.
            log.warning("re-joining %r after %s: %s", handle.doc, exc.code, exc.message)
            handle._rejoin()

    def _dispatch_document(
        self, handle: DocumentHandle, kind: object, message: Mapping[str, Any]
    ) -> None:
        if kind == "snapshot":
            self._snapshot(handle, message)
            return
        if kind == "error":
            self._error(handle, message)
            return
        state = handle.state
        if kind == "catchup":
            change = state.catchup(message.get("ops") or ())
            handle._remote_change(Change(change, state.version, True))
            handle._loaded(message)
            return
        if not handle.live:
            # Between a re-join and its answer: the catch-up covers these.
            return
        if kind == "op":
            delta = Delta.from_json(message["op"])
            applied = state.receive_op(message["v"], delta, message.get("client"))
            handle._remote_change(
                Change(applied, state.version, True, message.get("client"), message.get("user"))
            )
        elif kind == "ack":
            next_message = state.receive_ack(message.get("seq"), message["v"])
            if next_message is not None:
                handle._send(next_message)
            handle._wake()
        elif kind == "merged":
            applied, next_message = state.receive_merged(
                message.get("seq"), message["v"], Delta.from_json(message["op"])
            )
            handle._remote_change(Change(applied, state.version, True))
            if next_message is not None:
                handle._send(next_message)
            handle._wake()
        elif kind == "presence":
            handle._presence(message)

    def _snapshot(self, handle: DocumentHandle, message: Mapping[str, Any]) -> None:
        content = Delta.from_json(message["content"])
        if handle._state is None:
            handle._state = ClientState(
                handle.doc,
                self.client_id,
                content=content,
                version=message["v"],
                merge_at=self.merge_threshold,
            )
        elif handle._state.merging is not None and not _other_incarnation(handle, message):
            # The merge is kept: completed here if committed, else resent by _loaded.
            state = handle._state
            change = state.snapshot_while_merging(message["v"], content, message.get("last_seq"))
            handle._remote_change(Change(change, state.version, True))
        else:
            # Another history (a power loss, a restore): the edits are carried over
            # (a merge too: its base version counts in the old incarnation).
            state = handle._state
            change, _ = carry_over(state, message["v"], content, message.get("last_seq"))
            handle._remote_change(Change(change, state.version, True))
        handle._loaded(message)  # sends the carried-over edits, now in flight

    def _error(self, handle: DocumentHandle, message: Mapping[str, Any]) -> None:
        code, text = message.get("code", ""), message.get("message", "")
        error = ServerError(code, text, message.get("rejection"))
        handle.errors.append(error)
        log.warning("error on %r: %s %s", handle.doc, error.code, error.message)
        if _is_join_ref(message) and not handle._joined.done():
            self._handles.pop(handle.doc, None)
            handle._finish(error)
            return
        state = handle._state
        seq = message.get("seq")
        if state is None:
            return
        in_flight = state.merging or state.inflight
        if in_flight is None or seq != in_flight.seq:
            return
        if error.code in RETRY_CODES:
            # Not applied, and safe to send again (idempotent by seq) after a pause.
            self._schedule(self._repeat_pending)
            return
        # The op (or merge) failed: drop it (and the buffer on top of it) and catch up.
        undo = state.discard_pending()
        handle._remote_change(Change(undo, state.version, True))
        handle._wake()
        handle._rejoin()

    def _schedule(self, callback: Callable[[], None]) -> None:
        if self._retry is None:
            delay = max(self._initial_backoff, 0.01) * 4
            self._retry = asyncio.get_running_loop().call_later(delay, callback)

    def _repeat_pending(self) -> None:
        """Resend joins not yet answered and in-flight ops (after a dropped message)."""
        self._retry = None
        for handle in self._handles.values():
            if not handle.live:
                self._send(handle._join_message())
            else:
                message = handle._state.resend() if handle._state is not None else None
                if message is not None:
                    handle._send(message)


def _is_join_ref(message: Mapping[str, Any]) -> bool:
    ref = message.get("ref")
    return isinstance(ref, str) and ref.startswith("join:")


def _endpoint(url: str, token: str | None, client_id: str) -> str:
    """``url`` with ``/collab`` as the default path, the client id and (opt-in) the token."""
    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else "/collab"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("token", "client")]
    if token is not None:
        query.append(("token", token))
    query.append(("client", client_id))
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), parts.fragment))


def _other_incarnation(handle: DocumentHandle, message: Mapping[str, Any]) -> bool:
    """Does this snapshot belong to another incarnation than the handle's version?"""
    incarnation = message.get("i")
    return handle.incarnation is not None and incarnation not in (None, handle.incarnation)
