"""Presence fan-out of one document: local and other nodes' presence, coalesced and expired.

The presence state itself is pure (``tandem.presence.PresenceTable``); this
module moves it: a member's cursor is transformed from the version it was
sent at to the committed head, sent to the other members at most once per
``Settings.presence_interval`` per client (a timer sends what is due), relayed
to the other nodes over the bus, and removed after ``Settings.presence_timeout``
of silence. Presence goes through the delivery core (``Delivery.broadcast``), so
a member waiting for an ack hears it after the ack, in order.

Imports no other session module: it sees the session through ``PresentSession``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from typing import Any, Protocol

from tandem.errors import HistoryUnavailable
from tandem.ot.cursor import transform_selection
from tandem.ot.document import Document
from tandem.ot.transform import Side
from tandem.presence import PresenceEntry, PresenceTable
from tandem.protocol import Cursor, encode
from tandem.records import OpRecord, public_client
from tandem.sequencer import HistoryGap, Sequencer
from tandem.session.delivery import Delivery, Member, Peer
from tandem.session.payloads import encode_presence
from tandem.settings import Settings

__all__ = ["PresenceFanout", "PresentSession"]

#: Document length used to validate relayed cursors (the origin node validated them).
_BIG = sys.maxsize


class PresentSession(Protocol):
    """What presence fan-out needs from its session."""

    doc: str
    settings: Settings
    sequencer: Sequencer
    delivery: Delivery
    committed_document: Document

    @property
    def node(self) -> str: ...

    @property
    def replicated(self) -> bool:
        """Are there other nodes to tell?"""

    def publish(self, payload: bytes) -> None: ...

    def apply_relayed(self) -> None:
        """Bring the document up to the committed head (``session/replication.py``)."""


class PresenceFanout:
    """Who is in one document and where their cursors are, told to everyone else."""

    def __init__(self, session: PresentSession) -> None:
        self.session = session
        self.local = PresenceTable()
        #: Presence of clients connected to other nodes (relayed over the bus).
        self.remote_table = PresenceTable()
        self._timer: asyncio.TimerHandle | None = None

    def __iter__(self) -> Iterator[PresenceEntry]:
        """This node's presence entries."""
        return iter(self.local)

    @property
    def empty(self) -> bool:
        """No presence entry here: there is no cursor for an op to move."""
        return not self.local and not self.remote_table

    def snapshot(self) -> list[dict[str, Any]]:
        """Every presence entry, this node's and the others', for a joiner."""
        return self.local.snapshot() + self.remote_table.snapshot()

    def update(
        self,
        member: Member,
        cursor: Cursor | None,
        state: dict[str, Any] | None,
        base_version: int | None,
        now: float,
    ) -> None:
        """``member``'s cursor (at ``base_version``) and state; sent on when due."""
        session = self.session
        session.apply_relayed()  # the cursors move through every op before this one
        head = session.delivery.committed_version
        peer = member.peer
        if cursor is not None:
            index, length = cursor.index, cursor.length
            if base_version is not None and base_version < head:
                try:
                    index, length = self._to_head(
                        index, length, base_version, head, public_client(member.key)
                    )
                except HistoryGap:
                    raise HistoryUnavailable("presence is too far behind; re-join") from None
            elif base_version is not None and base_version > head:
                raise HistoryUnavailable(
                    f"presence version {base_version} is ahead of the document ({head})"
                )
            cursor = Cursor(index, length)
        self.local.update(
            peer.client,
            peer.user,
            peer.name,
            cursor,
            state,
            now,
            length=len(session.committed_document),
            version=head,
        )
        self._flush(now)

    def _to_head(
        self, index: int, length: int, version: int, head: int, own: str
    ) -> tuple[int, int]:
        """A selection at ``version`` moved through the committed ops up to ``head``
        (``own``: the public client whose caret its own inserts push along)."""
        for record in self.session.sequencer.entries_since(version):
            if record.version > head:
                break
            side: Side = "right" if public_client(record.client_id) == own else "left"
            index, length = transform_selection(index, length, record.op, side)
        return index, length

    def touch(self, peer: Peer, now: float) -> None:
        self.local.touch(peer.client, now)

    def remove(self, peer: Peer) -> None:
        """``peer`` left: tell everyone, if it had shown presence."""
        if self.local.remove(peer.client):
            self._announce(self.local.left_message(peer.client, peer.user, self.session.doc))

    def transform(self, record: OpRecord) -> None:
        """Move every cursor through the committed ``record``."""
        client = public_client(record.client_id)
        self.local.transform(record.op, client, version=record.version)
        self.remote_table.transform(record.op, client, version=record.version)

    def _flush(self, now: float) -> None:
        session = self.session
        interval = session.settings.presence_interval
        for client in self.local.due(now, interval):
            wire = self.local.entry_message(client, session.doc)
            session.delivery.broadcast(encode(wire), skip_client=client)
            self.local.mark_sent(client, now)
            if session.replicated:
                session.publish(encode_presence(session.node, wire))
        wait = self.local.next_due(now, interval)
        if wait is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._flush(time.monotonic())

    def expire(self, now: float) -> None:
        """Forget presence silent for longer than ``presence_timeout``; tell everyone."""
        session = self.session
        timeout = session.settings.presence_timeout
        for client in self.local.expire(now, timeout):
            user = next((p.user for p in session.delivery.members if p.client == client), "")
            self._announce(self.local.left_message(client, user, session.doc))
        for client in self.remote_table.expire(now, timeout):
            session.delivery.broadcast(encode(self.local.left_message(client, "", session.doc)))

    def _announce(self, wire: dict[str, Any]) -> None:
        """Tell local members and the other nodes (a message of this node's presence)."""
        session = self.session
        session.delivery.broadcast(encode(wire))
        if session.replicated:
            session.publish(encode_presence(session.node, wire))

    def remote(self, wire: dict[str, Any]) -> None:
        """Another node's presence message: remember it and tell the local members.

        Its cursor is at the version the other node had (``v``). Ops come from the
        document's owner and presence from the client's node, so either may arrive
        first: a cursor behind this node's head is moved up to it here (its ops are
        in the sequencer's window), and one ahead is left alone by the ops it already
        reflects when they arrive (``PresenceTable.transform``).
        """
        self.session.apply_relayed()
        if wire.get("left"):
            self.remote_table.remove(wire["client"])
        else:
            cursor = wire.get("cursor")
            version = wire.get("v", 0)
            selection = Cursor(cursor["index"], cursor["length"]) if cursor else None
            head = self.session.delivery.committed_version
            if selection is not None and version < head:
                try:
                    index, length = self._to_head(
                        selection.index, selection.length, version, head, wire["client"]
                    )
                except HistoryGap:
                    pass  # too far behind to move: shown where it was sent
                else:
                    selection, version = Cursor(index, length), head
                    wire = {**wire, "v": head, "cursor": {"index": index, "length": length}}
            self.remote_table.update(
                wire["client"],
                wire["user"],
                wire.get("name", ""),
                selection,
                wire.get("state") or {},
                time.monotonic(),
                version=version,
                length=_BIG,
            )
        self.session.delivery.broadcast(encode(wire))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
