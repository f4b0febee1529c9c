"""The Yjs side of an open document: its CRDT replica, its Yjs peers, Yjs writes.

``ReplicaHost`` is owned by a ``DocumentSession`` (which it sees through the
small ``ReplicaSession`` protocol, so it does not import it) and called from a
few hooks there:

* ``load(loaded)`` when the document opens: the replica is rebuilt from the
  CRDT state of the newest snapshot plus the ops after it (never re-seeded
  from text when a state exists; see ``tandem.merge.replica``);
* ``stamp(record)`` when an OT op is sequenced: applied now, its Yjs update is
  stored with it — unless no Yjs peer is here and its delta replays
  deterministically (``_deferrable``): then it is stored without one;
* ``committed(record)`` from the session's ``advanced``, in version order, for
  local and other nodes' ops alike. With Yjs peers here, the op is applied to
  the replica (unless it already was) and its Yjs update is sent to every Yjs
  peer — the author of a Yjs write included: that echo is its
  acknowledgement, sent only once committed (on SQLite its fsync may follow).
  With none, the op joins the ``backlog`` (``tandem.merge.backlog``), applied
  in one Yrs transaction when something reads the replica (``ready``, a peer
  joining, a merge, a stamp, a snapshot) or once the backlog is full;
* ``rolled_back()`` when the session forgets uncommitted ops: a replica that
  had applied some is rebuilt from the store — from the stored CRDT state and
  the update stored with every op (never from deltas but those of ops stored
  without one), so item ids stay those the Yjs peers hold;
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
import contextlib
import logging
import zlib
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

from tandem.errors import ReadOnly, TandemError
from tandem.merge.backlog import Backlog
from tandem.merge.cursors import index_of, relative_position
from tandem.merge.replica import (
    EMPTY_UPDATE,
    SERVER_CLIENT_ID,
    Replica,
    ReplicaError,
    UpdateRefused,
    carries_formats,
    replay_record,
)
from tandem.merge.updates import clock_ends
from tandem.merge.yproto import AwarenessEntry, decode_awareness, encode_awareness, sync_update
from tandem.ot.cursor import transform_selection
from tandem.ot.delta import Delta
from tandem.protocol import Cursor
from tandem.records import OpRecord
from tandem.sequencer import Sequencer
from tandem.session.delivery import Member, Submission
from tandem.session.presence import PresenceFanout
from tandem.session.stored_replica import build_replica
from tandem.storage.base import LoadedDocument, Store
from tandem.storage.incarnations import Incarnation

__all__ = [
    "ReplicaHost",
    "ReplicaRefused",
    "ReplicaSession",
    "YjsPeer",
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

    def apply_relayed(self) -> None:
        """Apply other owners' relayed ops (``session/replication.py``): their records
        reach ``committed`` then, in order."""

    async def sequence(
        self, member: Member, submission: Submission, *, after_conflict: bool = False
    ) -> None: ...


class ReplicaRefused(TandemError):
    """A Yjs update the replica cannot take (missing dependencies, malformed)."""

    code = "ERR_INVALID_OP"


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
        #: Committed ops not applied yet: no Yjs peer here reads the replica.
        self.backlog = Backlog()
        #: Does a stored update (an op's, committed since this session loaded) name
        #: the replica's Yjs client id? Until one does, every op is stamped:
        #: a renewed incarnation retires the client ids the stored updates name
        #: (``replica_clients``), and a Yjs client may hold items of this one.
        self._named = False
        self._ready = asyncio.Event()
        self._rebuilding = False
        #: Yjs awareness by Yjs client id (states of connected Yjs clients only).
        self.awareness: dict[int, AwarenessEntry] = {}
        #: OT clients shown to Yjs clients: OT client id → (Yjs client id, awareness clock).
        self.bridged: dict[str, tuple[int, int]] = {}

    # -- lifecycle ------------------------------------------------------------

    def load(self, loaded: LoadedDocument) -> None:
        self.backlog.clear()
        self._named = self.session.incarnation.yjs_client == SERVER_CLIENT_ID
        self.replica = build_replica(loaded, self.session.incarnation)
        self._catch_up_committed()
        self._ready.set()

    async def ready(self) -> Replica:
        """The replica at the committed version (or past it), once built."""
        while True:
            while self.replica is None:
                self._ready.clear()
                await self._ready.wait()
            replica = self._catch_up()
            if replica is not None:
                return replica

    def _catch_up(self) -> Replica | None:
        """Apply the backlog (no await); None when that failed and a rebuild began."""
        self.session.apply_relayed()
        replica = self.replica
        if replica is None or not self.backlog:
            return replica
        try:
            self.backlog.apply_to(replica)
        except (ReplicaError, TandemError) as exc:
            log.error("replica of %s failed catching up: %s", self.session.doc, exc)
            self._rebuild()
            return None
        return replica

    def _deferrable(self, replica: Replica, entry: OpRecord) -> bool:
        """May ``entry`` be stored without its Yjs update, applied only when needed?

        Only while no Yjs peer is here, and only if applying its delta is
        deterministic: it sets no attributes and the replica, with everything
        before it, has never held a formatting item (``Replica.format_free``);
        and only once a stored update names the replica's Yjs client id
        (``_named``), so a renewed incarnation still retires it.
        Every node and every restart then applies the same delta to the same
        items and makes the same ones (the op log replays to the same replica).
        Ops sequenced but not committed yet were either applied (stamped) or
        deferred under this very rule, so the replica's head is format-free too.
        """
        return (
            not self.peers
            and self._named
            and replica.format_free
            and self.backlog.format_free
            and not carries_formats(entry.op)
        )

    def _catch_up_committed(self) -> None:
        """Apply committed entries the replica has not seen (no await: consistent)."""
        replica = self.replica
        assert replica is not None
        session = self.session
        if replica.version < session.committed_version:
            for entry in session.sequencer.entries_since(replica.version):
                if entry.version > session.committed_version:
                    break
                replay_record(replica, entry)

    def stamp(self, entry: OpRecord) -> bytes | None:
        """Apply the just-committed head ``entry`` now; its Yjs update, to store with it.

        Called by the session right after the sequencer committed an OT op
        and before its record goes to the committer, so every op is stored
        with the exact update it made and replays (restart, other nodes)
        rebuild identical items. Returns None when the op is deferred
        (``_deferrable``: its delta replays deterministically), or when the
        replica is being rebuilt or fails; that op is then stored without an
        update and replayed from its delta (deterministic except for inserts
        negating several inherited attributes, which a deferred op never is).
        """
        replica = self.replica
        if replica is None or replica.version >= entry.version:
            return None
        if self._deferrable(replica, entry):
            return None  # applied when committed or needed (``committed``)
        if self._catch_up() is None:
            return None
        try:
            for earlier in self.session.sequencer.entries_since(replica.version):
                if earlier.version >= entry.version:
                    break
                self._early[earlier.version] = replay_record(replica, earlier)
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
        self.backlog.clear()
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
                            replay_record(replica, record)
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
        self._catch_up()  # with a peer here every op is applied as it commits

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
        if not self._named and entry.crdt is not None:
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                self._named = replica.client_id in clock_ends(entry.crdt)
        update = self._early.pop(entry.version, None)
        if update is None:
            if replica.version >= entry.version:
                return
            if not self.peers and not self.backlog.full:
                self.backlog.push(entry)  # nobody here reads it yet: applied when needed
                return
            replica = self._catch_up()
            if replica is None:
                return
            try:
                update = replay_record(replica, entry)
            except ReplicaError as exc:
                log.error("replica of %s failed at v%d: %s", self.session.doc, entry.version, exc)
                self._rebuild()
                return
        if update != EMPTY_UPDATE:
            self._send_update(update)

    def snapshot_state(self) -> bytes | None:
        """The CRDT state at the committed version, or None when the replica is elsewhere."""
        replica = self._catch_up()
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
        replica = self._catch_up()
        if replica is None:
            raise ReplicaRefused("the document's replica is being rebuilt; send it again")
        try:
            for entry in self.session.sequencer.entries_since(replica.version):
                self._early[entry.version] = replay_record(replica, entry)
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
