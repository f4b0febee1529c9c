"""Open documents: one session per document, single-flight loads, group commit, fan-out.

This is the async shell around the pure parts. For each submitted op the
session asks the ``Sequencer`` for a decision *synchronously* (so ops are
ordered by arrival, with no await in between), hands a commit to the
``GroupCommitter``. Once the store reports the batch *committed* (every
reader sees it; it survives a crash of this process) the session broadcasts
it, in version order, from an outbox; once the store reports it *synced*
(fsync'd: it survives a power loss too) the author hears its ack. Stores that
sync as they commit (PostgreSQL, memory) report both at once; the SQLite store
commits on the event loop and syncs behind it, so the broadcast does not wait
for the disk (``storage/sqlite.py``). Acknowledgements of duplicates and no-ops
wait like any ack, so no client is told an op is saved before it is synced;
and a member with an ack outstanding hears nothing newer from this document
until it has its ack (``Member.held``): a client's own op is always
acknowledged before the ops sequenced after it reach it.

A failed commit acknowledges nothing: the session rolls back to its last
committed state (which is exactly what the store holds, as appends are atomic)
and tells the authors of every pending op ``ERR_STORAGE``; their clients
resubmit. A failed sync (the disk refused an fsync) cannot be rolled back:
the ops are visible already. Their authors hear ``ERR_STORAGE`` and the store
refuses every later write (see ``SQLiteStore``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from typing import Any, Protocol

import orjson

from tandem.bus.base import Bus, Subscription
from tandem.commit import GroupCommitter
from tandem.errors import (
    ConflictError,
    HistoryUnavailable,
    InvalidOperation,
    NotJoined,
    OperationTooLong,
    ReadOnly,
    StorageError,
    TandemError,
    VersionError,
)
from tandem.merge.branch import BranchMerge, compose_branch, merge_branches
from tandem.metrics import Metrics
from tandem.ot.cursor import transform_selection
from tandem.ot.delta import Delta
from tandem.ot.diff import diff
from tandem.ot.document import Document
from tandem.ot.transform import Side, transform
from tandem.presence import PresenceTable
from tandem.protocol import (
    Cursor,
    ack_message,
    catchup_message,
    encode,
    error_message,
    merged_message,
    op_message,
    snapshot_message,
)
from tandem.replicas import ReplicaHost
from tandem.sequencer import Commit, Entry, HistoryGap, Sequencer
from tandem.settings import Settings
from tandem.storage.base import OpRecord, Snapshot, Store

__all__ = ["DocumentManager", "DocumentSession", "GroupCommitter", "Member", "Peer"]

log = logging.getLogger("tandem.documents")

#: Document length used to validate relayed cursors (the origin node validated them).
_BIG = sys.maxsize

#: A committed version that is a multiple of this is kept as a merge checkpoint.
CHECKPOINT_EVERY = 128
#: How many checkpoints a session keeps (the newest ones).
CHECKPOINTS_KEPT = 64


class Peer(Protocol):
    """A connected client, as a session sees it."""

    client: str
    user: str
    name: str

    def send(self, message: str) -> None:
        """Queue one encoded message for this client. Never blocks."""


@dataclass(eq=False)
class Member:
    """A peer's membership in one document."""

    peer: Peer
    permission: str  # "read" | "write"
    #: Idempotency identity: the client id scoped by user (see docs/protocol.md).
    #: Built once: it is compared for every member on every committed op.
    key: str = field(init=False)

    #: While an ack of this member's waits for a sync: what this document would have
    #: sent it meanwhile, as ``(version it belongs after, message)``; None otherwise.
    held: list[tuple[int, str]] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.key = f"{self.peer.client}@{self.peer.user}"

    def send(self, version: int, message: str) -> None:
        """Send ``message`` (about ``version``) now, or after the ack this member awaits."""
        if self.held is None:
            self.peer.send(message)
        else:
            self.held.append((version, message))


def _any_pending(pending: _Pending) -> bool:
    return True


def _has_version(pending: _Pending, version: int) -> bool:
    return pending.version == version


def _version_of(pending: _Pending) -> int:
    return pending.version


def public_client(key: str) -> str:
    return key.split("@", 1)[0]


@dataclass(eq=False)
class _Pending:
    """Something to do once ``version`` is committed (broadcast), then synced (ack)."""

    version: int
    entry: Entry | None = None
    document: Document | None = None
    author: Member | None = None
    seq: int | None = None
    ref: str | int | None = None
    received: float = 0.0
    done: Callable[[int], None] | None = None
    #: The submission as the client sent it, to sequence again after a conflict.
    op: Delta | None = None
    base_version: int | None = None
    #: A Yjs client's update (instead of ``op``), to merge again after a conflict.
    yjs_update: bytes | None = None
    #: Builds the author's reply instead of an ``ack`` (an offline ``merge``).
    answer: Callable[[_Pending], str] | None = None


class DocumentSession:
    """The single sequencer of one open document, with its members and presence."""

    def __init__(
        self,
        doc: str,
        sequencer: Sequencer,
        manager: DocumentManager,
    ) -> None:
        self.doc = doc
        self.sequencer = sequencer
        self.manager = manager
        self.settings = manager.settings
        self.members: dict[Peer, Member] = {}
        self.presence = PresenceTable()
        #: The head the store has committed: broadcast, and what joins see.
        self.committed_version = sequencer.version
        self.committed_document = sequencer.document
        #: Every version up to this one that this node committed is synced (fsync'd).
        self.synced_version = sequencer.version
        #: The highest version this node committed; above ``synced_version``, a sync is due.
        self._committed_here = sequencer.version
        #: Committed, waiting for a sync to be acknowledged (or to fail).
        self._unsynced: list[_Pending] = []
        #: Set once the store failed to sync: nothing more can be acknowledged.
        self._sync_error: BaseException | None = None
        self.last_snapshot = sequencer.version
        #: Presence of clients connected to other nodes (relayed over the bus).
        self.remote_presence = PresenceTable()
        self._outbox: deque[_Pending] = deque()
        self._remote: dict[int, Entry] = {}
        #: Highest committed seq per client key, as far as loaded history reaches.
        self.last_seqs: dict[str, int] = {}
        self._seq_checked: set[str] = set()
        self._rebasing: asyncio.Event | None = None
        self._filling = False
        self._presence_timer: asyncio.TimerHandle | None = None
        self.subscription: Subscription | None = None
        self.idle_since: float | None = time.monotonic()
        #: The CRDT replica and the Yjs peers (tandem.replicas).
        self.replicas = ReplicaHost(self)
        #: ``(version, document)`` every CHECKPOINT_EVERY committed versions, oldest first:
        #: where an offline merge rebuilds its base document from.
        self._checkpoints: deque[tuple[int, Document]] = deque(
            [(self.committed_version, self.committed_document)], maxlen=CHECKPOINTS_KEPT
        )
        #: Offline merges being computed, by ``(client key, seq)``: a duplicate waits.
        self._merging: dict[tuple[str, int], asyncio.Event] = {}
        #: Woken whenever the outbox shrinks (``_settled``).
        self._settle_waiters: list[asyncio.Future[None]] = []

    # -- membership -----------------------------------------------------------

    async def join(self, peer: Peer, permission: str, version: int | None) -> None:
        """Add ``peer`` and send it a snapshot, or the ops since ``version`` (catch-up)."""
        entries: list[Entry] | None = None
        member = Member(peer, permission)
        key = member.key
        await self._known_last_seq(key)
        # The same client back on a new connection while an op it sent on the old
        # one is still being stored: wait for that commit (or its rollback), so the
        # catch-up shows it. Otherwise it would be in neither the catch-up nor an
        # ack, and a client merging its branch would send its text a second time.
        await self._settled(
            lambda pending: pending.author is not None and pending.author.key == key
        )
        if version is not None and version <= self.committed_version:
            entries = await self._entries_between(version, self.committed_version)
        # No await from here on: the reply and the membership are consistent.
        self.members[peer] = member
        self.idle_since = None
        presence = self.presence.snapshot() + self.remote_presence.snapshot()
        if entries is None:
            message = snapshot_message(
                self.doc,
                self.committed_version,
                self.committed_document.to_delta(),
                presence,
                permission,
                self.last_seqs.get(member.key),
            )
        else:
            ops = [
                {
                    "v": entry.version,
                    "op": entry.op.to_json(),
                    "client": public_client(entry.client_id),
                    "user": entry.user,
                    "seq": entry.seq,
                }
                for entry in entries
            ]
            message = catchup_message(
                self.doc,
                version or 0,
                self.committed_version,
                ops,
                presence,
                permission,
                self.last_seqs.get(member.key),
            )
        peer.send(encode(message))
        self.manager.metrics.set_documents(len(self.manager.sessions))

    def leave(self, peer: Peer) -> None:
        member = self.members.pop(peer, None)
        if member is None:
            return
        if self.presence.remove(peer.client):
            self._announce(self.presence.left_message(peer.client, peer.user, self.doc))
        if not self.members:
            self.idle_since = time.monotonic()

    def member(self, peer: Peer) -> Member:
        member = self.members.get(peer)
        if member is None:
            raise NotJoined(f"not joined to document {self.doc!r}")
        return member

    async def _entries_between(self, after: int, upto: int) -> list[Entry]:
        """Committed entries with ``after < version <= upto``, loading old history if needed."""
        for _ in range(5):
            try:
                entries = self.sequencer.entries_since(after)
                break
            except HistoryGap as gap:
                await self._load_history(gap.needed_from)
        else:
            raise HistoryUnavailable("history is changing too fast to load; re-join")
        return [entry for entry in entries if entry.version <= upto]

    async def _load_history(self, from_version: int) -> None:
        start = self.sequencer.window_start
        records = await self.manager.store.get_ops(self.doc, from_version, start)
        if self.sequencer.window_start != start:
            return  # the window moved while we waited; the caller retries
        if len(records) != start - from_version:
            raise HistoryUnavailable(
                f"history of {self.doc!r} from version {from_version} is not available"
            )
        self.sequencer.extend_history([_entry(record) for record in records])

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
        """Sequence one op; the ack (or error) reaches ``member.peer`` once durable."""
        if member.permission != "write":
            raise ReadOnly(f"read-only access to {self.doc!r}: edits are refused")
        while self._rebasing is not None:
            await self._rebasing.wait()
        received = time.perf_counter() if received is None else received
        await self._sequence(member, op, base_version, seq, ref, received, done)

    async def _sequence(
        self,
        member: Member,
        op: Delta,
        base_version: int | None,
        seq: int | None,
        ref: str | int | None,
        received: float,
        done: Callable[[int], None] | None,
        answer: Callable[[_Pending], str] | None = None,
    ) -> None:
        if seq is not None and await self._committed_before_window(member.key, seq):
            version = await self.manager.store.find_seq(self.doc, member.key, seq)
            if version is not None:
                # A resubmit of an op committed before the loaded history: ack, apply nothing.
                self._ack_when_synced(
                    _Pending(
                        version,
                        author=member,
                        seq=seq,
                        ref=ref,
                        received=received,
                        done=done,
                        answer=answer,
                    )
                )
                return
        base = self.sequencer.version if base_version is None else base_version
        started = time.perf_counter()
        for _ in range(5):
            try:
                decision = self.sequencer.submit(
                    op, base, client_id=member.key, seq=seq, user=member.peer.user, now=time.time()
                )
                break
            except HistoryGap as gap:
                await self._load_history(gap.needed_from)
        else:
            raise HistoryUnavailable("history is changing too fast to load; resubmit")
        self.manager.metrics.transform_time(time.perf_counter() - started)
        pending = _Pending(
            decision.entry.version if isinstance(decision, Commit) else decision.version,
            author=member,
            seq=seq,
            ref=ref,
            received=received,
            done=done,
            op=op,
            base_version=base,
            answer=answer,
        )
        if isinstance(decision, Commit):
            entry = decision.entry
            # Stored with the Yjs update it makes, so replays rebuild the same items.
            crdt = self.replicas.stamp(entry)
            if crdt is not None:
                entry = self.sequencer.stamp_head(crdt)
            pending.entry = entry
            pending.document = decision.document
            self._outbox.append(pending)
            self.manager.committer.enqueue(self, _record(self.doc, entry))
        elif pending.version <= self.committed_version:
            self._ack_when_synced(pending)
        else:
            self._outbox.append(pending)

    # -- offline merge ------------------------------------------------------------

    async def merge(
        self,
        member: Member,
        base_version: int,
        seq: int | None,
        ops: list[Delta],
        ref: str | int | None = None,
    ) -> None:
        """Merge an offline branch and commit it as one op; the author gets ``merged``.

        ``ops`` are the client's branch: the first based on ``base_version``,
        each next one on the previous. Instead of transforming every branch op
        past every server op since the base (n·m transforms), both branches are
        merged from the base in one step (``tandem.merge.branch``, in a worker
        thread, so the loop keeps serving everyone else) and the resulting
        ``commit`` op is sequenced at the committed head ``h`` it was computed
        against, like any submit based on ``h``. Once it is durable as version
        ``V`` the author receives ``merged`` with the op taking its final state
        (base + branch) to the document at ``V``. A merge whose ``(client, seq)``
        was already committed is answered again and not applied twice.
        """
        if member.permission != "write":
            raise ReadOnly(f"read-only access to {self.doc!r}: edits are refused")
        key = (member.key, seq) if seq is not None else None
        event: asyncio.Event | None = None
        if key is not None:
            while (running := self._merging.get(key)) is not None:
                await running.wait()
            event = self._merging[key] = asyncio.Event()
        try:
            await self._merge(member, base_version, seq, ops, ref)
        finally:
            if key is not None and event is not None:
                self._merging.pop(key, None)
                event.set()

    async def _merge(
        self,
        member: Member,
        base_version: int,
        seq: int | None,
        ops: list[Delta],
        ref: str | int | None,
    ) -> None:
        received = time.perf_counter()
        while self._rebasing is not None:
            await self._rebasing.wait()
        if base_version > self.committed_version:
            raise VersionError(
                f"base version {base_version} is above the head version {self.committed_version}"
            )
        if seq is not None:
            known = self.sequencer.find_seq(member.key, seq)
            if known is None:
                known = await self.manager.store.find_seq(self.doc, member.key, seq)
            while known is not None and known > self.committed_version:
                # An earlier copy is committed in memory, not yet stored: answer
                # once it is (a reply against the older committed head would undo
                # the branch), or merge anew if it was rolled back.
                await self._settled(partial(_has_version, version=known))
                known = self.sequencer.find_seq(member.key, seq)
            if known is not None:
                await self._merge_again(member, base_version, seq, ops, ref)
                return
        head, server_head = self.committed_version, self.committed_document
        start, replay = await self._base_of(base_version)
        server_ops = [entry.op for entry in await self._entries_between(base_version, head)]
        result = await asyncio.to_thread(_merge_branch, start, replay, ops, server_ops, server_head)
        while self._rebasing is not None:
            await self._rebasing.wait()

        def answer(pending: _Pending) -> str:
            version, catchup = self._merge_catchup(member, seq, result, head, pending)
            return encode(merged_message(self.doc, seq, version, catchup, ref))

        await self._sequence(member, result.commit, head, seq, ref, received, None, answer)

    def _merge_catchup(
        self, member: Member, seq: int | None, result: BranchMerge, head: int, pending: _Pending
    ) -> tuple[int, Delta]:
        """The version the author ends at, and the op taking its final state there.

        Called when ``pending`` is committed (so the committed head is its version):
        the merge's catch-up, then each op committed between ``head`` and the
        merge's own version, transformed past the commit as the client's state
        machine would (``S' = transform(S, P, "left")``, ``P' = transform(P, S,
        "right")``: the same diamond the sequencer walked with the commit).
        """
        duplicate = (
            pending.entry is None
            and seq is not None
            and self.sequencer.find_seq(member.key, seq) is not None
        )
        try:
            entries = [] if duplicate else self.sequencer.entries_since(head)
        except HistoryGap:
            duplicate = True
        if duplicate:
            # Committed by an earlier copy of this merge (another node): rare, state-based.
            return self.committed_version, diff(result.client_document, self.committed_document)
        last = pending.version - 1 if pending.entry is not None else pending.version
        commit = result.commit
        steps = [result.catchup]
        for entry in entries:
            if entry.version > last:
                break
            steps.append(transform(entry.op, commit, "left"))
            commit = transform(commit, entry.op, "right")
        return pending.version, compose_branch(steps)

    async def _merge_again(
        self,
        member: Member,
        base_version: int,
        seq: int,
        ops: list[Delta],
        ref: str | int | None,
    ) -> None:
        """Answer a merge that was already committed: the author's state → the committed head."""
        start, replay = await self._base_of(base_version)
        version, target = self.committed_version, self.committed_document
        catchup = await asyncio.to_thread(_diff_branch, start, replay, ops, target)
        # No await from here on: add what was committed meanwhile, then reply.
        later = [
            entry.op
            for entry in self.sequencer.entries_since(version)
            if entry.version <= self.committed_version
        ]
        message = merged_message(
            self.doc, seq, self.committed_version, compose_branch([catchup, *later]), ref
        )
        if member.held is not None:
            # The reply takes the author to the head: what was held up to it is in it.
            member.held = [held for held in member.held if held[0] > self.committed_version]
        member.peer.send(encode(message))

    async def _base_of(self, version: int) -> tuple[Document, list[Delta]]:
        """A document at or before committed ``version`` and the ops taking it to ``version``.

        From the newest checkpoint at or before ``version`` (one every
        ``CHECKPOINT_EVERY`` committed versions, the last ``CHECKPOINTS_KEPT``);
        older bases come from the store: its newest snapshot if that is not
        newer than ``version``, else every op from version 0 (slow for a long
        history, but only for branches older than the checkpoints).
        """
        for checkpoint, document in reversed(self._checkpoints):
            if checkpoint <= version:
                entries = await self._entries_between(checkpoint, version)
                return document, [entry.op for entry in entries]
        loaded = await self.manager.store.load(self.doc)
        snapshot = loaded.snapshot
        if snapshot is not None and snapshot.version <= version:
            start, document = snapshot.version, Document(snapshot.content)
        else:
            start, document = 0, Document()
        records = await self.manager.store.get_ops(self.doc, start, version)
        if len(records) != version - start:
            raise HistoryUnavailable(
                f"history of {self.doc!r} from version {start} is not available; re-join"
            )
        return document, [record.op for record in records]

    async def _known_last_seq(self, key: str) -> int | None:
        """The client's highest committed seq, asking the store when memory cannot tell."""
        if key not in self.last_seqs and key not in self._seq_checked:
            self._seq_checked.add(key)
            if self.sequencer.window_start > 0:
                last = await self.manager.store.last_seq(self.doc, key)
                if last is not None and last > self.last_seqs.get(key, -1):
                    self.last_seqs[key] = last
        return self.last_seqs.get(key)

    async def _committed_before_window(self, key: str, seq: int) -> bool:
        """Might ``seq`` be an op committed before the history held in memory?"""
        if self.sequencer.window_start == 0 or self.sequencer.find_seq(key, seq) is not None:
            return False
        last = await self._known_last_seq(key)
        return last is not None and seq <= last

    def in_flight(self) -> bool:
        """Is an op sequenced (and so in the replica) but not yet stored and synced?"""
        return self._in_flight(_any_pending)

    async def stored(self) -> None:
        """Return at a moment when nothing sequenced is waiting for storage or its sync."""
        await self._settled(_any_pending)

    def _in_flight(self, matching: Callable[[_Pending], bool]) -> bool:
        """Is a sequenced op that ``matching`` accepts still waiting for storage or its sync?"""
        waiting = chain(self._outbox, self._unsynced)
        return any(p.entry is not None and matching(p) for p in waiting)

    async def _settled(self, waiting_for: Callable[[_Pending], bool]) -> None:
        """Return once no commit in flight matches ``waiting_for`` (stored or rolled back)."""
        while self._in_flight(waiting_for):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._settle_waiters.append(waiter)
            await waiter

    def _wake_settled(self) -> None:
        waiters, self._settle_waiters = self._settle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def committed(self, version: int, synced: bool) -> None:
        """The store has committed everything up to ``version``: broadcast it.

        The acks follow now if the store ``synced`` it too, else on ``synced``.
        """
        if version > self._committed_here:
            self._committed_here = version
        if synced and version > self.synced_version:
            self.synced_version = version
        outbox = self._outbox
        while outbox and outbox[0].version <= version:
            pending = outbox.popleft()
            if pending.entry is not None:
                assert pending.document is not None
                self._advance(pending.entry, pending.document, pending.author)
                self.manager.publish_op(self.doc, pending.entry)
                if pending.yjs_update is None and pending.entry.crdt is not None:
                    # Stored and published: an OT op's update need not stay in memory.
                    self.sequencer.forget_crdt(pending.entry.version)
            self._ack_when_synced(pending)
        if any(p.entry is None and p.version <= self.committed_version for p in outbox):
            # A duplicate of a committed op may wait behind later commits; release it now.
            self._outbox = deque()
            for pending in outbox:
                if pending.entry is None and pending.version <= self.committed_version:
                    self._ack_when_synced(pending)
                else:
                    self._outbox.append(pending)
        if self._settle_waiters:
            self._wake_settled()
        self._drain_remote()

    def synced(self, version: int) -> None:
        """The store has synced everything this node committed up to ``version``: ack it."""
        if version > self.synced_version:
            self.synced_version = version
        ready = [p for p in self._unsynced if self._is_synced(p.version)]
        if not ready:
            return
        for pending in sorted(ready, key=_version_of):
            # Out of the list before its ack: releasing what its author was held from
            # stops at the author's next ack still in the list.
            self._unsynced.remove(pending)
            self._acknowledge(pending)
        if self._settle_waiters:
            self._wake_settled()

    def sync_failed(self, exc: BaseException) -> None:
        """The store could not sync: nothing waiting for it is acknowledged, ever."""
        self._sync_error = exc
        error = StorageError(f"the op could not be synced to disk ({type(exc).__name__})")
        waiting, self._unsynced = self._unsynced, []
        for pending in waiting:
            self._fail(pending, error)
            if pending.author is not None:
                self._release(pending.author)
        if self._settle_waiters:
            self._wake_settled()

    def _is_synced(self, version: int) -> bool:
        # Once nothing committed here awaits a sync, a version above ``synced_version``
        # is one another node committed (and synced there): synced too.
        return version <= self.synced_version or self._committed_here <= self.synced_version

    def _ack_when_synced(self, pending: _Pending) -> None:
        """Acknowledge ``pending`` (committed) now if it is synced, else once it is."""
        if self._sync_error is not None:
            self._fail(pending, StorageError("the store can no longer sync; nothing is saved"))
        elif self._is_synced(pending.version):
            self._acknowledge(pending)
        else:
            answer = pending.answer
            if answer is not None:
                # A merge's reply describes the document as committed now, where its
                # catch-up ends: build it now, send it once synced.
                reply = answer(pending)
                pending.answer = lambda _pending: reply
            self._unsynced.append(pending)
            if pending.author is not None and pending.author.held is None:
                pending.author.held = []

    def _advance(self, entry: Entry, document: Document, author: Member | None) -> None:
        """Make ``entry`` the committed head: tell local members, move cursors."""
        self.committed_version = entry.version
        self.committed_document = document
        if entry.version % CHECKPOINT_EVERY == 0:
            self._checkpoints.append((entry.version, document))
        self.replicas.committed(entry)
        if entry.seq is not None:
            self.last_seqs[entry.client_id] = entry.seq
        client = public_client(entry.client_id)
        message = encode(
            op_message(self.doc, entry.version, entry.op, client, entry.user, entry.seq)
        )
        author_peer = author.peer if author is not None else None
        version = entry.version
        for peer, member in self.members.items():
            if peer is author_peer:
                continue
            if entry.seq is not None and member.key == entry.client_id:
                # The author again, on a new connection (it reconnected while the op
                # was being stored): this is its ack, never "someone else's op".
                self._ack_when_synced(_Pending(version, author=member, seq=entry.seq))
            elif member.held is None:  # Member.send, inlined: this runs once per delivery
                peer.send(message)
            else:
                member.held.append((version, message))
        self.presence.transform(entry.op, client, version=entry.version)
        self.remote_presence.transform(entry.op, client, version=entry.version)
        if self.committed_version - self.last_snapshot >= self.settings.snapshot_every:
            self._snapshot()

    def _acknowledge(self, pending: _Pending) -> None:
        author = pending.author
        if author is not None:
            if pending.answer is not None:
                author.peer.send(pending.answer(pending))
            else:
                author.peer.send(
                    encode(ack_message(self.doc, pending.seq, pending.version, pending.ref))
                )
            if pending.received:
                self.manager.metrics.op_latency(time.perf_counter() - pending.received)
            if author.held is not None:
                self._release(author)
        if pending.done is not None:
            pending.done(pending.version)

    def _release(self, member: Member) -> None:
        """Send ``member`` what was held for it, up to its next ack still waiting."""
        held = member.held
        if held is None:
            return
        waiting = [p.version for p in self._unsynced if p.author is member]
        upto = min(waiting) if waiting else None
        send = member.peer.send
        kept = []
        for version, message in held:
            if upto is None or version < upto:
                send(message)
            else:
                kept.append((version, message))
        member.held = kept if upto is not None else None

    def _rollback(self) -> list[_Pending]:
        """Forget everything not yet committed; returns what was pending, in order."""
        outbox, self._outbox = list(self._outbox), deque()
        self.manager.committer.discard(self)
        history = self.sequencer.entries_since(self.sequencer.window_start)
        self.sequencer = Sequencer(
            self.doc,
            self.committed_document,
            self.committed_version,
            [entry for entry in history if entry.version <= self.committed_version],
            max_document_chars=self.settings.max_document_chars,
            max_version_lag=self.settings.max_version_lag,
        )
        self.replicas.rolled_back()
        if self._settle_waiters:
            self._wake_settled()
        return outbox

    def commit_failed(self, exc: BaseException) -> None:
        """Roll back to the committed state; every pending author hears ERR_STORAGE."""
        error = StorageError(f"the op could not be stored ({type(exc).__name__}); resubmit it")
        for pending in self._rollback():
            if pending.entry is None and pending.version <= self.committed_version:
                self._ack_when_synced(pending)  # a duplicate of an op that *is* committed
            else:
                self._fail(pending, error)

    def _fail(self, pending: _Pending, error: TandemError) -> None:
        if pending.author is not None:
            pending.author.peer.send(
                encode(error_message(error, doc=self.doc, seq=pending.seq, ref=pending.ref))
            )
        if pending.done is not None:
            pending.done(-1)

    # -- several nodes ------------------------------------------------------------
    #
    # Every node may sequence every document (optimistic concurrency, see
    # docs/architecture.md). The store refuses a version that another node took
    # (ConflictError); the session then loads what the others committed and
    # sequences its pending submissions again, from their original base
    # versions — the same transform path their clients walk. Committed ops
    # reach the other nodes over the bus; a gap is filled from the store.

    def conflict(self) -> None:
        """Another node committed first: re-sequence our pending ops on top of its ops."""
        if self._rebasing is None:
            self._rebasing = asyncio.Event()
            self.manager.background(self._rebase())

    async def _rebase(self) -> None:
        event = self._rebasing
        try:
            records = await self.manager.store.get_ops(self.doc, self.committed_version)
            if not records:
                # Nobody else took our version: re-sequencing would conflict forever.
                self.commit_failed(ConflictError("the store refused the op; resubmit it"))
                return
            pending = self._rollback()
            for record in records:
                if record.version == self.committed_version + 1:
                    self._apply_remote(_entry(record))
            self._remote = {v: e for v, e in self._remote.items() if v > self.committed_version}
            for item in pending:
                if item.yjs_update is not None and item.author is not None:
                    try:
                        await self.replicas.submit(item.author, item.yjs_update, done=item.done)
                    except TandemError as error:
                        self._fail(item, error)
                    continue
                if item.op is None or item.author is None:
                    continue
                try:
                    await self._sequence(
                        item.author,
                        item.op,
                        item.base_version,
                        item.seq,
                        item.ref,
                        item.received,
                        item.done,
                        item.answer,
                    )
                except TandemError as error:
                    self._fail(item, error)
        except Exception as exc:  # noqa: BLE001 - the store is down: fail what is pending
            log.error("rebase of %s failed: %s", self.doc, exc)
            self.commit_failed(exc)
        finally:
            self._rebasing = None
            if event is not None:
                event.set()

    def on_bus(self, data: bytes) -> None:
        """A message from another node about this document."""
        message = orjson.loads(data)
        if message.get("node") == self.manager.node:
            return
        kind = message.get("kind")
        if kind == "op":
            version = message["v"]
            if version > self.committed_version:
                self._remote[version] = Entry(
                    version,
                    Delta.from_json(message["op"]),
                    message["key"],
                    message["seq"],
                    message["user"],
                    message["time"],
                    base64.b64decode(message["crdt"]) if message.get("crdt") else None,
                )
                self._drain_remote()
        elif kind == "presence":
            wire = message["message"]
            if wire.get("left"):
                self.remote_presence.remove(wire["client"])
            else:
                cursor = wire.get("cursor")
                self.remote_presence.update(
                    wire["client"],
                    wire["user"],
                    wire.get("name", ""),
                    Cursor(cursor["index"], cursor["length"]) if cursor else None,
                    wire.get("state") or {},
                    time.monotonic(),
                    version=wire.get("v", 0),
                    length=_BIG,
                )
            self._broadcast_all(encode(wire))

    def _drain_remote(self) -> None:
        """Apply buffered remote ops in version order while nothing local is pending."""
        if self._outbox or self._rebasing is not None:
            return
        while (entry := self._remote.pop(self.committed_version + 1, None)) is not None:
            self._apply_remote(entry)
        if self._remote:
            self.catch_up()

    def catch_up(self) -> None:
        """Check the store for ops other nodes committed that we have not seen."""
        if not self._filling:
            self._filling = True
            self.manager.background(self._fill_gap())

    def _apply_remote(self, entry: Entry) -> None:
        document = self.sequencer.apply_committed(entry)
        self._advance(entry, document, None)

    async def _fill_gap(self) -> None:
        """Load ops another node committed that the bus did not bring (or not yet)."""
        try:
            records = await self.manager.store.get_ops(self.doc, self.committed_version)
            for record in records:
                if self._outbox or self._rebasing is not None:
                    break
                if record.version == self.committed_version + 1:
                    self._apply_remote(_entry(record))
            self._remote = {v: e for v, e in self._remote.items() if v > self.committed_version}
        finally:
            self._filling = False
        if self._remote:
            self._drain_remote()

    def _snapshot(self) -> None:
        crdt = self.replicas.snapshot_state()
        if crdt is None:
            return  # the replica is not at the committed version: snapshot at the next op
        self.last_snapshot = self.committed_version
        snapshot = Snapshot(
            self.doc, self.committed_version, self.committed_document.to_delta(), crdt
        )
        self.manager.background(self.manager.store.save_snapshot(snapshot))

    # -- presence ---------------------------------------------------------------

    def update_presence(
        self,
        member: Member,
        cursor: Cursor | None,
        state: dict[str, Any] | None,
        base_version: int | None,
        now: float,
    ) -> None:
        peer = member.peer
        if cursor is not None:
            index, length = cursor.index, cursor.length
            if base_version is not None and base_version < self.committed_version:
                try:
                    entries = self.sequencer.entries_since(base_version)
                except HistoryGap:
                    raise HistoryUnavailable("presence is too far behind; re-join") from None
                own = public_client(member.key)
                for entry in entries:
                    if entry.version > self.committed_version:
                        break
                    side: Side = "right" if public_client(entry.client_id) == own else "left"
                    index, length = transform_selection(index, length, entry.op, side)
            elif base_version is not None and base_version > self.committed_version:
                raise HistoryUnavailable(
                    f"presence version {base_version} is ahead of the document "
                    f"({self.committed_version})"
                )
            cursor = Cursor(index, length)
        self.presence.update(
            peer.client,
            peer.user,
            peer.name,
            cursor,
            state,
            now,
            length=len(self.committed_document),
            version=self.committed_version,
        )
        self._flush_presence(now)

    def touch(self, peer: Peer, now: float) -> None:
        self.presence.touch(peer.client, now)

    def _flush_presence(self, now: float) -> None:
        interval = self.settings.presence_interval
        for client in self.presence.due(now, interval):
            wire = self.presence.entry_message(client, self.doc)
            message = encode(wire)
            version = self.committed_version
            for peer, member in self.members.items():
                if peer.client != client:
                    member.send(version, message)
            self.presence.mark_sent(client, now)
            self.manager.publish_presence(self.doc, wire)
        wait = self.presence.next_due(now, interval)
        if wait is not None and self._presence_timer is None:
            loop = asyncio.get_running_loop()
            self._presence_timer = loop.call_later(wait, self._presence_tick)

    def _presence_tick(self) -> None:
        self._presence_timer = None
        self._flush_presence(time.monotonic())

    def expire_presence(self, now: float) -> None:
        timeout = self.settings.presence_timeout
        for client in self.presence.expire(now, timeout):
            user = next((p.user for p in self.members if p.client == client), "")
            self._announce(self.presence.left_message(client, user, self.doc))
        for client in self.remote_presence.expire(now, timeout):
            self._broadcast_all(encode(self.presence.left_message(client, "", self.doc)))

    def _announce(self, wire: dict[str, Any]) -> None:
        """Tell local members and the other nodes."""
        self._broadcast_all(encode(wire))
        self.manager.publish_presence(self.doc, wire)

    def _broadcast_all(self, message: str) -> None:
        version = self.committed_version
        for member in self.members.values():
            member.send(version, message)

    @property
    def busy(self) -> bool:
        return bool(self._outbox or self._unsynced)

    def close(self) -> None:
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None


def _channel(doc: str) -> str:
    return f"doc:{doc}"


def _record(doc: str, entry: Entry) -> OpRecord:
    return OpRecord(
        doc,
        entry.version,
        entry.op,
        entry.client_id,
        entry.seq,
        entry.user,
        entry.time,
        entry.crdt,
    )


def _replay(start: Document, replay: list[Delta], ops: list[Delta]) -> Document:
    """The base document (``start`` + ``replay``), after checking ``ops`` fit it in turn."""
    base = start
    for op in replay:
        base = base.apply(op)
    length = len(base)
    for index, op in enumerate(ops):
        if op.base_length() > length:
            raise OperationTooLong(
                f"merge op {index} reaches past the end of the document ({length} characters)"
            )
        length = op.target_length(length)
    return base


def _merge_branch(
    start: Document,
    replay: list[Delta],
    ops: list[Delta],
    server_ops: list[Delta],
    server_head: Document,
) -> BranchMerge:
    """Worker-thread half of ``DocumentSession.merge``: rebuild the base, merge both branches."""
    base = _replay(start, replay, ops)
    try:
        return merge_branches(base, server_ops, ops, server_head)
    except ValueError as exc:
        raise InvalidOperation(f"the merge branch does not apply: {exc}") from None


def _diff_branch(start: Document, replay: list[Delta], ops: list[Delta], target: Document) -> Delta:
    """Worker-thread half of a repeated merge: the client's final state → ``target``."""
    base = _replay(start, replay, ops)
    return diff(base.apply(compose_branch(ops)), target)


def _entry(record: OpRecord) -> Entry:
    return Entry(
        record.version,
        record.op,
        record.client_id,
        record.seq,
        record.user,
        record.time,
        record.crdt,
    )


@dataclass(eq=False)
class _Loading:
    future: asyncio.Future[DocumentSession] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class DocumentManager:
    """Opens documents once (single flight), keeps them while used, unloads idle ones."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        bus: Bus | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        #: Other nodes are reached over this bus; None on a single node.
        self.bus = bus
        self.node = settings.node_id
        self.sessions: dict[str, DocumentSession] = {}
        self.committer = GroupCommitter(store, metrics, settings)
        self._loading: dict[str, _Loading] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._outgoing: deque[tuple[str, bytes]] = deque()
        self._outgoing_ready = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.committer.start()
        self._sweeper = asyncio.create_task(self._sweep(), name="tandem-sweeper")
        if self.bus is not None:
            self._publisher = asyncio.create_task(self._publish_loop(), name="tandem-publisher")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.committer.close()
        for session in list(self.sessions.values()):
            await self._unload(session, force=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher

    # -- the bus ------------------------------------------------------------------

    def publish_op(self, doc: str, entry: Entry) -> None:
        """Tell the other nodes about an op once the store has committed it."""
        if self.bus is None:
            return
        payload = {
            "kind": "op",
            "node": self.node,
            "v": entry.version,
            "op": entry.op.to_json(),
            "key": entry.client_id,
            "seq": entry.seq,
            "user": entry.user,
            "time": entry.time,
        }
        if entry.crdt is not None:
            payload["crdt"] = base64.b64encode(entry.crdt).decode()
        self._enqueue(doc, payload)

    def publish_presence(self, doc: str, wire: dict[str, Any]) -> None:
        if self.bus is None:
            return
        self._enqueue(doc, {"kind": "presence", "node": self.node, "message": wire})

    def _enqueue(self, doc: str, payload: dict[str, Any]) -> None:
        self._outgoing.append((_channel(doc), orjson.dumps(payload)))
        self._outgoing_ready.set()

    async def _publish_loop(self) -> None:
        """Publish in commit order; a failed publish is logged (peers catch up from the store)."""
        assert self.bus is not None
        while True:
            await self._outgoing_ready.wait()
            self._outgoing_ready.clear()
            while self._outgoing:
                channel, data = self._outgoing.popleft()
                try:
                    await self.bus.publish(channel, data)
                except Exception as exc:  # noqa: BLE001 - at-most-once by contract
                    log.warning("bus publish failed: %s", exc)

    def background(self, coroutine: Any) -> None:
        """Run a best-effort coroutine (snapshots); failures are logged, never raised."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)

        def finished(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("background task failed: %s", t.exception())

        task.add_done_callback(finished)

    async def open(self, doc: str) -> DocumentSession:
        """The session of ``doc``, loading it once however many ask at the same time."""
        session = self.sessions.get(doc)
        if session is not None:
            return session
        loading = self._loading.get(doc)
        if loading is not None:
            return await asyncio.shield(loading.future)
        loading = _Loading()
        self._loading[doc] = loading
        try:
            session = await self._load(doc)
        except BaseException as exc:
            loading.future.set_exception(exc)
            loading.future.exception()  # mark retrieved
            raise
        finally:
            self._loading.pop(doc, None)
        self.sessions[doc] = session
        loading.future.set_result(session)
        self.metrics.set_documents(len(self.sessions))
        return session

    async def _load(self, doc: str) -> DocumentSession:
        loaded = await self.store.load(doc)
        document = Document(loaded.snapshot.content) if loaded.snapshot else Document()
        for record in loaded.ops:
            document = document.apply(record.op)
        sequencer = Sequencer(
            doc,
            document,
            loaded.version,
            [_entry(record) for record in loaded.ops],
            max_document_chars=self.settings.max_document_chars,
            max_version_lag=self.settings.max_version_lag,
        )
        session = DocumentSession(doc, sequencer, self)
        session.replicas.load(loaded)
        for record in loaded.ops:
            if record.seq is not None:
                session.last_seqs[record.client_id] = record.seq
        if loaded.snapshot is not None:
            session.last_snapshot = loaded.snapshot.version
        elif loaded.ops:
            session.last_snapshot = 0
        if self.bus is not None:
            session.subscription = await self.bus.subscribe(_channel(doc), session.on_bus)
            # Ops committed elsewhere between our load and our subscription.
            session.catch_up()
        return session

    async def _unload(self, session: DocumentSession, *, force: bool = False) -> None:
        if not force and (session.members or session.busy):
            return
        if self.sessions.get(session.doc) is session:
            del self.sessions[session.doc]
        session.close()
        if session.subscription is not None:
            with contextlib.suppress(Exception):
                await session.subscription.unsubscribe()
            session.subscription = None
        crdt = session.replicas.snapshot_state()
        if session.committed_version > session.last_snapshot and crdt is not None:
            snapshot = Snapshot(
                session.doc, session.committed_version, session.committed_document.to_delta(), crdt
            )
            try:
                await self.store.save_snapshot(snapshot)
            except TandemError as exc:
                log.warning("snapshot of %s on unload failed: %s", session.doc, exc)
        self.metrics.set_documents(len(self.sessions))

    async def _sweep(self) -> None:
        """Expire silent presence and unload documents nobody has had open for a while."""
        while True:
            await asyncio.sleep(min(1.0, self.settings.document_idle_unload / 2 or 1.0))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                session.expire_presence(now)
                idle = session.idle_since
                if idle is not None and now - idle >= self.settings.document_idle_unload:
                    await self._unload(session)
