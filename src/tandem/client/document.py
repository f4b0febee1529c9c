"""One joined document of the Python client: its content, edits, presence and waiters.

``DocumentHandle`` wraps the pure ``tandem.client.state.ClientState`` of one
document with what an application uses — ``text``, ``insert``/``delete``/
``format``, ``undo``/``redo``, ``set_presence``, ``synced()``, ``changes()``
— and sends what the state machine asks for through its ``ClientLink`` (the
``TandemClient`` that joined it, which owns the socket and calls the
handle's ``_``-methods as messages arrive).

Must not import the server, storage, bus or the connection module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tandem.client.state import ClientState
from tandem.client.undo import UndoManager
from tandem.errors import TandemError
from tandem.ot.cursor import transform_selection
from tandem.ot.delta import Attributes, Delta
from tandem.ot.transform import Side

__all__ = [
    "Change",
    "ChangeStream",
    "ClientClosed",
    "ClientLink",
    "DocumentHandle",
    "RemotePresence",
    "ServerError",
]

log = logging.getLogger("tandem.client.connection")


class ClientLink(Protocol):
    """What a handle needs from the client that joined it."""

    client_id: str

    def _send(self, message: Mapping[str, Any]) -> None:
        """Send ``message`` now if connected (else it is dropped: a re-join resends)."""

    def _forget(self, doc: str) -> None:
        """``doc`` was left: no more messages for it."""


class ClientClosed(ConnectionError):
    """The client was closed (or gave up) while something was waiting on it."""


class ServerError(TandemError):
    """An ``error`` message from the server, with its wire ``code``.

    ``rejection`` is the server's ``authorize`` hook's ``{"code", "reason"}`` when
    it rejected an op (``ERR_REJECTED``, ``ERR_AUTHORIZE_FAILED``), else None.
    """

    def __init__(self, code: str, message: str, rejection: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.rejection = dict(rejection) if isinstance(rejection, Mapping) else None

    def details(self) -> dict[str, object]:
        return {"rejection": self.rejection} if self.rejection else {}


@dataclass(frozen=True, slots=True)
class Change:
    """A change to a document's local content, in the order it happened.

    ``remote`` is False for the user's own edits; ``client``/``user`` name the
    author of a remote op (None for catch-ups, snapshots and undone edits).
    ``origin`` is ``"undo"`` or ``"redo"`` for an edit made by ``undo()`` or
    ``redo()``, None otherwise.
    """

    delta: Delta
    version: int
    remote: bool
    client: str | None = None
    user: str | None = None
    origin: Literal["undo", "redo"] | None = None


@dataclass(frozen=True, slots=True)
class RemotePresence:
    """Another client's presence; ``cursor`` is ``(index, length)`` in the local document."""

    client: str
    user: str
    name: str
    cursor: tuple[int, int] | None
    state: Mapping[str, Any]


class ChangeStream:
    """An async iterator of ``Change``s; ends when the handle leaves or the client closes."""

    def __init__(self, handle: DocumentHandle) -> None:
        self._handle = handle
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._done = False

    def _push(self, change: Change | None) -> None:
        if not self._done:
            self._queue.put_nowait(change)

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> Change:
        if self._done and self._queue.empty():
            raise StopAsyncIteration
        change = await self._queue.get()
        if change is None:
            self._done = True
            raise StopAsyncIteration
        return change

    def close(self) -> None:
        """Stop receiving changes."""
        self._handle._streams.discard(self)
        self._done = True
        self._queue.put_nowait(None)


class DocumentHandle:
    """One joined document: its local content, edits, presence and sync state."""

    def __init__(self, client: ClientLink, doc: str) -> None:
        self.doc = doc
        self._client = client
        self._state: ClientState | None = None
        #: ``"read"`` or ``"write"``, from the server's snapshot/catch-up.
        self.permission: str | None = None
        #: True between a processed snapshot/catch-up and the next disconnect.
        self.live = False
        #: The incarnation the version belongs to (``i`` of the last snapshot or
        #: catch-up; None from a server without incarnations).
        self.incarnation: str | None = None
        self._joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters: list[asyncio.Future[None]] = []
        self._streams: set[ChangeStream] = set()
        self._callbacks: list[Callable[[Change], object]] = []
        self._presence_callbacks: list[Callable[[str], object]] = []
        self._others: dict[str, dict[str, Any]] = {}
        self._cursor: tuple[int, int] | None = None
        self._presence_state: dict[str, Any] | None = None
        self._presence_set = False
        #: Edits dropped by a re-join answered with a snapshot: none since they are
        #: carried over (tandem.client.carryover); kept for callers that read it.
        self.lost: list[Delta] = []
        #: The last ``error`` messages about this document.
        self.errors: deque[ServerError] = deque(maxlen=32)
        self._undo = UndoManager()

    # -- reading --------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        """The pure state machine (raises RuntimeError before the first snapshot)."""
        if self._state is None:
            raise RuntimeError(f"document {self.doc!r} has not been loaded yet")
        return self._state

    @property
    def text(self) -> str:
        """The local plain text (with pending edits)."""
        return self.state.text

    @property
    def content(self) -> Delta:
        """The local content as a delta of inserts."""
        return self.state.document.to_delta()

    @property
    def version(self) -> int:
        """The last server version applied locally."""
        return self.state.version

    @property
    def pending(self) -> bool:
        """True while an edit is in flight, merging or buffered."""
        return self._state is not None and not self._state.synchronized

    @property
    def merges(self) -> int:
        """How many offline merges this document has sent (0 before the first snapshot)."""
        return 0 if self._state is None else self._state.merges

    @property
    def others(self) -> dict[str, RemotePresence]:
        """Presence of the other clients, cursors moved into the local document."""
        state = self.state
        return {
            client: RemotePresence(
                client,
                entry.get("user", ""),
                entry.get("name", ""),
                state.remote_cursor(client),
                entry.get("state") or {},
            )
            for client, entry in self._others.items()
        }

    # -- editing --------------------------------------------------------------

    def submit(self, op: Delta | Sequence[Mapping[str, Any]]) -> None:
        """Apply ``op`` locally now and send it when possible (raises if it does not fit)."""
        delta = op if isinstance(op, Delta) else Delta.from_json(list(op))
        if self.permission == "read":
            raise PermissionError(f"read-only access to {self.doc!r}")
        state = self.state
        before = state.document
        message = state.local_edit(delta)
        if delta.ops:
            self._undo.record(delta, before, now=time.monotonic(), selection=self._cursor)
            self._move_own_cursor(delta, "right")
            self._emit(Change(delta, state.version, remote=False))
        if message is not None:
            self._send(message)

    @property
    def can_undo(self) -> bool:
        """Whether ``undo()`` has a step of ours to take back."""
        return self._undo.can_undo

    @property
    def can_redo(self) -> bool:
        """Whether ``redo()`` has an undone step to do again."""
        return self._undo.can_redo

    def undo(self) -> bool:
        """Take back our last step (consecutive typing is one step); False if none.

        Only this handle's own edits are undone, moved past everyone else's
        since: another user's text is never removed and text they deleted
        never comes back. The edit is sent like any other (a ``Change`` with
        ``origin="undo"``), and our cursor moves to where the step was.
        """
        return self._step("undo")

    def redo(self) -> bool:
        """Do again the step last undone (a new edit forgets them); False if none."""
        return self._step("redo")

    def _step(self, which: Literal["undo", "redo"]) -> bool:
        if self.permission == "read":
            raise PermissionError(f"read-only access to {self.doc!r}")
        state = self.state
        manager = self._undo
        step = (manager.undo if which == "undo" else manager.redo)(state.document, self._cursor)
        if step is None:
            return False
        message = state.local_edit(step.delta)
        if step.selection is not None:
            length = len(state.document)
            index = min(step.selection[0], length)
            self._cursor = (index, max(0, min(step.selection[1], length - index)))
        self._emit(Change(step.delta, state.version, remote=False, origin=which))
        if message is not None:
            self._send(message)
        self._send_presence()
        return True

    def insert(self, pos: int, text: str, attributes: Attributes | None = None) -> None:
        """Insert ``text`` at code point ``pos``."""
        self.submit(Delta().retain(pos).insert(text, attributes))

    def delete(self, pos: int, length: int) -> None:
        """Delete ``length`` code points at ``pos``."""
        self.submit(Delta().retain(pos).delete(length))

    def format(self, pos: int, length: int, attributes: Attributes) -> None:
        """Set (or with None remove) ``attributes`` on ``[pos, pos + length)``."""
        self.submit(Delta().retain(pos).retain(length, attributes))

    def set_presence(
        self, cursor: int | tuple[int, int] | None, state: Mapping[str, Any] | None = None
    ) -> None:
        """Publish our cursor (an index, ``(index, length)``, or None) and optional state."""
        if isinstance(cursor, int):
            cursor = (cursor, 0)
        self._cursor = cursor
        if state is not None:
            self._presence_state = dict(state)
        self._presence_set = True
        self._send_presence(state)

    # -- waiting --------------------------------------------------------------

    async def synced(self, timeout: float | None = None) -> None:
        """Wait until nothing is pending (every local edit acknowledged)."""
        if not self.pending:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            if future in self._waiters:
                self._waiters.remove(future)
            if not future.done():
                future.cancel()

    def changes(self) -> ChangeStream:
        """Every later ``Change``: ``async for change in handle.changes(): ...``."""
        stream = ChangeStream(self)
        self._streams.add(stream)
        return stream

    def on_change(self, callback: Callable[[Change], object]) -> Callable[[], None]:
        """Call ``callback(change)`` on every change; returns a function that unsubscribes."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def on_presence(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Call ``callback(client)`` when another client's presence arrives or leaves."""
        self._presence_callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._presence_callbacks:
                self._presence_callbacks.remove(callback)

        return unsubscribe

    async def leave(self) -> None:
        """Leave the document: no more ops or presence; our presence is removed."""
        self._send({"type": "leave", "doc": self.doc})
        self._client._forget(self.doc)
        self._finish(ClientClosed(f"left {self.doc!r}"))

    # -- inside: called by TandemClient ----------------------------------------

    def _send(self, message: Mapping[str, Any]) -> None:
        if self.live:
            self._client._send(message)

    def _send_presence(self, state: Mapping[str, Any] | None = None) -> None:
        if self._state is None or not self._presence_set:
            return
        self._send(self._state.presence_message(self._cursor, state))

    def _join_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "join", "doc": self.doc, "ref": f"join:{self.doc}"}
        if self._state is not None:
            message["v"] = self._state.version
            message["h"] = self._state.confirmed.fingerprint()
            if self.incarnation is not None:
                message["i"] = self.incarnation
        return message

    def _rejoin(self) -> None:
        """Catch up after a gap or a failed op: join again with our version."""
        self.live = False
        self._client._send(self._join_message())

    def _emit(self, change: Change) -> None:
        for stream in list(self._streams):
            stream._push(change)
        for callback in list(self._callbacks):
            try:
                callback(change)
            except Exception:
                log.exception("change callback for %r failed", self.doc)

    def _move_own_cursor(self, delta: Delta, side: Side) -> None:
        if self._cursor is not None:
            self._cursor = transform_selection(*self._cursor, delta, side)

    def _remote_change(self, change: Change) -> None:
        if change.delta.ops:
            self._undo.transform(change.delta)
            self._move_own_cursor(change.delta, "left")
            self._emit(change)

    def _wake(self) -> None:
        if self.pending:
            return
        for future in self._waiters:
            if not future.done():
                future.set_result(None)
        self._waiters.clear()

    def _finish(self, error: BaseException) -> None:
        """Fail every waiter and end every stream (leave or close)."""
        self.live = False
        for future in [self._joined, *self._waiters]:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: nobody awaiting is not an error
        self._waiters.clear()
        for stream in list(self._streams):
            stream.close()

    def _loaded(self, message: Mapping[str, Any]) -> None:
        """A snapshot or catch-up was processed: go live, resend, republish presence."""
        self.permission = message.get("permission", self.permission)
        incarnation = message.get("i")
        self.incarnation = incarnation if isinstance(incarnation, str) else None
        self._others = {}
        for entry in message.get("presence") or ():
            self._presence(entry)
        self.live = True
        if not self._joined.done():
            self._joined.set_result(None)
        resend = self.state.resend()
        if resend is not None:
            self._client._send(resend)
        self._send_presence(self._presence_state)
        self._wake()

    def _presence(self, message: Mapping[str, Any]) -> None:
        client = message.get("client")
        if not isinstance(client, str) or client == self._client.client_id:
            return
        state = self.state
        if message.get("left"):
            self._others.pop(client, None)
            state.forget_remote_cursor(client)
        else:
            raw = message.get("cursor")
            cursor = None if raw is None else (int(raw["index"]), int(raw.get("length", 0)))
            state.set_remote_cursor(client, cursor, message.get("v"))
            self._others[client] = dict(message)
        for callback in list(self._presence_callbacks):
            try:
                callback(client)
            except Exception:
                log.exception("presence callback for %r failed", self.doc)
