"""One open document: join and leave, and the one ``sequence()`` every edit goes through.

``DocumentSession`` is the async shell around the pure parts. For each
submission (an OT op, a REST op, a Yjs update, an offline merge's commit op)
``sequence`` asks the ``Sequencer`` for a decision *synchronously* (so edits
are ordered by arrival, with no await in between), hands a commit to the
``GroupCommitter`` and the decision to the delivery core
(``tandem.session.delivery``), which decides who hears what, and when. The
committer's reports (``committed``, ``synced``, ``commit_failed``,
``sync_failed``, ``conflict``) go to the delivery core as events; what the
session itself does when the head moves (the CRDT replica, presence cursors,
checkpoints, the bus, snapshots) is ``advanced``.

A failed commit acknowledges nothing: the session rolls back to its last
committed state (which is exactly what the store holds, as appends are atomic)
and the delivery core tells the authors of every pending op ``ERR_STORAGE``;
their clients resubmit. A failed sync (the disk refused an fsync) cannot be
rolled back: the ops are visible already. Their authors hear ``ERR_STORAGE``
and the store refuses every later write (see ``SQLiteStore``).

With an ``authorize`` hook, ``sequence`` takes the document's turn and a
decided commit waits for the hook's answer before it goes to the store
(``Authorization``, ``session/authorize.py``).

The other concerns are narrow pieces it owns: ``OfflineMerge``
(``session/offline.py``), ``Replication`` (other nodes: ``session/replication.py``),
``PresenceFanout`` (``session/presence.py``) and ``ReplicaHost`` (the Yjs side:
``session/yjs.py``). They see the session through small protocols declared in
their own modules, so none of them imports this one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import orjson

from tandem.bus.base import Subscription
from tandem.errors import HistoryUnavailable, NotJoined, ReadOnly, TandemError
from tandem.metrics import Metrics
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.protocol import catchup_message, encode, snapshot_content, snapshot_message
from tandem.records import OpRecord
from tandem.sequencer import Commit, HistoryGap, Sequencer
from tandem.session.authorize import Authorization, AuthorizeCheck
from tandem.session.commit import GroupCommitter
from tandem.session.delivery import Delivery, Member, Peer, Pending, Submission
from tandem.session.incarnation import catch_up_allowed
from tandem.session.offline import OfflineMerge
from tandem.session.owners import Owners
from tandem.session.presence import PresenceFanout
from tandem.session.replication import Replication
from tandem.session.yjs import ReplicaHost
from tandem.settings import Settings
from tandem.storage.base import Snapshot, Store
from tandem.storage.incarnations import LEGACY, Incarnation

__all__ = ["DocumentSession", "SessionHost"]

#: Documents of at least this many characters keep their encoded snapshot content.
CACHED_CONTENT_CHARS = 16 << 10

#: Where a submit is sequenced (here, or forwarded: ``session/owners.py``), at debug level.
_owners_log = logging.getLogger("tandem.owners")


class SessionHost(Protocol):
    """What a session needs from the manager that opened it."""

    store: Store
    settings: Settings
    metrics: Metrics
    committer: GroupCommitter
    node: str
    #: Are there other nodes (a bus)?
    replicated: bool
    #: Document leases and forwarding (several nodes on PostgreSQL); None: one process.
    owners: Owners | None
    #: The ``authorize`` hook's call (None: every op is allowed).
    authorize: AuthorizeCheck | None

    def background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a best-effort coroutine; failures are logged, never raised."""

    def publish(self, doc: str, payload: bytes) -> None:
        """Send a bus payload about ``doc`` to the other nodes (in order; none on one node)."""

    def count_documents(self) -> None:
        """The number of open documents changed (for metrics)."""


class DocumentSession:
    """The single sequencer of one open document, with its members and presence."""

    def __init__(
        self,
        doc: str,
        document: Document,
        version: int,
        history: list[OpRecord],
        host: SessionHost,
    ) -> None:
        self.doc = doc
        self.host = host
        self.settings = host.settings
        self.store = host.store
        self.node = host.node
        #: Are there other nodes to tell (a bus)?
        self.replicated = host.replicated
        self._sequencer_now = self._sequencer(document, version, history)
        self.delivery = Delivery(doc, version, self)
        self._committed_document = document
        self.last_snapshot = version
        #: The head's snapshot content, encoded, and the (version, incarnation) it is of.
        self._content: tuple[tuple[int, str], orjson.Fragment] | None = None
        #: Which history ``version`` counts in (set by the manager on load).
        self.incarnation: Incarnation = LEGACY
        self.subscription: Subscription | None = None
        #: Highest committed seq per client key, as far as loaded history reaches.
        self.last_seqs: dict[str, int] = {}
        self._seq_checked: set[str] = set()
        self.idle_since: float | None = time.monotonic()
        #: Woken whenever the delivery core settles something (``settled``).
        self._settle_waiters: list[asyncio.Future[None]] = []
        self.replication = Replication(self)
        self.presence = PresenceFanout(self)
        self.offline = OfflineMerge(self)
        #: The CRDT replica and the Yjs peers.
        self.replicas = ReplicaHost(self)
        #: The ``authorize`` hook's decision point (``session/authorize.py``).
        self.authorization = Authorization(self, host.authorize)

    # -- what the session's pieces share -----------------------------------------

    def background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.host.background(coroutine)

    def publish(self, payload: bytes) -> None:
        self.host.publish(self.doc, payload)

    def on_bus(self, data: bytes) -> None:
        """A payload from another node about this document."""
        self.replication.on_bus(data)

    def remote_presence(self, message: dict[str, Any]) -> None:
        self.presence.remote(message)

    # -- what is applied lazily (``session/replication.py``) ---------------------

    @property
    def sequencer(self) -> Sequencer:
        """The sequencer at the committed head (other owners' relayed ops applied first)."""
        if self.replication.relayed:
            self.replication.apply_relayed()
        return self._sequencer_now

    @sequencer.setter
    def sequencer(self, sequencer: Sequencer) -> None:
        self._sequencer_now = sequencer

    @property
    def own_sequencer(self) -> Sequencer:
        """The sequencer as it is, relayed ops not applied."""
        return self._sequencer_now

    @property
    def committed_document(self) -> Document:
        """The document at the committed head (relayed ops applied first)."""
        if self.replication.relayed:
            self.replication.apply_relayed()
        return self._committed_document

    @committed_document.setter
    def committed_document(self, document: Document) -> None:
        self._committed_document = document

    def apply_relayed(self) -> None:
        """Bring everything up to the committed head (before reading it)."""
        if self.replication.relayed:
            self.replication.apply_relayed()

    @property
    def follower(self) -> bool:
        """Another node owns the document, and nothing here needs each of its ops applied
        as it arrives: no Yjs peer (it hears each op's update) and no presence cursor
        (moved by each op)."""
        owners = self.host.owners
        return (
            owners is not None
            and not owners.owns(self.doc)
            and not self.replicas.peers
            and self.presence.empty
        )

    # -- the head -------------------------------------------------------------

    @property
    def committed_version(self) -> int:
        """The head the store has committed: broadcast, and what joins see."""
        return self.delivery.committed_version

    @property
    def synced_version(self) -> int:
        return self.delivery.synced_version

    @property
    def members(self) -> dict[Peer, Member]:
        return self.delivery.members

    @property
    def busy(self) -> bool:
        return self.delivery.busy

    # -- membership -----------------------------------------------------------

    async def join(
        self,
        peer: Peer,
        permission: str,
        version: int | None,
        fingerprint: str | None = None,
        incarnation: str | None = None,
    ) -> int:
        """Add ``peer`` and send it a snapshot, or the ops since ``version`` (catch-up);
        the reply's size, which is what the join cost (the caller charges it).

        A ``version`` of another ``incarnation`` (a restore, a recreated
        document) gets a snapshot (``session/incarnation.py``). With
        ``fingerprint`` (the client's document at ``version``), a catch-up
        is sent only if this history's document at ``version`` has that very
        fingerprint; otherwise the client holds another history (ops lost to a
        power loss) and gets a snapshot.
        """
        records: list[OpRecord] | None = None
        member = Member(peer, permission)
        key = member.key
        await self._known_last_seq(key)
        # The same client back on a new connection while an op it sent on the old
        # one is still being stored: wait for that commit (or its rollback), so the
        # catch-up shows it. Otherwise it would be in neither the catch-up nor an
        # ack, and a client merging its branch would send its text a second time.
        await self.settled(lambda pending: pending.author is not None and pending.author.key == key)
        if (
            version is not None
            and version <= self.committed_version
            and catch_up_allowed(self.incarnation, incarnation)
            and (fingerprint is None or await self._same_history(version, fingerprint))
        ):
            records = await self.records_between(version, self.committed_version)
        # No await from here on: the reply and the membership are consistent.
        self.apply_relayed()
        presence = self.presence.snapshot()
        last_seq = self.last_seqs.get(key)
        if records is None:
            message = snapshot_message(
                self.doc,
                self.committed_version,
                self._snapshot_content(),
                presence,
                permission,
                last_seq,
                self.incarnation.id,
            )
        else:
            message = catchup_message(
                self.doc,
                version or 0,
                self.committed_version,
                records,
                presence,
                permission,
                last_seq,
                self.incarnation.id,
            )
        reply = encode(message)
        self.add_member(member, reply)
        return len(reply)

    def _snapshot_content(self) -> Delta | orjson.Fragment:
        """The head's content, encoded once per version: joiners share it, and a client
        rejoining in a loop costs a copy of the text, not an encoding of the document.
        Under ``CACHED_CONTENT_CHARS``, encoding costs less than keeping a copy."""
        if len(self.committed_document) < CACHED_CONTENT_CHARS:
            return self.committed_document.to_delta()
        key = (self.committed_version, self.incarnation.id)
        if self._content is None or self._content[0] != key:
            self._content = (key, snapshot_content(self.committed_document.to_delta()))
        return self._content[1]

    async def _same_history(self, version: int, fingerprint: str) -> bool:
        if version == self.committed_version:
            document = self.committed_document
        else:
            try:
                document = await self.offline.document_at(version)
            except HistoryUnavailable:
                return False
        return document.fingerprint() == fingerprint

    def add_member(self, member: Member, reply: str | None = None) -> None:
        """``member`` is in (a Yjs peer joins without a ``reply``: it syncs by itself)."""
        self.delivery.joined(member, reply)
        self.idle_since = None
        self.host.count_documents()

    def leave(self, peer: Peer) -> None:
        if self.delivery.left(peer) is None:
            return
        self.presence.remove(peer)
        if not self.members:
            self.idle_since = time.monotonic()

    def member(self, peer: Peer) -> Member:
        member = self.members.get(peer)
        if member is None:
            raise NotJoined(f"not joined to document {self.doc!r}")
        return member

    def touch(self, peer: Peer, now: float) -> None:
        self.presence.touch(peer, now)

    # -- history --------------------------------------------------------------

    async def records_between(self, after: int, upto: int) -> list[OpRecord]:
        """Committed records with ``after < version <= upto``, loading old history if needed."""
        for _ in range(5):
            try:
                records = self.sequencer.entries_since(after)
                break
            except HistoryGap as gap:
                await self.load_history(gap.needed_from)
        else:
            raise HistoryUnavailable("history is changing too fast to load; re-join")
        return [record for record in records if record.version <= upto]

    async def load_history(self, from_version: int) -> None:
        start = self.sequencer.window_start
        records = await self.store.get_ops(self.doc, from_version, start)
        if self.sequencer.window_start != start:
            return  # the window moved while we waited; the caller retries
        if len(records) != start - from_version:
            raise HistoryUnavailable(
                f"history of {self.doc!r} from version {from_version} is not available"
            )
        self.sequencer.extend_history(records)

    async def _known_last_seq(self, key: str) -> int | None:
        """The client's highest committed seq, asking the store when memory cannot tell."""
        if key not in self.last_seqs and key not in self._seq_checked:
            self._seq_checked.add(key)
            if self.sequencer.window_start > 0:
                last = await self.store.last_seq(self.doc, key)
                if last is not None and last > self.last_seqs.get(key, -1):
                    self.last_seqs[key] = last
        return self.last_seqs.get(key)

    async def _committed_before_window(self, key: str, seq: int) -> bool:
        """Might ``seq`` be an op committed before the history held in memory?"""
        if self.sequencer.window_start == 0 or self.sequencer.find_seq(key, seq) is not None:
            return False
        last = await self._known_last_seq(key)
        return last is not None and seq <= last

    # -- edits ----------------------------------------------------------------

    async def submit(
        self,
        member: Member,
        op: Delta,
        base_version: int | None,
        seq: int | None,
        ref: str | int | None = None,
        *,
        received: float | None = None,
        done: Callable[[int], None] | None = None,
    ) -> None:
        """Sequence one OT op; the ack (or error) reaches ``member.peer`` once durable."""
        received = time.perf_counter() if received is None else received
        submission = Submission(op, base_version, seq, ref, received, done)
        await self.sequence(member, submission)

    async def rebased(self) -> None:
        """Return once no re-sequencing after a conflict is under way."""
        await self.replication.rebased()

    async def sequence(
        self, member: Member, submission: Submission, *, after_conflict: bool = False
    ) -> None:
        """Decide one submission (OT, REST, Yjs or an offline merge) and hand it on.

        Everything before the decision may wait (a conflict being resolved,
        history loaded from the store, the Yjs replica being rebuilt); from the
        decision to the hand-off to the committer and the delivery core nothing
        does, so edits are sequenced in the order they are decided.
        ``after_conflict``: sequenced again by the rebase after a conflict, which
        new submissions wait for (so it does not wait for itself).
        """
        if member.permission != "write":
            raise ReadOnly(f"read-only access to {self.doc!r}: edits are refused")
        if not after_conflict and self.replication.rebasing:  # no coroutine per op otherwise
            await self.rebased()
        owners = self.host.owners
        if (
            owners is not None
            and not owners.owns(self.doc)
            and await owners.forward(self, member, submission)
        ):
            return  # another node owns the document and sequenced it
        if owners is not None and _owners_log.isEnabledFor(logging.DEBUG):
            _owners_log.debug("%s: sequencing a submit of %s here", self.node, self.doc)
        if self.authorization.active:  # one decision at a time: the hook sees the head
            async with self.authorization.turn:
                await self._sequence(member, submission)
        else:
            await self._sequence(member, submission)

    async def _sequence(self, member: Member, submission: Submission) -> None:
        if submission.yjs_update is not None:
            await self.replicas.ready()
            await self._decide_yjs(member, submission)
            return
        seq = submission.seq
        if seq is not None and await self._committed_before_window(member.key, seq):
            version = await self.store.find_seq(self.doc, member.key, seq)
            if version is not None:
                # A resubmit of an op committed before the loaded history: ack, apply nothing.
                self.delivery.stored_duplicate(Pending(version, member, submission))
                return
        assert submission.op is not None
        if submission.base_version is None:
            submission.base_version = self.sequencer.version
        started = time.perf_counter()
        for _ in range(5):
            before = self.sequencer.document
            try:
                decision = self.sequencer.submit(
                    submission.op,
                    submission.base_version,
                    client_id=member.key,
                    seq=seq,
                    user=member.peer.user,
                    now=time.time(),
                )
                break
            except HistoryGap as gap:
                await self.load_history(gap.needed_from)
        else:
            raise HistoryUnavailable("history is changing too fast to load; resubmit")
        self.host.metrics.transform_time(time.perf_counter() - started)
        if isinstance(decision, Commit):
            record = decision.entry
            pending = Pending(record.version, member, submission, record, decision.document)
            if self.authorization.active:
                source = "op" if submission.answer is None else "merge"
                await self.authorization.commit(pending, before, source)
            else:
                self._commit(pending)
        else:
            self.delivery.decided(Pending(decision.version, member, submission))

    async def _decide_yjs(self, member: Member, submission: Submission) -> None:
        """Merge a Yjs update at the head; its change becomes the next version.

        No await from the merge on, but for the ``authorize`` hook (which holds the turn).
        """
        assert submission.yjs_update is not None
        merged = self.replicas.merge_at_head(submission.yjs_update)
        if merged is None:  # changes nothing
            if submission.done is not None:
                submission.done(self.committed_version)
            return
        delta, effective = merged
        record = OpRecord(
            self.doc,
            self.sequencer.version + 1,
            delta,
            member.key,
            None,
            member.peer.user,
            time.time(),
            effective,
        )
        before = self.sequencer.document
        document = self.sequencer.apply_committed(record)
        self.replicas.merged(record)
        submission.received = time.perf_counter()
        pending = Pending(record.version, member, submission, record, document)
        if self.authorization.active and delta.ops:  # a change to the text only
            await self.authorization.commit(pending, before, "yjs")
        else:
            self._commit(pending)

    def _commit(self, pending: Pending) -> None:
        self.delivery.decided(pending)
        self.enqueue(pending)

    def enqueue(self, pending: Pending) -> None:
        """Hand a decided commit to the store; an OT op gets its Yjs update first."""
        record = pending.record
        assert record is not None
        if record.crdt is None and pending.submission.yjs_update is None:
            # Stored with the Yjs update it makes, so replays rebuild the same items.
            crdt = self.replicas.stamp(record)
            if crdt is not None:
                record = pending.record = self.sequencer.stamp_head(crdt)
        self.host.committer.enqueue(self, record)

    # -- what the committer reports (tandem.session.commit.Committing) ----------

    def committed(self, version: int, synced: bool) -> None:
        """The store committed everything up to ``version``: broadcast it."""
        self.delivery.committed(version, synced)
        self.wake_settled()
        self.replication.drain()

    def synced(self, version: int) -> None:
        self.delivery.synced(version)
        self.wake_settled()

    def sync_failed(self, exc: BaseException) -> None:
        self.delivery.sync_failed(exc)
        self.wake_settled()

    def commit_failed(self, exc: BaseException) -> None:
        """Roll back to the committed state; every pending author hears ERR_STORAGE."""
        self._reset()
        self.delivery.failed(exc)
        self.wake_settled()

    def conflict(self) -> None:
        """Another node committed first: re-sequence the pending ops on top of its ops."""
        self.replication.conflict()

    def fenced(self) -> None:
        """Another node owns the document now: forward what was waiting for the commit."""
        if self.host.owners is not None:
            self.host.owners.fenced(self.doc)
        self.replication.conflict(fenced=True)

    def forward_settled(self) -> None:
        self.wake_settled()

    def roll_back(self) -> list[Pending]:
        """Forget everything not yet committed; returns what was pending, in order."""
        pending = self.delivery.rolled_back()
        self._reset()
        self.wake_settled()
        return pending

    def _reset(self) -> None:
        self.host.committer.discard(self)
        history = self.sequencer.entries_since(self.sequencer.window_start)
        self.sequencer = self._sequencer(
            self.committed_document,
            self.committed_version,
            [record for record in history if record.version <= self.committed_version],
        )
        self.replicas.rolled_back()

    def _sequencer(self, document: Document, version: int, history: list[OpRecord]) -> Sequencer:
        """A sequencer for this document with the configured limits."""
        settings = self.settings
        return Sequencer(
            self.doc,
            document,
            version,
            history,
            window=settings.history_window,
            max_document_chars=settings.max_document_chars,
            max_version_lag=settings.max_version_lag,
        )

    # -- when the head moves (tandem.session.delivery.DeliveryListener) --------

    def advanced(self, record: OpRecord, document: Document, pending: Pending | None) -> None:
        """``record`` is the committed head: mirror it everywhere but the members.

        For another owner's op relayed lazily, called when it is applied
        (``Replication.apply_relayed``), with the members told already.
        """
        self._committed_document = document
        self.offline.checkpoint(record.version, document)
        self.replicas.committed(record)
        if record.seq is not None:
            self.last_seqs[record.client_id] = record.seq
        self.presence.transform(record)
        if pending is not None:
            self.replication.publish(record)
            if record.crdt is not None and pending.submission.yjs_update is None:
                # Stored and published: an OT op's update need not stay in memory.
                self.sequencer.forget_crdt(record.version)
        if record.version - self.last_snapshot >= self.settings.snapshot_every and (
            pending is not None or self.host.owners is None
        ):
            self._snapshot()  # by the node that committed it (with leases, the owner)

    def acknowledged(self, pending: Pending) -> None:
        if pending.submission.received:
            self.host.metrics.op_latency(time.perf_counter() - pending.submission.received)

    def _snapshot(self) -> None:
        snapshot = self.snapshot()
        if snapshot is not None:
            self.last_snapshot = snapshot.version
            self.host.background(self.store.save_snapshot(snapshot))

    def snapshot(self) -> Snapshot | None:
        """The committed head as a snapshot; None while the replica is elsewhere."""
        crdt = self.replicas.snapshot_state()
        if crdt is None:
            return None  # the replica is not at the committed version: snapshot at the next op
        return Snapshot(self.doc, self.committed_version, self.committed_document.to_delta(), crdt)

    # -- waiting for the store ---------------------------------------------------

    def in_flight(self) -> bool:
        """Is an op sequenced (and so in the replica) but not yet stored and synced?"""
        return self.delivery.in_flight()

    async def stored(self) -> None:
        """Return at a moment when nothing sequenced is waiting for storage or its sync."""
        await self.settled(None)

    async def settled(self, waiting_for: Callable[[Pending], bool] | None) -> None:
        """Return once no commit in flight matches ``waiting_for`` (stored or rolled back)."""
        while self.delivery.in_flight(waiting_for):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._settle_waiters.append(waiter)
            await waiter

    def wake_settled(self) -> None:
        if not self._settle_waiters:
            return
        waiters, self._settle_waiters = self._settle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def refuse(self, pending: Pending, error: TandemError) -> None:
        self.delivery.refuse(pending, error)

    def close(self) -> None:
        self.presence.close()
