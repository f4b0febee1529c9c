"""The Yjs side of an open document: its CRDT replica, its Yjs peers, Yjs writes.

``ReplicaHost`` is owned by a ``DocumentSession`` (which it sees through the
small ``ReplicaSession`` protocol, so it does not import it) and called from a
few hooks there:

* ``load(loaded)`` when the document opens: the replica is rebuilt from the
  CRDT state of the newest snapshot plus the ops after it (never re-seeded
  from text when a state exists; see ``tandem.merge.replica``);
* ``committed(record)`` from the session's ``advanced``, in version order, for
  local and other nodes' ops alike: the op is applied to the replica (unless it
  already was) and its Yjs update is sent to every Yjs peer — the author of a
  Yjs write included: that echo is its acknowledgement, sent only once
  committed (on SQLite its fsync may follow);
* ``rolled_back()`` when the session forgets uncommitted ops: a replica that
  had applied some is rebuilt from the store — from the stored CRDT state and
  the update stored with every op, never from deltas, so item ids stay those
  the Yjs peers hold;
* ``snapshot_state()`` for snapshots: the CRDT state at the committed version.

``submit(member, update)`` hands a Yjs update to the session's one
``sequence()``, which (with no await) calls ``merge_at_head``: the update is
merged at the sequencer's head (first applying the sequenced-but-not-yet-committed
ops, so the merge sees exactly the head), and the observed change becomes the
next version, carrying the effective update so every replay reproduces the same
items (``merged``). An update with missing dependencies is refused before it is
applied (``ReplicaRefused``): nothing changes, nothing is rebuilt.

A peer joins with ``add_peer`` and receives Updates only once ``caught_up``
(right after its SyncStep2), so it never gets a change before what it builds on.

May import the pure parts (``merge``, ``ot``, ``sequencer``) and asyncio; must
not import the server, network code or the session's other modules.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

from tandem.errors import ReadOnly, TandemError
from tandem.merge.cursors import index_of, relative_position
from tandem.merge.replica import (
    EMPTY_UPDATE,
    SERVER_CLIENT_ID,
    Replica,
    ReplicaError,
    UpdateRefused,
)
from tandem.merge.updates import clock_ends
from tandem.merge.yproto import AwarenessEntry, decode_awareness, encode_awareness, sync_update
from tandem.ot.cursor import transform_selection
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.protocol import Cursor
from tandem.records import OpRecord
from tandem.sequencer import Sequencer
from tandem.session.delivery import Member, Submission
from tandem.session.presence import PresenceFanout
from tandem.storage.base import LoadedDocument, Store
from tandem.storage.incarnations import LEGACY, Incarnation

__all__ = [
    "ReplicaHost",
    "ReplicaRefused",
    "ReplicaSession",
    "YjsPeer",
    "build_replica",
    "replica_clients",
]

log = logging.getLogger("tandem.session.yjs")

#: Colours for OT clients whose presence state names none.
_PALETTE: Final = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6")


def _bridged_id(client: str) -> int:
    """A stable Yjs client id (uint32, never the server's) for an OT client id."""
    return (zlib.crc32(client.encode()) & 0x3FFFFFFF) | 0x40000000


class YjsPeer(Protocol):
    """A connected Yjs client, as a session sees it."""

    client: str
    user: str
    name: str

    def send(self, message: str) -> None:
        """OT messages (JSON text); a Yjs peer may translate or ignore them."""

    def send_bytes(self, frame: bytes) -> None:
        """Queue one binary y-protocols frame. Never blocks."""


class ReplicaSession(Protocol):
    """What the Yjs side needs from its session."""

    doc: str
    store: Store
    sequencer: Sequencer
    presence: PresenceFanout
    #: The document's incarnation: which Yjs client id the replica writes with.
    incarnation: Incarnation

    @property
    def committed_version(self) -> int: ...

    def background(self, coroutine: Coroutine[Any, Any, Any]) -> None: ...

    async def sequence(
        self, member: Member, submission: Submission, *, after_conflict: bool = False
    ) -> None: ...


class ReplicaRefused(TandemError):
    """A Yjs update the replica cannot take (missing dependencies, malformed)."""

    code = "ERR_INVALID_OP"


def build_replica(loaded: LoadedDocument, incarnation: Incarnation = LEGACY) -> Replica:
    """The replica at ``loaded.version``: stored CRDT state, else seeded, then the ops.

    In an incarnation whose replica was seeded from the text at ``yjs_from``
    (a restored, imported or renewed document), a snapshot up to that version
    may hold the old history's items: the text at ``yjs_from`` is seeded afresh by
    the incarnation's own Yjs client id (deterministic, so every node and
    every restart builds the same items), and only the ops after it replayed.
    """
    snapshot = loaded.snapshot
    client = incarnation.yjs_client
    base = snapshot.version if snapshot is not None else 0
    # A snapshot at ``yjs_from`` may still be the old history's (taken before the
    # renewal); the new incarnation's own one there is the seeded state anyway.
    if incarnation.yjs_from > 0 and incarnation.yjs_from >= base:
        document = Document(snapshot.content) if snapshot is not None else Document()
        for record in loaded.ops:
            if record.version <= incarnation.yjs_from:
                document = document.apply(record.op)
        replica = Replica.seeded(document, incarnation.yjs_from, client)
    elif snapshot is not None and snapshot.crdt:
        replica = Replica(snapshot.crdt, snapshot.version, client)
    elif snapshot is not None:
        replica = Replica.seeded(snapshot.content, snapshot.version, client)
    else:
        replica = Replica(client_id=client)
    for record in loaded.ops:
        if record.version > replica.version:
            _replay(replica, record)
    return replica


def replica_clients(loaded: LoadedDocument) -> frozenset[int]:
    """The Yjs client ids whose items the stored replica of ``loaded`` holds.

    Read from the stored updates (the snapshot's CRDT state and every op's
    update) without building the replica; ``SERVER_CLIENT_ID`` always, as a
    replica seeded from text or applying an op without an update writes with it
    (before incarnations, the only id it wrote with).
    """
    clients = {SERVER_CLIENT_ID}
    updates = [loaded.snapshot.crdt] if loaded.snapshot is not None else []
    updates += [record.crdt for record in loaded.ops]
    for update in updates:
        if update:
            try:
                clients.update(clock_ends(update))
            except (ValueError, UnicodeDecodeError):  # unreadable: what replays would refuse
                log.warning("%s: a stored Yjs update does not decode", loaded.doc)
    return frozenset(clients)


def _replay(replica: Replica, op: OpRecord) -> bytes:
    """Apply a committed op: its stored update (the same items), else its delta.

    Returns the update applied.
    """
    if op.crdt is not None:
        replica.replay(op.crdt, op.version, op.op)
        return op.crdt
    return replica.apply(op.op, op.version)


class ReplicaHost:
    """One document's replica and Yjs peers (see the module docstring)."""

    def __init__(self, session: ReplicaSession) -> None:
        self.session = session
        self.replica: Replica | None = None
        self.peers: set[YjsPeer] = set()
        #: Peers not yet sent their SyncStep2: they get no Updates meanwhile (see
        #: ``add_peer``).
        self._catching_up: set[YjsPeer] = set()
        #: Updates of ops applied to the replica before they were committed.
        self._early: dict[int, bytes] = {}
        self._ready = asyncio.Event()
        self._rebuilding = False
        #: Yjs awareness by Yjs client id (states of connected Yjs clients only).
        self.awareness: dict[int, AwarenessEntry] = {}
        #: OT clients shown to Yjs clients: OT client id → (Yjs client id, awareness clock).
        self.bridged: dict[str, tuple[int, int]] = {}

    # -- lifecycle ------------------------------------------------------------

    def load(self, loaded: LoadedDocument) -> None:
        self.replica = build_replica(loaded, self.session.incarnation)
        self._catch_up_committed()
        self._ready.set()

    async def ready(self) -> Replica:
        while self.replica is None:
            self._ready.clear()
            await self._ready.wait()
        return self.replica

    def _catch_up_committed(self) -> None:
        """Apply committed entries the replica has not seen (no await: consistent)."""
        replica = self.replica
        assert replica is not None
        session = self.session
        if replica.version < session.committed_version:
            for entry in session.sequencer.entries_since(replica.version):
                if entry.version > session.committed_version:
                    break
                _replay(replica, entry)

    def stamp(self, entry: OpRecord) -> bytes | None:
        """Apply the just-committed head ``entry`` now; its Yjs update, to store with it.

        Called by the session right after the sequencer committed an OT op
        and before its record goes to the committer, so every op is stored
        with the exact update it made and replays (restart, other nodes)
        rebuild identical items. Returns None when the replica is being
        rebuilt or fails; that op is then stored without an update and
        replayed from its delta (deterministic except for inserts negating
        several inherited attributes).
        """
        replica = self.replica
        if replica is None or replica.version >= entry.version:
            return None
        try:
            for earlier in self.session.sequencer.entries_since(replica.version):
                if earlier.version >= entry.version:
                    break
                self._early[earlier.version] = _replay(replica, earlier)
            update = replica.apply(entry.op, entry.version)
        except (ReplicaError, TandemError) as exc:
            log.error("replica of %s failed at v%d: %s", self.session.doc, entry.version, exc)
            self._early.clear()
            self._rebuild()
            return None
        self._early[entry.version] = update
        return update

    def rolled_back(self) -> None:
        """Uncommitted ops were forgotten: a replica that applied some must be rebuilt."""
        replica = self.replica
        self._early.clear()
        if replica is not None and replica.version > self.session.committed_version:
            self._rebuild()

    def _rebuild(self) -> None:
        self.replica = None
        if not self._rebuilding:
            self._rebuilding = True
            self.session.background(self._load_again())

    async def _load_again(self) -> None:
        """Rebuild the replica from the store, at the committed version exactly.

        Identity-preserving: the newest snapshot's CRDT state, then every op
        after it replayed from the update stored with it — read back from the
        store, never re-made from the deltas in memory (a committed OT op's update
        leaves memory once stored, and re-applying a delta to a replica that
        differs in the least makes new items, which Yjs peers would merge as
        duplicates). Ops sequenced meanwhile are applied later, in order, like
        any op ahead of the replica.
        """
        store, doc = self.session.store, self.session.doc
        try:
            while True:
                try:
                    replica = build_replica(await store.load(doc), self.session.incarnation)
                    while replica.version < self.session.committed_version:
                        records = await store.get_ops(
                            doc, replica.version, self.session.committed_version
                        )
                        if not records or records[0].version != replica.version + 1:
                            raise ReplicaError(f"the store lacks v{replica.version + 1}")
                        for record in records:
                            _replay(replica, record)
                except Exception as exc:  # noqa: BLE001 - retry: Yjs submits wait meanwhile
                    log.warning("rebuilding the replica of %s failed: %s", doc, exc)
                    await asyncio.sleep(0.5)
                    continue
                if replica.version == self.session.committed_version:
                    self.replica = replica
                    break
                # Stored but not yet committed here (a commit still reaching the session): again.
                await asyncio.sleep(0.05)
        finally:
            self._rebuilding = False
        self._ready.set()
        if self.replica is not None and self.peers:
            # Updates made while rebuilding were not sent: send the whole state
            # (Yjs ignores what a peer already has).
            frame = sync_update(self.replica.state())
            for peer in self.peers:
                peer.send_bytes(frame)

    # -- peers ----------------------------------------------------------------

    def add_peer(self, peer: YjsPeer) -> None:
        """A Yjs peer joined; it gets Updates only once ``caught_up``.

        An Update sent before the peer's SyncStep2 may build on changes the
        peer does not have yet: Yjs then shows inserts without the deletes
        before them, and Yrs (pycrdt) even shows structs past a gap in their
        client's clocks at a position worked out without the items it lacks.
        A peer editing that view inserts inside text it cannot see (a token
        split in the mixed-session test). The SyncStep2 holds everything
        those Updates would have carried, so they are simply not sent.
        """
        self.peers.add(peer)
        self._catching_up.add(peer)

    def caught_up(self, peer: YjsPeer) -> None:
        """The peer was just sent a SyncStep2 of the replica: Updates follow from now on."""
        self._catching_up.discard(peer)

    def remove_peer(self, peer: YjsPeer) -> None:
        self.peers.discard(peer)
        self._catching_up.discard(peer)

    def _send_update(self, update: bytes) -> None:
        frame = sync_update(update)
        for peer in self.peers:
            if peer not in self._catching_up:
                peer.send_bytes(frame)

    # -- the committed path ---------------------------------------------------

    def committed(self, entry: OpRecord) -> None:
        """``entry`` is committed: mirror it and send its Yjs update to the Yjs peers."""
        replica = self.replica
        if replica is None:
            return  # being rebuilt; the rebuild catches up to the committed version
        update = self._early.pop(entry.version, None)
        if update is None:
            if replica.version >= entry.version:
                return
            try:
                update = _replay(replica, entry)
            except ReplicaError as exc:
                log.error("replica of %s failed at v%d: %s", self.session.doc, entry.version, exc)
                self._rebuild()
                return
        if update != EMPTY_UPDATE:
            self._send_update(update)

    def snapshot_state(self) -> bytes | None:
        """The CRDT state at the committed version, or None when the replica is elsewhere."""
        replica = self.replica
        if replica is None or replica.version != self.session.committed_version:
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

    # -- presence ⇄ awareness ---------------------------------------------------

    def _is_yjs_client(self, client: str) -> bool:
        return any(peer.client == client for peer in self.peers)

    def awareness_from_presence(self, wire: dict[str, Any]) -> bytes | None:
        """An OT client's ``presence`` message as a Yjs awareness payload (None: not bridged).

        The state is y-quill's shape plus Tandem's own fields::

            {"user": {"name", "color"}, "cursor": {"anchor", "head"} | null,
             "tandem": {"client", "user", "index", "length", "state"}}

        ``anchor``/``head`` are Yjs relative positions (``tandem.merge.cursors``);
        when one cannot be worked out, ``cursor`` is null and ``tandem.index``
        (code points) still says where the caret is.
        """
        client = wire.get("client")
        if not isinstance(client, str) or self._is_yjs_client(client):
            return None  # Yjs clients see each other's awareness directly
        if wire.get("left"):
            known = self.bridged.pop(client, None)
            if known is None:
                return None
            return encode_awareness([AwarenessEntry(known[0], known[1] + 1, None)])
        yid, clock = self.bridged.get(client, (_bridged_id(client), 0))
        clock += 1
        self.bridged[client] = (yid, clock)
        state = wire.get("state") if isinstance(wire.get("state"), dict) else {}
        assert isinstance(state, dict)
        color = state.get("color") or state.get("colour") or _PALETTE[yid % len(_PALETTE)]
        cursor = wire.get("cursor")
        index = length = None
        yjs_cursor: dict[str, Any] | None = None
        replica = self.replica
        if isinstance(cursor, dict) and replica is not None:
            index, length = int(cursor["index"]), int(cursor["length"])
            version = int(wire.get("v", replica.version))
            try:
                if version < replica.version:
                    for entry in self.session.sequencer.entries_since(version):
                        if entry.version > replica.version:
                            break
                        index, length = transform_selection(index, length, entry.op, "left")
                if version <= replica.version:
                    anchor = relative_position(replica, index)
                    head = relative_position(replica, index + length)
                    if anchor is not None and head is not None:
                        yjs_cursor = {"anchor": anchor, "head": head}
            except TandemError:
                yjs_cursor = None
        state_out = {
            "user": {"name": wire.get("name") or wire.get("user") or "", "color": color},
            "cursor": yjs_cursor,
            "tandem": {
                "client": client,
                "user": wire.get("user"),
                "index": index,
                "length": length,
                "state": state,
            },
        }
        return encode_awareness([AwarenessEntry(yid, clock, state_out)])

    def bridged_presence(self) -> bytes | None:
        """Every OT client's presence as one awareness payload (for joiners, QueryAwareness)."""
        entries = []
        for entry in self.session.presence:
            payload = self.awareness_from_presence(
                {"type": "presence", "doc": self.session.doc, **entry.to_wire()}
            )
            if payload is not None:
                entries.extend(decode_awareness(payload))
        return encode_awareness(entries) if entries else None

    def presence_from_awareness(
        self, member: Member, entries: list[AwarenessEntry], now: float
    ) -> None:
        """A Yjs client's awareness as its OT presence (cursor in code points when known).

        The presence ``state`` is ``{"yjs": <awareness state>}``; the cursor is
        converted from its relative positions when the replica is at the
        committed version and both resolve, else it is null.
        """
        session = self.session
        for entry in entries:
            if entry.state is None:
                session.presence.remove(member.peer)
                continue
            state = entry.state if isinstance(entry.state, dict) else {"value": entry.state}
            cursor: Cursor | None = None
            replica = self.replica
            selection = state.get("cursor")
            if (
                isinstance(selection, dict)
                and replica is not None
                and replica.version == session.committed_version
            ):
                anchor = index_of(replica, selection.get("anchor"))
                head = index_of(replica, selection.get("head"))
                if anchor is not None and head is not None:
                    cursor = Cursor(min(anchor, head), abs(head - anchor))
            try:
                session.presence.update(
                    member, cursor, {"yjs": state}, session.committed_version, now
                )
            except TandemError as exc:  # a stale cursor: drop it, keep the state
                log.info("awareness of %s not bridged: %s", member.peer.client, exc)
                session.presence.update(
                    member, None, {"yjs": state}, session.committed_version, now
                )

    # -- Yjs writes -----------------------------------------------------------

    async def submit(
        self,
        member: Member,
        update: bytes,
        *,
        done: Callable[[int], None] | None = None,
    ) -> None:
        """Merge a Yjs client's update and sequence its change as the next version."""
        if member.permission != "write":
            raise ReadOnly(f"read-only access to {self.session.doc!r}: updates are refused")
        await self.session.sequence(member, Submission(yjs_update=update, done=done))

    def merge_at_head(self, update: bytes) -> tuple[Delta, bytes] | None:
        """Merge ``update`` at the sequencer's head: its change and effective update.

        None when it changes nothing. Called by ``sequence`` with no await since
        ``ready()``, so the merge happens exactly at the head.
        """
        replica = self.replica
        assert replica is not None, "await ready() first"
        try:
            for entry in self.session.sequencer.entries_since(replica.version):
                self._early[entry.version] = _replay(replica, entry)
            delta, effective = replica.merge(update)
        except UpdateRefused as exc:
            raise ReplicaRefused(str(exc)) from None  # nothing changed: no rebuild
        except ReplicaError as exc:
            self._early.clear()
            self._rebuild()
            raise ReplicaRefused(str(exc)) from None
        if effective == EMPTY_UPDATE:
            return None
        return delta, effective

    def merged(self, record: OpRecord) -> None:
        """``record`` (a merged update, applied to the sequencer) is the replica's head too."""
        replica = self.replica
        assert replica is not None and record.crdt is not None
        replica.advance(record.version)  # else the next catch-up would replay it again
        self._early[record.version] = record.crdt
