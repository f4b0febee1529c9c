"""The presence table of one open document: who is here and where their cursor is.

Owns, per client id: the user and display name, the cursor (``Cursor`` or
``None``), the free-form ``state`` object, the document version the cursor
refers to, when the client was last heard from, and the bookkeeping for
coalesced broadcasts (docs/protocol.md, "Presence"; BRIEF decision 8).

Everything here is a plain decision on plain data: time is passed in as
``now`` (seconds, any monotonic clock) and nothing is sent. The async document
session calls ``update``/``touch`` when a message arrives, ``transform`` after
every committed op, ``due``/``mark_sent``/``next_due`` to drive one timer that
broadcasts at most once per client per ``interval``, and ``expire`` to drop
silent clients.

Coalescing: an entry that changed is *pending*. It becomes *due* once its last
broadcast is at least ``interval`` old (a never-broadcast entry is due at
once), so a burst of cursor moves costs one broadcast now and one with the
latest value ``interval`` later. Moving cursors through committed ops does not
make an entry pending: receivers transform the cursors they hold through the
same ops.

Must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tandem.errors import ProtocolError
from tandem.ot.cursor import transform_selection
from tandem.ot.delta import Delta
from tandem.ot.transform import Side
from tandem.protocol import Cursor

__all__ = ["PresenceEntry", "PresenceTable"]

# The coalescing interval and the silence timeout are passed in: they are
# ``Settings.presence_interval`` and ``Settings.presence_timeout``.


@dataclass(slots=True)
class PresenceEntry:
    """One client's presence in one document."""

    client: str
    user: str
    name: str
    cursor: Cursor | None
    state: dict[str, Any]
    #: The document version ``cursor`` is expressed at.
    version: int
    #: When the client was last heard from (``touch``/``update``).
    last_seen: float
    #: When this entry was last broadcast; None: never.
    last_sent: float | None = None
    #: True when a change has not been broadcast yet.
    pending: bool = True

    def to_wire(self) -> dict[str, Any]:
        """The entry as it appears in ``snapshot``/``catchup`` presence lists."""
        return {
            "client": self.client,
            "user": self.user,
            "name": self.name,
            "cursor": self.cursor.to_json() if self.cursor is not None else None,
            "state": self.state,
            "v": self.version,
        }


class PresenceTable:
    """Presence entries of one document, keyed by client id (see the module docstring)."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, PresenceEntry] = {}

    # -- reading ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, client: object) -> bool:
        return client in self._entries

    def __iter__(self) -> Iterator[PresenceEntry]:
        return iter(list(self._entries.values()))

    def get(self, client: str) -> PresenceEntry | None:
        """The entry of ``client``, or None."""
        return self._entries.get(client)

    # -- changing -----------------------------------------------------------

    def update(
        self,
        client: str,
        user: str,
        name: str,
        cursor: Cursor | None,
        state: dict[str, Any] | None,
        now: float,
        *,
        version: int,
        length: int,
    ) -> PresenceEntry:
        """Set ``client``'s presence; ``cursor`` is at ``version`` of a ``length``-long document.

        ``state`` None keeps the previous state (``{}`` for a new entry). The
        caller transforms a cursor sent at an older version to the head first,
        so ``version``/``length`` describe the document the cursor points into.
        Raises ``ProtocolError`` for a cursor that is not two non-negative
        integers or that reaches past the end of the document.
        """
        _check_cursor(cursor, length)
        entry = self._entries.get(client)
        if entry is None:
            entry = PresenceEntry(
                client, user, name, cursor, dict(state or {}), version, last_seen=now
            )
            self._entries[client] = entry
            return entry
        new_state = entry.state if state is None else dict(state)
        changed = (
            entry.cursor != cursor
            or entry.state != new_state
            or entry.name != name
            or entry.user != user
            or entry.version != version
        )
        entry.user, entry.name, entry.cursor, entry.state = user, name, cursor, new_state
        entry.version = version
        entry.last_seen = now
        entry.pending = entry.pending or changed
        return entry

    def touch(self, client: str, now: float) -> None:
        """Record activity from ``client`` (any message), so it does not expire."""
        entry = self._entries.get(client)
        if entry is not None:
            entry.last_seen = max(entry.last_seen, now)

    def transform(
        self, op: Delta, author_client: str | None, *, version: int | None = None
    ) -> None:
        """Move every cursor through the committed ``op`` made by ``author_client``.

        The author's own caret is pushed along by its insert (side ``"right"``);
        everyone else's stays before an insert made exactly at it (``"left"``).
        Each entry's version becomes ``version`` (default: its version + 1). An
        entry already at ``version`` or later is left alone: its cursor was set
        after ``op`` (another node's relayed presence can arrive before the op it
        was expressed after, from the owner), and moving it again would misplace it.
        """
        for entry in self._entries.values():
            if version is not None and entry.version >= version:
                continue
            cursor = entry.cursor
            if cursor is not None:
                side: Side = "right" if entry.client == author_client else "left"
                index, length = transform_selection(cursor.index, cursor.length, op, side)
                if (index, length) != (cursor.index, cursor.length):
                    entry.cursor = Cursor(index, length)
            entry.version = entry.version + 1 if version is None else version

    def remove(self, client: str) -> bool:
        """Forget ``client``; True when it was present."""
        return self._entries.pop(client, None) is not None

    def expire(self, now: float, timeout: float) -> list[str]:
        """Remove and return the clients silent for more than ``timeout`` seconds."""
        gone = [c for c, e in self._entries.items() if now - e.last_seen > timeout]
        for client in gone:
            del self._entries[client]
        return gone

    # -- coalescing -----------------------------------------------------------

    def due(self, now: float, interval: float) -> list[str]:
        """Clients with an unbroadcast change whose last broadcast is ≥ ``interval`` old."""
        return [
            entry.client
            for entry in self._entries.values()
            if entry.pending and (entry.last_sent is None or now - entry.last_sent >= interval)
        ]

    def mark_sent(self, client: str, now: float) -> None:
        """Record that ``client``'s current presence was broadcast at ``now``."""
        entry = self._entries.get(client)
        if entry is not None:
            entry.pending = False
            entry.last_sent = now

    def next_due(self, now: float, interval: float) -> float | None:
        """Seconds until the next pending entry is due (0 if one is due now); None if none."""
        waits = [
            0.0 if entry.last_sent is None else max(0.0, entry.last_sent + interval - now)
            for entry in self._entries.values()
            if entry.pending
        ]
        return min(waits) if waits else None

    # -- wire form ------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Every entry in wire form, for ``snapshot`` and ``catchup`` messages."""
        return [entry.to_wire() for entry in self._entries.values()]

    def entry_message(self, client: str, doc: str) -> dict[str, Any]:
        """The ``presence`` message broadcasting ``client``'s entry (KeyError if absent)."""
        return {"type": "presence", "doc": doc, **self._entries[client].to_wire()}

    @staticmethod
    def left_message(client: str, user: str, doc: str) -> dict[str, Any]:
        """The ``presence`` message saying ``client`` left ``doc``."""
        return {"type": "presence", "doc": doc, "client": client, "user": user, "left": True}


def _check_cursor(cursor: Cursor | None, length: int) -> None:
    if cursor is None:
        return
    if not isinstance(cursor, Cursor):
        raise ProtocolError('a cursor must be {"index": I, "length": L} or null')
    index, size = cursor.index, cursor.length
    for name, value in (("index", index), ("length", size)):
        if type(value) is not int or value < 0:
            raise ProtocolError(f"cursor {name} must be a non-negative integer, got {value!r}")
    if index + size > length:
        raise ProtocolError(
            f"cursor [{index}, {index + size}) reaches past the end of the document "
            f"({length} characters)"
        )
