"""The CRDT side of an open document: its replica, its Yjs peers, Yjs submits.

``ReplicaHost`` is owned by a ``DocumentSession`` and called from a few hooks
there:

* ``load(loaded)`` when the document opens: the replica is rebuilt from the
  CRDT state of the newest snapshot plus the ops after it (never re-seeded
  from text when a state exists; see ``tandem.merge.replica``);
* ``durable(entry)`` from ``_advance_durable``, in version order, for local and
  other nodes' ops alike: the op is applied to the replica (unless it already
  was) and its Yjs update is sent to every Yjs peer — the author of a Yjs
  write included: that echo is its acknowledgement, sent only once stored;
* ``rolled_back()`` when the session forgets non-durable ops: a replica that
  had applied some is rebuilt from the store;
* ``snapshot_state()`` for snapshots: the CRDT state at the durable version.

``submit(member, update)`` merges a Yjs update at the sequencer's head (first
applying the committed-but-not-yet-durable ops, so the merge sees exactly the
head), and sequences the observed change as the next version, carrying the
effective update so every replay reproduces the same items.

May import the pure parts (``merge``, ``ot``, ``sequencer``) and asyncio; must
not import the server or network code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from tandem.errors import ReadOnly, TandemError
from tandem.merge.replica import EMPTY_UPDATE, Replica, ReplicaError
from tandem.merge.yproto import AwarenessEntry, encode_awareness, sync_update
from tandem.ot.document import Document
from tandem.sequencer import Entry
from tandem.storage.base import LoadedDocument

if TYPE_CHECKING:
    from tandem.documents import DocumentSession, Member

__all__ = ["ReplicaHost", "YjsPeer"]

log = logging.getLogger("tandem.replicas")


class YjsPeer(Protocol):
    """A connected Yjs client, as a session sees it."""

    client: str
    user: str
    name: str

    def send(self, message: str) -> None:
        """OT messages (JSON text); a Yjs peer may translate or ignore them."""

    def send_bytes(self, frame: bytes) -> None:
        """Queue one binary y-protocols frame. Never blocks."""


class ReplicaRefused(TandemError):
    """A Yjs update the replica cannot take (missing dependencies, malformed)."""

    code = "ERR_INVALID_OP"


def build_replica(loaded: LoadedDocument) -> Replica:
    """The replica at ``loaded.version``: stored CRDT state, else seeded, then the ops."""
    snapshot = loaded.snapshot
    if snapshot is not None and snapshot.crdt:
        replica = Replica(snapshot.crdt, snapshot.version)
    elif snapshot is not None:
        replica = Replica.seeded(snapshot.content, snapshot.version)
    else:
        replica = Replica()
    for record in loaded.ops:
        if record.crdt is not None:
            replica.replay(record.crdt, record.version)
        else:
            replica.apply(record.op, record.version)
    return replica


class ReplicaHost:
    """One document's replica and Yjs peers (see the module docstring)."""

    def __init__(self, session: DocumentSession) -> None:
        self.session = session
        self.replica: Replica | None = None
        self.peers: set[YjsPeer] = set()
        #: Updates of ops applied to the replica before they were durable.
        self._early: dict[int, bytes] = {}
        self._ready = asyncio.Event()
        self._rebuilding = False
        #: Yjs awareness by Yjs client id (states of connected Yjs clients only).
        self.awareness: dict[int, AwarenessEntry] = {}

    # -- lifecycle ------------------------------------------------------------

    def load(self, loaded: LoadedDocument) -> None:
        self.replica = build_replica(loaded)
        self._catch_up_durable()
        self._ready.set()

    async def ready(self) -> Replica:
        while self.replica is None:
            self._ready.clear()
            await self._ready.wait()
        return self.replica

    def _catch_up_durable(self) -> None:
        """Apply durable entries the replica has not seen (no await: consistent)."""
        replica = self.replica
        assert replica is not None
        session = self.session
        if replica.version < session.durable_version:
            for entry in session.sequencer.entries_since(replica.version):
                if entry.version > session.durable_version:
                    break
                self._apply(replica, entry)

    @staticmethod
    def _apply(replica: Replica, entry: Entry) -> bytes:
        if entry.crdt is not None:
            replica.replay(entry.crdt, entry.version)
            return entry.crdt
        return replica.apply(entry.op, entry.version)

    def rolled_back(self) -> None:
        """Non-durable ops were forgotten: a replica that applied some must be rebuilt."""
        replica = self.replica
        self._early.clear()
        if replica is not None and replica.version > self.session.durable_version:
            self._rebuild()

    def _rebuild(self) -> None:
        self.replica = None
        if not self._rebuilding:
            self._rebuilding = True
            self.session.manager.background(self._load_again())

    async def _load_again(self) -> None:
        try:
            while True:
                try:
                    loaded = await self.session.manager.store.load(self.session.doc)
                    replica = build_replica(loaded)
                except Exception as exc:  # noqa: BLE001 - retry: Yjs submits wait meanwhile
                    log.warning("rebuilding the replica of %s failed: %s", self.session.doc, exc)
                    await asyncio.sleep(0.5)
                    continue
                if replica.version <= self.session.durable_version:
                    self.replica = replica
                    try:
                        self._catch_up_durable()
                    except TandemError:  # the window moved on: load again
                        self.replica = None
                        continue
                    break
        finally:
            self._rebuilding = False
        self._ready.set()
        if self.replica is not None and self.peers:
            # Updates made while rebuilding were not sent: send the whole state
            # (Yjs ignores what a peer already has).
            frame = sync_update(self.replica.state())
            for peer in self.peers:
                peer.send_bytes(frame)

    # -- the durable path -----------------------------------------------------

    def durable(self, entry: Entry) -> None:
        """``entry`` is durable: mirror it and send its Yjs update to the Yjs peers."""
        replica = self.replica
        if replica is None:
            return  # being rebuilt; the rebuild catches up to the durable version
        update = self._early.pop(entry.version, None)
        if update is None:
            if replica.version >= entry.version:
                return
            try:
                update = self._apply(replica, entry)
            except ReplicaError as exc:
                log.error("replica of %s failed at v%d: %s", self.session.doc, entry.version, exc)
                self._rebuild()
                return
        if update != EMPTY_UPDATE and self.peers:
            frame = sync_update(update)
            for peer in self.peers:
                peer.send_bytes(frame)

    def snapshot_state(self) -> bytes | None:
        """The CRDT state at the durable version, or None when the replica is elsewhere."""
        replica = self.replica
        if replica is None or replica.version != self.session.durable_version:
            return None
        return replica.state()

    # -- awareness --------------------------------------------------------------

    def remember_awareness(self, entries: list[AwarenessEntry]) -> None:
        """Keep the newest state per Yjs client (y-protocols' clock rule)."""
        for entry in entries:
            known = self.awareness.get(entry.client)
            if known is not None and known.clock > entry.clock:
                continue
            if entry.state is None:
                self.awareness.pop(entry.client, None)
            else:
                self.awareness[entry.client] = entry

    def awareness_payload(self) -> bytes:
        """Every known awareness state, encoded (for joiners and QueryAwareness)."""
        return encode_awareness(list(self.awareness.values()))

    def forget_awareness(self, clients: set[int]) -> bytes:
        """Remove a closed connection's clients; the removal update to relay (or b"")."""
        removed = []
        for client in clients:
            known = self.awareness.pop(client, None)
            if known is not None:
                removed.append(AwarenessEntry(client, known.clock + 1, None))
        return encode_awareness(removed) if removed else b""

    # -- Yjs writes -----------------------------------------------------------

    async def submit(
        self,
        member: Member,
        update: bytes,
        *,
        done: Callable[[int], None] | None = None,
    ) -> None:
        """Merge a Yjs client's update and sequence its change as the next version."""
        from tandem.documents import _Pending, _record  # the session's own types

        session = self.session
        if member.permission != "write":
            raise ReadOnly(f"read-only access to {session.doc!r}: updates are refused")
        while session._rebasing is not None:
            await session._rebasing.wait()
        replica = await self.ready()
        # No await from here on: the merge happens exactly at the sequencer's head.
        sequencer = session.sequencer
        try:
            for entry in sequencer.entries_since(replica.version):
                self._early[entry.version] = self._apply(replica, entry)
            delta, effective = replica.merge(update)
        except ReplicaError as exc:
            self._early.clear()
            self._rebuild()
            raise ReplicaRefused(str(exc)) from None
        if effective == EMPTY_UPDATE:
            if done is not None:
                done(session.durable_version)
            return
        entry = Entry(
            sequencer.version + 1,
            delta,
            member.key,
            None,
            member.peer.user,
            time.time(),
            effective,
        )
        document: Document = sequencer.apply_committed(entry)
        self._early[entry.version] = effective
        pending = _Pending(
            entry.version,
            entry=entry,
            document=document,
            author=member,
            received=time.perf_counter(),
            done=done,
            yjs_update=update,
        )
        session._outbox.append(pending)
        session.manager.committer.enqueue(session, _record(session.doc, entry))
