"""Who hears what, and when: the sans-I/O delivery core of one document.

``Delivery`` takes events and makes sends; it never awaits, reads no clock and
touches no storage or network. Events:

* ``joined(member, reply)`` / ``left(peer)``: membership (``reply`` is the
  joiner's snapshot or catch-up, sent before anything newer);
* ``decided(pending)``: the sequencer decided a submission. A commit
  (``pending.record``) waits in the **outbox**, in version order, for the
  store; a duplicate or no-op is acknowledged once the version it names is
  committed and synced;
* ``withdraw(pending)``: the newest decision, not yet handed to the store, is
  taken back (the ``authorize`` hook rejected it);
* ``stored_duplicate(pending)``: a resubmit of an op the store holds from
  before the loaded history: acknowledged once synced;
* ``committed(version, synced)``: the store committed everything up to
  ``version`` (and ``synced`` it, if so). Each op up to there becomes the
  head and is **broadcast** to every other member; its author's ack goes out
  once synced (if it is already, before the broadcast: the author's next op
  need not wait for the fan-out);
* ``synced(version)``: the store synced up to ``version``: acks go out;
* ``failed(exc)``: a commit failed, nothing of it was written: **roll back**
  (forget the outbox) and tell every pending author ``ERR_STORAGE``;
  ``rolled_back()`` is the same without the errors, for a session that
  sequences them again (another node took the version first);
* ``sync_failed(exc)``: the store cannot sync: nothing waiting is ever acked;
* ``remote(record, document)``: another node's committed op: broadcast;
  ``relay(version, client_id, seq, message)`` the same, already framed, for a
  session that applies it to its document later (``relayable`` says when it
  may: nothing of this node's awaits a commit or sync, and no forwarded
  submission's reply describes the document);
* ``forwarding(pending)`` / ``answered(pending, version)`` / ``withdrawn(pending)``:
  a submission sent to the document's owner node, which decided it as
  ``version`` (or refused it). Its author is held meanwhile, and acknowledged
  when that version is committed here (``remote``), in its place among the
  versions it hears; it never hears its own op as someone else's;
* ``broadcast(message)`` / ``reply_at_head``: presence and merge replies.

The rules it keeps (``tests/property/test_delivery.py`` drives it with random
event orders, faults and power loss, and checks them):

1. Committed before broadcast: an op reaches other members only from
   ``committed``; a failed commit rolls back, so nothing broadcast is missing
   from the store.
2. Synced before ack: an ack (or a merge's reply) goes out only once the
   version it names is synced; after a sync failure, never.
3. In order: a member hears versions in increasing order, each once.
4. An author's ack comes before anything sequenced after its op: while one of
   a member's acks waits for a sync the member is **held** — what it would
   hear meanwhile is kept (``Member.held``) and released, in order, after the
   ack.

Sends are made by calling ``Peer.send``, which only queues a message for that
client (the connection's outbox writes it at the edge): the fan-out of one op
to 200 members costs about 0.8 µs a delivery, and building a list of sends for
the session to replay would add a tenth to it. Callbacks to the session
(``DeliveryListener``) run at the points where the head moves and acks go out.

Must not import asyncio, storage, bus or network code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Protocol

from tandem.errors import StorageError, TandemError
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.protocol import ack_message, encode, error_message, op_message
from tandem.records import OpRecord

__all__ = ["Delivery", "DeliveryListener", "Member", "Peer", "Pending", "Submission"]


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


@dataclass(eq=False, slots=True)
class Submission:
    """What a client asked to sequence; kept so a conflict can sequence it again."""

    #: An OT op (an offline merge's commit op included), based on ``base_version``.
    op: Delta | None = None
    base_version: int | None = None
    seq: int | None = None
    ref: str | int | None = None
    #: ``time.perf_counter()`` when it arrived (0: not measured).
    received: float = 0.0
    #: Called with the version once acknowledged, or -1 once refused.
    done: Callable[[int], None] | None = None
    #: Builds the author's reply instead of an ``ack`` (an offline ``merge``).
    answer: Callable[[Pending], str] | None = None
    #: A Yjs client's update (instead of ``op``), to merge again after a conflict.
    yjs_update: bytes | None = None


#: The submission of an ack owed to an author on another connection.
_NOTHING = Submission()


@dataclass(eq=False, slots=True)
class Pending:
    """A decided submission: broadcast once ``version`` is committed, acked once synced."""

    version: int
    author: Member | None
    submission: Submission = _NOTHING
    #: The op to commit as ``version``; None for an ack of something committed already.
    record: OpRecord | None = None
    #: The document at ``version`` (with ``record``).
    document: Document | None = None
    #: The author's reply, built when committed (``Submission.answer``).
    reply: str | None = None


class DeliveryListener(Protocol):
    """What the session does when the head moves and when an ack goes out."""

    def advanced(self, record: OpRecord, document: Document, pending: Pending | None) -> None:
        """``record`` is the committed head now (before it is broadcast).

        ``pending`` is this node's decision that made it; None for another node's op.
        """

    def acknowledged(self, pending: Pending) -> None:
        """``pending``'s author was just acknowledged."""


class Delivery:
    """The delivery state of one document (see the module docstring)."""

    def __init__(self, doc: str, version: int, listener: DeliveryListener) -> None:
        self.doc = doc
        self.listener = listener
        self.members: dict[Peer, Member] = {}
        #: The head the store has committed: broadcast, and what joins see.
        self.committed_version = version
        #: Every version up to this one that this node committed is synced.
        self.synced_version = version
        #: The highest version this node committed; above ``synced_version``, a sync is due.
        self.committed_here = version
        #: Decided, waiting for the store to commit them, in version order.
        self.outbox: deque[Pending] = deque()
        #: Committed, waiting for a sync to be acknowledged (or to fail).
        self.unsynced: list[Pending] = []
        #: Set once the store failed to sync: nothing more can be acknowledged.
        self.sync_error: BaseException | None = None
        #: Forwarded to the owner node (``version`` 0 until it answers), in order.
        self.forwarded: list[Pending] = []

    # -- membership -------------------------------------------------------------

    def joined(self, member: Member, reply: str | None = None) -> None:
        """``member`` joins; ``reply`` (its snapshot or catch-up) is the first it hears."""
        self.members[member.peer] = member
        if reply is not None:
            member.peer.send(reply)

    def left(self, peer: Peer) -> Member | None:
        return self.members.pop(peer, None)

    # -- events -----------------------------------------------------------------

    def decided(self, pending: Pending) -> None:
        """The sequencer decided ``pending``: a commit to store, or an ack of a committed op."""
        if pending.record is None and pending.version <= self.committed_version:
            self._ack_when_synced(pending)
        else:
            self.outbox.append(pending)

    def withdraw(self, pending: Pending) -> None:
        """Take back ``pending``, the newest decision, never handed to the store.

        An op held back while the ``authorize`` hook decided, and then rejected:
        nobody heard of it, so nobody is told (its author gets the rejection).
        """
        if not self.outbox or self.outbox[-1] is not pending:
            raise ValueError("only the newest decision can be withdrawn")
        self.outbox.pop()

    def stored_duplicate(self, pending: Pending) -> None:
        """A resubmit of an op stored before the history in memory: ack it once synced."""
        self._ack_when_synced(pending)

    def committed(self, version: int, synced: bool) -> None:
        """The store committed everything up to ``version``: broadcast it, ack what is synced."""
        if version > self.committed_here:
            self.committed_here = version
        if synced and version > self.synced_version:
            self.synced_version = version
            if self.unsynced:  # acks of earlier versions first
                self._acknowledge_synced()
        outbox = self.outbox
        while outbox and outbox[0].version <= version:
            pending = outbox.popleft()
            if pending.record is not None:
                assert pending.document is not None
                self._advance(pending.record, pending.document, pending)
            else:
                self._ack_when_synced(pending)
        if any(p.record is None and p.version <= self.committed_version for p in outbox):
            # A duplicate of a committed op may wait behind later commits; release it now.
            self.outbox = deque()
            for pending in outbox:
                if pending.record is None and pending.version <= self.committed_version:
                    self._ack_when_synced(pending)
                else:
                    self.outbox.append(pending)

    def synced(self, version: int) -> None:
        """The store synced everything this node committed up to ``version``: ack it."""
        if version > self.synced_version:
            self.synced_version = version
        self._acknowledge_synced()

    def _acknowledge_synced(self) -> None:
        ready = [p for p in self.unsynced if self.is_synced(p.version)]
        ready.sort(key=_version_of)
        for pending in ready:
            # Out of the list before its ack: releasing what its author was held from
            # stops at the author's next ack still in the list.
            self.unsynced.remove(pending)
            self._acknowledge(pending)

    def sync_failed(self, exc: BaseException) -> None:
        """The store could not sync: nothing waiting for it is acknowledged, ever."""
        self.sync_error = exc
        error = StorageError(f"the op could not be synced to disk ({type(exc).__name__})")
        waiting, self.unsynced = self.unsynced, []
        for pending in waiting:
            self.refuse(pending, error)
            if pending.author is not None:
                self._release(pending.author)

    def rolled_back(self) -> list[Pending]:
        """Forget everything not yet committed; returns what was pending, in order."""
        outbox, self.outbox = list(self.outbox), deque()
        return outbox

    def failed(self, exc: BaseException) -> None:
        """A commit failed: roll back; every pending author hears ERR_STORAGE."""
        error = StorageError(f"the op could not be stored ({type(exc).__name__}); resubmit it")
        for pending in self.rolled_back():
            if pending.record is None and pending.version <= self.committed_version:
                self._ack_when_synced(pending)  # a duplicate of an op that *is* committed
            else:
                self.refuse(pending, error)

    def remote(self, record: OpRecord, document: Document) -> None:
        """Another node committed ``record`` (the next version): broadcast it."""
        if not self.forwarded:
            self._advance(record, document, None)
            return
        mine = self._forwarded_as(record.version, record.client_id, record.seq)
        self._advance(record, document, None, mine)
        self._remote_acks(mine)

    @property
    def relayable(self) -> bool:
        """May another node's op be broadcast without its document (``relay``)?

        Only while nothing this node decided awaits its commit or its sync (so
        the op's acks need no sync, and the listener mirrors nothing of this
        node's in between) and no forwarded submission's reply is built from
        the document (an offline merge's).
        """
        return (
            not self.outbox
            and self.committed_here <= self.synced_version
            and all(p.submission.answer is None for p in self.forwarded)
        )

    def relay(self, version: int, client_id: str, seq: int | None, message: str) -> None:
        """Another node committed the next ``version`` (framed as ``message``): broadcast it.

        As ``remote``, without the listener's ``advanced``: the session mirrors
        the op itself, later (only while ``relayable``).
        """
        self.committed_version = version
        if not self.forwarded:
            self._fan_out(version, client_id, seq, message, None)
            return
        mine = self._forwarded_as(version, client_id, seq)
        if mine is not None:
            mine.version = version
        self._fan_out(version, client_id, seq, message, mine)
        self._remote_acks(mine)

    def _remote_acks(self, mine: Pending | None) -> None:
        if mine is not None:
            self._ack_forwarded(mine)
        for pending in [p for p in self.forwarded if 0 < p.version <= self.committed_version]:
            self._ack_forwarded(pending)

    # -- forwarded to the owner node ------------------------------------------------

    def forwarding(self, pending: Pending) -> None:
        """``pending`` goes to the owner node; hold its author until it is answered."""
        pending.version = 0
        self.forwarded.append(pending)
        author = pending.author
        if author is not None and author.held is None:
            author.held = []

    def answered(self, pending: Pending, version: int) -> None:
        """The owner decided ``pending`` as ``version``: ack it once that is committed here.

        Nothing happens if it was acknowledged already (its op arrived first).
        """
        if pending not in self.forwarded:
            return
        pending.version = version
        if version <= self.committed_version:
            self._ack_forwarded(pending)

    def withdrawn(self, pending: Pending) -> None:
        """``pending`` will not be acknowledged here (refused, or sent elsewhere)."""
        if pending in self.forwarded:
            self.forwarded.remove(pending)
            if pending.author is not None:
                self._release(pending.author)

    def _forwarded_as(self, version: int, client_id: str, seq: int | None) -> Pending | None:
        """The forwarded submission that the op committed as ``version`` is, if any."""
        for pending in self.forwarded:
            author = pending.author
            if pending.version == version or (
                seq is not None
                and author is not None
                and pending.submission.seq == seq
                and author.key == client_id
            ):
                return pending
        return None

    def _ack_forwarded(self, pending: Pending) -> None:
        """Acknowledge a forwarded ``pending`` (its version is committed here).

        What its author was held from goes out around the ack: the versions
        before it first, its own op never (the ack stands for it), later ones after.
        """
        self.forwarded.remove(pending)
        author = pending.author
        if author is not None and author.held:
            version = pending.version
            before = [message for v, message in author.held if v < version]
            author.held = [(v, message) for v, message in author.held if v > version]
            for message in before:
                author.peer.send(message)
        self._ack_when_synced(pending)
        if author is not None and author.held is not None:
            self._release(author)

    def refuse(self, pending: Pending, error: TandemError) -> None:
        """Tell ``pending``'s author it was not applied."""
        submission = pending.submission
        if pending.author is not None:
            pending.author.peer.send(
                encode(error_message(error, doc=self.doc, seq=submission.seq, ref=submission.ref))
            )
        if submission.done is not None:
            submission.done(-1)

    def broadcast(self, message: str, skip_client: str | None = None) -> None:
        """``message`` (presence) to every member but ``skip_client``'s, after their acks."""
        version = self.committed_version
        for peer, member in self.members.items():
            if peer.client != skip_client:
                member.send(version, message)

    def reply_at_head(self, member: Member, message: str) -> None:
        """Send ``message``, which takes ``member`` to the committed head, now.

        What was held for it up to the head is in that message: drop it.
        """
        if member.held is not None:
            member.held = [held for held in member.held if held[0] > self.committed_version]
        member.peer.send(message)

    # -- queries ----------------------------------------------------------------

    def in_flight(self, matching: Callable[[Pending], bool] | None = None) -> bool:
        """Is a decided op (that ``matching`` accepts) still waiting for its commit or sync?"""
        waiting: Iterator[Pending] = chain(self.outbox, self.unsynced)
        if matching is None:
            return any(p.record is not None for p in waiting)
        return any(p.record is not None and matching(p) for p in waiting) or any(
            matching(p) for p in self.forwarded
        )

    @property
    def busy(self) -> bool:
        return bool(self.outbox or self.unsynced or self.forwarded)

    # -- the rules ----------------------------------------------------------------

    def is_synced(self, version: int) -> bool:
        """Is ``version`` durable? Once nothing committed here awaits a sync, a version
        above ``synced_version`` is one another node committed (and synced there)."""
        return version <= self.synced_version or self.committed_here <= self.synced_version

    def _ack_when_synced(self, pending: Pending) -> None:
        """Acknowledge ``pending`` (committed) now if it is synced, else once it is."""
        if self.sync_error is not None:
            self.refuse(pending, StorageError("the store can no longer sync; nothing is saved"))
            return
        answer = pending.submission.answer
        if answer is not None and pending.reply is None:
            # A merge's reply describes the document as committed now, where its
            # catch-up ends: build it now, send it once synced.
            pending.reply = answer(pending)
        if self.is_synced(pending.version):
            self._acknowledge(pending)
        else:
            self.unsynced.append(pending)
            if pending.author is not None and pending.author.held is None:
                pending.author.held = []

    def _advance(
        self,
        record: OpRecord,
        document: Document,
        pending: Pending | None,
        forwarded: Pending | None = None,
    ) -> None:
        """Make ``record`` the committed head and tell every other member.

        ``pending``: this node's decision that made it; its author is acknowledged
        (once synced) before the fan-out, so its next op does not wait for the op
        to reach every member. ``forwarded``: the submission of this node's member
        that the owner node committed as ``record`` (its author hears an ack, not
        the op).
        """
        version = self.committed_version = record.version
        self.listener.advanced(record, document, pending)
        if forwarded is not None:
            forwarded.version, forwarded.record, forwarded.document = version, record, document
            pending = forwarded
        elif pending is not None:
            self._ack_when_synced(pending)
        self._fan_out(version, record.client_id, record.seq, encode(op_message(record)), pending)

    def _fan_out(
        self,
        version: int,
        client_id: str,
        seq: int | None,
        message: str,
        pending: Pending | None,
    ) -> None:
        """Tell every member but ``pending``'s author about the op committed as ``version``."""
        author = pending.author if pending is not None else None
        author_peer = author.peer if author is not None else None
        for peer, member in self.members.items():
            if peer is author_peer:
                continue
            if seq is not None and member.key == client_id:
                # The author again, on a new connection (it reconnected while the op
                # was being stored): this is its ack, never "someone else's op".
                self._ack_when_synced(Pending(version, member, Submission(seq=seq)))
            elif member.held is None:  # Member.send, inlined: this runs once per delivery
                peer.send(message)
            else:
                member.held.append((version, message))

    def _acknowledge(self, pending: Pending) -> None:
        author = pending.author
        submission = pending.submission
        if author is not None:
            if pending.reply is not None:
                author.peer.send(pending.reply)
            else:
                author.peer.send(
                    encode(ack_message(self.doc, submission.seq, pending.version, submission.ref))
                )
            self.listener.acknowledged(pending)
            if author.held is not None:
                self._release(author)
        if submission.done is not None:
            submission.done(pending.version)

    def _release(self, member: Member) -> None:
        """Send ``member`` what was held for it, up to its next ack still waiting."""
        held = member.held
        if held is None:
            return
        waiting = [p.version for p in self.unsynced if p.author is member]
        # A forwarded op not answered yet (version 0) may come after any of them.
        waiting += [p.version for p in self.forwarded if p.author is member]
        upto = min(waiting) if waiting else None
        send = member.peer.send
        kept = []
        for version, message in held:
            if upto is None or version < upto:
                send(message)
            else:
                kept.append((version, message))
        member.held = kept if upto is not None else None


def _version_of(pending: Pending) -> int:
    return pending.version
