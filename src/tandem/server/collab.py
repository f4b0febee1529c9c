"""The ``/collab`` WebSocket: frame → protocol → documents → frame; nothing else.

One ``Connection`` per socket. It parses each frame and dispatches it to the
document sessions (``handle``). The first message for a client in an
event-loop tick is written at once, while its socket is writable and nothing
waits before it: a broadcast's first reader hears of an op without waiting for
the fan-out to reach the last member (at 1,000 members that fan-out is ~0.7 ms
before the first write). What else the sessions send that client in the same
tick is queued and goes out as one frame once the tick's work is done: a single
``_Flusher`` callback per tick visits every connection that has something
queued, and a batch that several clients share (a broadcast) is framed once for
all of them. So a connection is written at most twice a tick, however many
messages the tick made for it. The queue is bounded: a client that stops
reading is dropped with ``ERR_SLOW_CONSUMER`` (close 4408) rather than slowing
its document or growing memory.

A connection writes to a ``Wire``. Under ``tandem serve`` the wire is the
socket's own asyncio protocol (``tandem.server.collab_transport``): frames are
written straight to the transport while it is writable, and the queue waits for
``resume_writing`` when it is not; there is no task per connection. Where
Tandem's router runs inside another ASGI server, ``serve_collab``
(``tandem.server.collab_asgi``) drives the same ``Connection`` over Starlette's
``WebSocket``, whose sends are awaited by a writer task that exists only while
there is something to send.

Every exception raised while handling a message becomes exactly one ``error``
reply; only fatal ones (auth, oversized frames, slow consumer) close the
socket, with the code ``TandemError.close_code`` gives. Token expiry (a warning,
then close 4401) uses the shared ``deadlines`` heap, not a timer per socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from tandem.auth import Principal
from tandem.errors import (
    JoinLimitExceeded,
    NotJoined,
    RateLimited,
    SlowConsumer,
    StorageError,
    TandemError,
    TokenExpired,
)
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
)
from tandem.server.admission import (
    ANSWER_BYTES_PER_MESSAGE,
    TRACKED_BYTES,
    Slot,
    settle,
)
from tandem.server.deadlines import Deadline, deadlines
from tandem.server.sessions import LiveSession
from tandem.session.delivery import Member
from tandem.session.document import DocumentSession

if TYPE_CHECKING:
    from tandem.server.context import Context

__all__ = ["Connection", "Wire", "text_frame"]

log = logging.getLogger("tandem.collab")


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


class Wire(Protocol):
    """Where a ``Connection``'s frames go."""

    def writable(self) -> bool:
        """True when frames may be written now, without waiting."""

    def write(self, frame: bytes) -> int:
        """Write one ready-made text frame if ``writable``, and return ``buffered()``;
        -1 (nothing written) if not.

        One call per delivery instead of three: a broadcast writes to every member."""

    def send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake (only while ``writable``)."""

    def drain(self, connection: Connection) -> None:
        """Not writable now: send ``connection``'s queue, and its close, once possible."""

    def abort(self) -> None:
        """Drop the connection without the client's cooperation."""

    def buffered(self) -> int:
        """Bytes written but not yet taken by the network (the socket's send buffer)."""


class _Flusher:
    """Once per event-loop tick, sends what each connection queued during it.

    Batches made of the very same message objects (a broadcast every member
    received in the same tick) are joined and framed once per tick. ``tick``
    counts its runs: a connection that wrote a message at once in this tick
    (``frame``) queues the next until this runs.
    """

    def __init__(self) -> None:
        self._dirty: list[Connection] = []
        #: The loop this tick's flush is scheduled on, if it is (a test's loop may close
        #: before its flush ran: the next loop schedules its own).
        self._due: asyncio.AbstractEventLoop | None = None
        self.tick = 0
        #: The last message written at once, and its frame (a broadcast's, to every
        #: member in turn); the message is kept so its frame is not taken for another.
        self._written: tuple[str | None, bytes] = (None, b"")

    def schedule(self, connection: Connection) -> None:
        self._end_of_tick()
        self._dirty.append(connection)

    def frame(self, message: str) -> bytes:
        """The frame of ``message``, written at once; the end of this tick is scheduled."""
        due = self._due
        if due is None or not due.is_running():  # _end_of_tick, inlined: once per delivery
            self._end_of_tick()
        written = self._written
        if written[0] is message:
            return written[1]
        frame = text_frame(message.encode())
        self._written = (message, frame)
        return frame

    def _end_of_tick(self) -> None:
        due = self._due
        if due is not None and due.is_running():
            # Scheduled already, on the running loop: this runs once per delivery, and
            # ``get_running_loop`` costs a ``getpid`` system call each time (CPython 3.11).
            return
        loop = asyncio.get_running_loop()
        if self._due is not loop:
            self._due = loop
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._due = None
        self.tick += 1
        self._written = (None, b"")
        dirty, self._dirty = self._dirty, []
        # key: the id of the message, or the ids of the messages in order -> (the
        # messages, kept alive so no id is reused, and the frame)
        frames: dict[Any, tuple[Sequence[str], bytes]] = {}
        for connection in dirty:
            connection.flush(frames)


_flusher = _Flusher()


class Connection:
    """One client socket: identity, joined documents, bounded outbound queue."""

    __slots__ = (
        "wire",
        "principal",
        "client",
        "user",
        "name",
        "ip",
        "slot",
        "tandem",
        "documents",
        "closed",
        "_queue",
        "_queued",
        "_largest",
        "_room",
        "_track_at",
        "_limit",
        "_scheduled",
        "_wrote",
        "_closing",
        "_bucket",
        "_expiry",
        "session_id",
    )

    def __init__(
        self,
        wire: Wire,
        principal: Principal,
        client: str,
        tandem: Context,
        slot: Slot | None = None,
    ) -> None:
        self.wire = wire
        self.principal = principal
        self.client = client
        self.user = principal.user
        self.name = principal.name
        self.ip = (slot.ip if slot is not None else None) or ""
        #: Its place in the connection caps, given back when it ends.
        self.slot = slot
        self.tandem = tandem
        settings = tandem.settings
        self.documents: dict[str, DocumentSession] = {}
        #: The close frame went out, or the peer is gone: stop reading.
        self.closed = False
        #: Messages not yet sent (a list: it is always taken whole), or ``()`` when
        #: none: an idle connection keeps no list for the garbage collector to walk.
        self._queue: list[str] | tuple[()] = ()
        #: Bytes in ``_queue``, and the largest message queued or written yet.
        self._queued = 0
        self._largest = 0
        #: ``max_connection_bytes``: what may be held beyond the largest message.
        self._room = settings.max_connection_bytes
        #: What the socket's buffer must reach after a write to be reported to the
        #: server's ``Budget``: ``TRACKED_BYTES``, or 0 (every write) while it holds more.
        self._track_at = TRACKED_BYTES
        self._limit = settings.send_queue_frames
        self._scheduled = False
        #: The flusher's ``tick`` in which a message was last written at once.
        self._wrote = -1
        self._closing: tuple[int, str] | None = None
        self._bucket = tandem.admission.bucket(time.monotonic())
        self._expiry: Deadline | None = None
        #: This connection's entry in ``tandem.sessions`` (only the id: no reference cycle).
        self.session_id = ""

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    # -- life ------------------------------------------------------------------------

    def opened(self) -> None:
        """Count the connection, say hello, and watch the token's expiry."""
        self.tandem.metrics.connection_opened("collab")
        principal = self.principal
        live = LiveSession("collab", principal, self.ip, time.time(), self)
        self.tandem.sessions.add(live)
        self.tandem.shutdown.opened(self)
        self.session_id = live.id
        hello = hello_message(self.client, principal.user, principal.name, principal.expires)
        self.send(encode(hello))
        if principal.expires is not None:
            left = principal.expires - time.time()
            warning = self.tandem.settings.token_expiry_warning
            if left > warning:
                self._expiry = deadlines.add(left - warning, Connection._token_expiring, self)
            else:
                self._token_expiring()

    def ended(self) -> None:
        """The socket is gone (or going): leave every document and release its slot."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.leave_all()
        self.tandem.admission.budget.release(self)
        self.tandem.sessions.discard(self.session_id)
        self.tandem.shutdown.ended(self)
        if self.slot is not None:
            self.slot.release()
        self.tandem.metrics.connection_closed("collab")

    def end_session(self, error: TandemError) -> None:
        """``LiveSession.end``: ``error`` as its reply, then close, whatever the error.

        A revocation, a deleted document or an administrator ends the connection:
        with the error's close code, or 4403 (access ended) for one that would
        otherwise leave it open (``ERR_FORBIDDEN`` from ``DELETE
        /api/admin/sessions/{id}``), as ``/yjs`` and ``/hocuspocus`` do.
        """
        self.tandem.metrics.error(error.code)
        self.send(encode(error_message(error)))
        self.close(error.close_code or 4403, error.code)

    def joined_documents(self) -> list[str]:
        return list(self.documents)

    def _token_expiring(self) -> None:
        expires = self.principal.expires or 0.0
        self.send(encode({"type": "token_expiring", "expires": int(expires)}))
        self._expiry = deadlines.add(
            max(expires - time.time(), 0.0), Connection._token_expired, self
        )

    def _token_expired(self) -> None:
        self._expiry = None
        self.reply_error(TokenExpired("your token has expired; reconnect with a fresh one"))

    # -- outbound ---------------------------------------------------------------

    def send(self, message: str) -> None:
        if self._closing is not None:
            return
        queue = self._queue
        size = len(message)
        if size > self._largest:
            self._largest = size
        if queue:
            if len(queue) >= self._limit:
                self.shed()
                return
            queue.append(message)
            queued = self._queued = self._queued + size
            if queued > self._room + self._largest:
                self.shed()
                return
        else:
            flusher = _flusher
            tick = flusher.tick
            if not self._scheduled and self._wrote != tick and not self.closed:
                # The first message of this tick, nothing before it: written now if the
                # wire is writable (-1: it is not, and the message is queued below).
                buffered = self.wire.write(flusher.frame(message))
                if buffered >= 0:
                    self._wrote = tick
                    if buffered >= self._track_at:
                        self._hold(buffered)
                    return
            # The first message since the last flush (a broadcast's usual case, once per
            # member): the frame limit is at least 1, and one message is at most the
            # largest while room is never negative, so neither bound can fail; only its
            # size is kept (``_queued`` is not reset by ``flush``: this sets it).
            self._queue = [message]
            self._queued = size
        if not self._scheduled:  # _schedule, inlined: this runs once per delivery
            self._scheduled = True
            _flusher.schedule(self)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            _flusher.schedule(self)

    def wake(self) -> None:
        """The wire became writable again: send what waited."""
        if self._queue or self._closing is not None:
            self._schedule()

    def flush(self, frames: dict[Any, tuple[Sequence[str], bytes]] | None = None) -> None:
        """Send what is queued (and the close, if asked) if the wire is writable."""
        self._scheduled = False
        if self.closed:
            return
        wire = self.wire
        if not wire.writable():
            self._hold((self._queued if self._queue else 0) + wire.buffered())
            wire.drain(self)
            return
        messages = self._queue
        if messages:
            self._queue = ()  # ``_queued`` is stale until the next send sets it
            key = id(messages[0]) if len(messages) == 1 else tuple(map(id, messages))
            known = None if frames is None else frames.get(key)
            if known is None:
                known = (messages, text_frame(batch(messages).encode()))
                if frames is not None:
                    frames[key] = known
            buffered = wire.write(known[1])
            if buffered >= self._track_at:
                self._hold(buffered)
        if self._closing is not None:
            self.closed = True
            wire.send_close(*self._closing)

    def _hold(self, held: int) -> None:
        """Report ``held`` bytes to the server's budget; over this connection's: shed."""
        if self._closing is not None:
            return
        self._track_at = 0 if held >= TRACKED_BYTES else TRACKED_BYTES
        budget = self.tandem.admission.budget
        if budget.over(held, self._largest):
            self.shed()
        else:
            budget.hold(self, held)

    def shed(self) -> None:
        """Drop this client as a slow consumer: what it has not read is discarded, it is
        told why (``ERR_SLOW_CONSUMER``), and cut after ``slow_consumer_grace``."""
        if self._closing is not None:
            return
        self.tandem.metrics.slow_consumer()
        self.tandem.admission.budget.release(self)
        error = SlowConsumer("you are not reading your messages fast enough; reconnect")
        self._queue = [encode(error_message(error))]
        self._queued = 0
        self.close(error.close_code or 4408, "slow consumer")

    def take(self) -> Sequence[str]:
        """Everything queued, for a wire that sends it itself; the queue is emptied."""
        messages, self._queue = self._queue, ()
        self._queued = 0
        return messages

    @property
    def closing(self) -> tuple[int, str] | None:
        """The ``(code, reason)`` to close with once the queue is out, if asked."""
        return self._closing

    def close(self, code: int, reason: str) -> None:
        """Flush what is queued, then close with ``code``."""
        if self._closing is None:
            self._closing = (code, reason)
            self._schedule()
            if code == SlowConsumer.close_code:
                # A client that never reads again would keep the close waiting on flow
                # control forever: cut the connection if it has not gone out soon.
                grace = self.tandem.settings.slow_consumer_grace
                asyncio.get_running_loop().call_later(grace, self._abort)

    def _abort(self) -> None:
        # Even once the close frame is written: it may sit behind what the client never
        # reads, and a transport's close waits for its buffer to drain.
        self.closed = True
        self.wire.abort()

    def reply_error(self, error: TandemError, **where: Any) -> None:
        self.tandem.metrics.error(error.code)
        self.send(encode(error_message(error, **where)))  # counted like any reply
        if error.close_code is not None:
            self.close(error.close_code, error.code)

    # -- inbound ------------------------------------------------------------------

    async def handle(self, frame: str | bytes) -> None:
        """Handle one frame; any error becomes one reply.

        While the node shuts down a frame is dropped unanswered: its op stays
        unacknowledged at the client, which resends it where it reconnects
        (``tandem.server.shutdown``).
        """
        tandem = self.tandem
        if tandem.draining:
            return
        shutdown = tandem.shutdown
        shutdown.started_handling()
        where: dict[str, Any] = {}
        owed = 0.0
        try:
            if not self._bucket.take(time.monotonic()):
                raise RateLimited("too many messages; slow down (the message was dropped)")
            message = parse(
                frame,
                max_bytes=tandem.settings.max_frame_bytes,
                max_components=tandem.settings.max_op_components,
                max_merge_ops=tandem.settings.max_merge_ops,
            )
            if isinstance(message, Submit | Merge):
                where = {"seq": message.seq, "ref": message.ref, "doc": message.doc}
                session = self._session(message.doc)
                where["doc"] = session.doc
                member = session.member(self)
                session.touch(self, time.monotonic())
                if isinstance(message, Submit):
                    await session.submit(
                        member, message.op, message.base_version, message.seq, message.ref
                    )
                else:
                    await self._merge(session, member, message)
            elif isinstance(message, Presence):
                where = {"ref": message.ref, "doc": message.doc}
                session = self._session(message.doc)
                where["doc"] = session.doc
                session.presence.update(
                    session.member(self),
                    message.cursor,
                    message.state,
                    message.base_version,
                    time.monotonic(),
                )
            elif isinstance(message, Join):
                where = {"ref": message.ref, "doc": message.doc}
                owed = await self.join(message) / ANSWER_BYTES_PER_MESSAGE
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
        finally:
            shutdown.finished_handling()
        if owed:
            # Charged once sent, outside the drain's wait: the connection waits, its
            # later frames unread (the transport pauses reading while a handler runs).
            await settle(self._bucket, owed)

    async def _merge(self, session: DocumentSession, member: Member, message: Merge) -> None:
        """An offline merge, counted by outcome (``tandem_merges_total``, operations.md)."""
        try:
            await session.offline.merge(
                member, message.base_version, message.seq, list(message.ops), message.ref
            )
        except Exception as error:
            refused = isinstance(error, TandemError) and not isinstance(error, StorageError)
            self.tandem.metrics.merge("offline", "refused" if refused else "failed")
            raise
        self.tandem.metrics.merge("offline", "ok")

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

    async def join(self, message: Join) -> int:
        """Join ``message.doc``; the size of the reply (what it cost to send)."""
        doc = message.doc
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
        return await session.join(
            self, permission, message.version, message.fingerprint, message.incarnation
        )

    def leave_all(self) -> None:
        for session in self.documents.values():
            session.leave(self)
        self.documents.clear()
