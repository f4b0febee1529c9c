"""One owner per document across nodes: who sequences what, and forwarding to the owner.

With PostgreSQL and Redis (several nodes), a node sequences a document only
while it holds the document's lease (``storage/leases.py``, kept by
``session/leases.py``'s ``LeaseKeeper``) and has caught up with the store at
that lease's epoch; every commit carries the epoch (``Store.commit(…,
fence=…)``). ``Owners`` is this node's side of it:

* **Claiming.** A node opening a document asks for its lease first, then loads
  it: if the lease was free it owns the document from the state it loaded.
* **Forwarding.** A node that does not own a document sends each submission
  of its clients to the owner's node channel on the bus
  (``session/forwards.py``), its author held by the delivery core
  (``Delivery.forwarding``) until the answer, so that the ack comes in its
  place among the versions it hears. A ``/collab`` op's connection does not
  wait for the answer (it is settled in the background); REST posts, merges
  and Yjs updates do. Committed ops still reach every node over the
  document channel (``session/replication.py``); an answer naming a version
  this node has not seen makes it read the store after a moment.
* **Failover.** An answer that does not come within ``lease_renew_interval``
  (or by the lease's expiry, if sooner) makes the forwarder ask the store
  again. A dead owner's lease expires; the first node to ask then takes it (a
  new epoch), reads what the old owner committed, and sequences the
  submission itself. The resend carries the same ``(user, client, seq)``: the
  new owner acknowledges a copy already committed and applies nothing.
* **Losing it.** A fenced commit (another node took the lease) or the local
  deadline (renewals failing, or the process paused) ends ownership at once:
  the next submission is forwarded, and what was waiting for a fenced commit
  is sequenced again, forwarded (``Replication.conflict(fenced=True)``).
* **Hand-off.** ``hand_off`` (SIGTERM, after in-flight commits settled)
  releases every lease at once; requests that arrive afterwards are answered
  ``not owner`` and their senders take the lease without a TTL wait.

The decisions on the lease's timing are the pure ``session/ownership.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Coroutine
from functools import partial
from typing import Any, Protocol

import orjson

from tandem.bus.base import Bus, Subscription
from tandem.errors import Rejected, StorageError, TandemError
from tandem.metrics import Metrics
from tandem.records import OpRecord
from tandem.session.delivery import Delivery, Member, Pending, Submission
from tandem.session.forwards import (
    Answer,
    Forwarded,
    OwnerRefused,
    decode,
    encode_answer,
    encode_submit,
    node_channel,
)
from tandem.session.leases import LeaseKeeper
from tandem.session.ownership import LeaseTiming
from tandem.settings import LEASE_MARGIN, Settings
from tandem.storage.base import Store
from tandem.storage.leases import Leases, LeaseState

__all__ = ["ForwardingSession", "Owners", "OwnersHost"]

log = logging.getLogger("tandem.owners")

#: Seconds before a node that heard "not owner" asks the store again (a hand-off
#: in progress releases the lease within moments).
_NOT_OWNER_PAUSE = 0.05
#: Seconds an answer may name a version the bus has not brought before this node
#: reads the store for it.
_CATCH_UP_AFTER = 0.3
#: Forwarded ``/collab`` ops of one member that may wait for their answers while
#: its connection goes on; the next one waits for its own answer (backpressure:
#: a client cannot pile up work at the owner without bound).
MAX_UNANSWERED = 8


class Replicating(Protocol):
    def caught_up(self, records: list[OpRecord]) -> None:
        """Apply these committed records (read from the store), in order."""

    def catch_up(self) -> None:
        """Read the store for committed ops this node has not seen."""


class ForwardingSession(Protocol):
    """What forwarding needs from a document session."""

    doc: str
    delivery: Delivery
    idle_since: float | None

    @property
    def committed_version(self) -> int: ...

    @property
    def replication(self) -> Replicating: ...

    async def stored(self) -> None: ...

    async def sequence(self, member: Member, submission: Submission) -> None: ...

    def forward_settled(self) -> None:
        """A forwarded submission was answered or withdrawn (wake waiters)."""


class OwnersHost(Protocol):
    """What ``Owners`` needs from the document manager."""

    store: Store

    async def open(self, doc: str) -> Any:
        """The (loaded) session of ``doc``, a ``ForwardingSession``."""

    def background(self, coroutine: Coroutine[Any, Any, Any]) -> None: ...

    def publish_to(self, name: str, payload: bytes) -> None:
        """Send ``payload`` on bus channel ``name`` soon, in order (never raises)."""


class _RemotePeer:
    """Another node's client, as the owner's session sees it: keeps the error it is told."""

    __slots__ = ("client", "error", "name", "user")

    def __init__(self, client: str, user: str, name: str) -> None:
        self.client = client
        self.user = user
        self.name = name
        self.error: OwnerRefused | None = None

    def send(self, message: str) -> None:
        # Its ack is the ``done`` callback's; only an error needs keeping.
        if '"error"' in message:
            decoded = orjson.loads(message)
            if isinstance(decoded, dict) and decoded.get("type") == "error":
                self.error = OwnerRefused(decoded["code"], decoded["message"])


class _Request:
    """One forwarded submission on its way to the owner, until answered."""

    __slots__ = (
        "future",
        "give_up",
        "id",
        "message",
        "owner",
        "resendable",
        "sent_to",
        "started",
        "until",
    )

    def __init__(self, id: int, message: bytes, resendable: bool, give_up: float) -> None:
        self.id = id
        self.message = message
        #: May go to the same owner again (a seq or a Yjs update: recognised as a copy).
        self.resendable = resendable
        self.give_up = give_up
        self.started = time.perf_counter()
        self.future: asyncio.Future[Answer] | None = None
        #: The owner it was last sent to (None: send it), and the owner as last asked.
        self.sent_to: str | None = None
        self.owner = ""
        self.until = 0.0


def _unanswered(delivery: Delivery, member: Member) -> int:
    """How many of ``member``'s forwarded submissions await their answers."""
    return sum(
        1 for pending in delivery.forwarded if pending.author is member and not pending.version
    )


def _answered_later(submission: Submission) -> bool:
    """Is ``submission`` a ``/collab`` op, whose author hears its answer from the delivery core?"""
    return (
        submission.done is None
        and submission.answer is None
        and submission.yjs_update is None
        and submission.op is not None
    )


class Owners:
    """This node's document leases, and forwarding to other owners (module docstring)."""

    def __init__(
        self,
        host: OwnersHost,
        leases: Leases,
        bus: Bus,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self._host = host
        self._bus = bus
        self._metrics = metrics
        self.node = settings.node_id
        timing = LeaseTiming.keeping_back(
            settings.lease_ttl, settings.lease_renew_interval, LEASE_MARGIN
        )
        self.keeper = LeaseKeeper(leases, self.node, timing, metrics, self._lost)
        self._leases = leases
        #: How long to wait for an answer before asking the store who owns the document.
        self._check_every = settings.lease_renew_interval
        #: A forwarded submission with no answer after this long fails (ERR_STORAGE):
        #: its client resends it.
        self._give_up = 2 * settings.lease_ttl + settings.lease_renew_interval
        #: Documents this node owns and has caught up with, at the epoch it holds.
        self._ready: dict[str, int] = {}
        #: The last epoch this node held per document: what its commits are fenced with.
        self._epochs: dict[str, int] = {}
        #: Other nodes' leases as last seen: doc -> (owner, monotonic time it expires by).
        self._owners: dict[str, tuple[str, float]] = {}
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._taking: dict[str, asyncio.Future[None]] = {}
        self._ids = itertools.count(1)
        self._subscription: Subscription | None = None
        #: Set by ``hand_off``: sequence nothing more, take no lease.
        self.handing_off = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.keeper.start()
        self._subscription = await self._bus.subscribe(node_channel(self.node), self._heard)

    async def hand_off(self) -> None:
        """Stop sequencing and give every lease back now (the node is shutting down)."""
        self.handing_off = True
        self._ready.clear()
        await self.keeper.close()

    async def close(self) -> None:
        await self.hand_off()
        # No answer will be heard any more: what waits for one stops (its op is not
        # acknowledged; the client resends it where it reconnects).
        for future in self._waiting.values():
            future.cancel()
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    # -- reading ---------------------------------------------------------------------

    def owns(self, doc: str) -> bool:
        """May this node sequence ``doc`` now (lease held, before its deadline, caught up)?"""
        epoch = self._ready.get(doc)
        return epoch is not None and self.keeper.fence(doc) == epoch

    def epoch(self, doc: str) -> int | None:
        """The epoch to fence ``doc``'s commits with: the last one this node held."""
        return self._epochs.get(doc)

    # -- claiming --------------------------------------------------------------------

    async def claim(self, doc: str) -> LeaseState | None:
        """Before loading ``doc``: take its lease if it is free (None while handing off)."""
        if self.handing_off:
            return None
        state = await self.keeper.acquire(doc)
        if state.owner != self.node:
            self._seen(state)
        return state

    def loaded(self, doc: str, claim: LeaseState | None) -> None:
        """``doc`` was loaded after ``claim``: if the lease is this node's, it owns it now."""
        if claim is not None and claim.owner == self.node and self.keeper.fence(doc) == claim.epoch:
            self._caught_up(doc, claim.epoch)

    async def release(self, doc: str) -> None:
        """``doc`` is unloaded: give its lease back."""
        self._ready.pop(doc, None)
        await self.keeper.release(doc)

    def fenced(self, doc: str) -> None:
        """A commit of ``doc`` was refused for a stale epoch: another node owns it."""
        self._ready.pop(doc, None)
        self._owners.pop(doc, None)
        epoch = self._epochs.get(doc)
        if epoch is not None:
            self.keeper.fenced(doc, epoch)

    def _lost(self, doc: str) -> None:
        self._ready.pop(doc, None)
        self._owners.pop(doc, None)

    def _caught_up(self, doc: str, epoch: int) -> None:
        self._ready[doc] = self._epochs[doc] = epoch
        self._owners.pop(doc, None)
        log.info("%s owns %s now (epoch %d)", self.node, doc, epoch)

    def _seen(self, state: LeaseState) -> tuple[str, float]:
        seen = (state.owner, time.monotonic() + max(0.0, state.remaining))
        self._owners[state.doc] = seen
        return seen

    async def _owner_of(self, session: ForwardingSession) -> tuple[str, float]:
        """The node owning ``session``'s document now, and until when (taking it if free)."""
        doc = session.doc
        if self.owns(doc):
            return self.node, float("inf")
        seen = self._owners.get(doc)
        if seen is not None and time.monotonic() < seen[1]:
            return seen
        if self.handing_off:
            state = await self._leases.holder(doc)
            if state is None:
                raise StorageError(f"nobody owns {doc!r} and this node is shutting down")
            return self._seen(state)
        state = await self.keeper.acquire(doc)
        if state.owner != self.node:
            return self._seen(state)
        await self._take_over(session, state.epoch)
        if not self.owns(doc):
            # The lease was over on arrival, or lost while reading up: sequencing here
            # would commit under no epoch of this node's. The client resends.
            raise StorageError(f"could not take {doc!r} over; resubmit the op")
        return self.node, float("inf")

    async def _take_over(self, session: ForwardingSession, epoch: int) -> None:
        """This node got the lease of a loaded document: read what others committed first."""
        doc = session.doc
        taking = self._taking.get(doc)
        if taking is None:
            taking = asyncio.ensure_future(self._read_up(session, epoch))
            self._taking[doc] = taking
            taking.add_done_callback(lambda _: self._taking.pop(doc, None))
        await asyncio.shield(taking)

    async def _read_up(self, session: ForwardingSession, epoch: int) -> None:
        await session.stored()
        # The acquisition waited for every commit fenced by it: the store's head is final.
        records = await self._host.store.get_ops(session.doc, session.committed_version)
        session.replication.caught_up(records)
        if self.keeper.fence(session.doc) == epoch:
            self._caught_up(session.doc, epoch)

    # -- forwarding (this node does not own the document) -------------------------------

    async def forward(
        self, session: ForwardingSession, member: Member, submission: Submission
    ) -> bool:
        """Have the owner sequence ``submission``; False if this node owns the document now.

        A ``/collab`` op (no ``done`` callback, no merge reply, no Yjs update)
        returns once it is sent, up to ``MAX_UNANSWERED`` of a member's at a
        time: its author hears the ack (or the refusal) through the delivery
        core when the owner's answer comes, so the connection goes on to its
        next message meanwhile, as on the owner, instead of waiting a bus
        round trip and the owner's commit per op.
        Anything else returns once the owner answered (a refusal is raised, as
        if decided here); its ack follows when the version it names is
        committed here.
        """
        delivery = session.delivery
        pending = Pending(0, member, submission)
        delivery.forwarding(pending)
        request = self._new_request(session, member, submission)
        try:
            if _answered_later(submission) and _unanswered(delivery, member) <= MAX_UNANSWERED:
                if not await self._send(session, request):
                    return self._taken_over(session, pending, request)
                self._host.background(self._answer_later(session, pending, request))
                return True
            answer = await self._request(session, request)
        except BaseException:
            self._waiting.pop(request.id, None)
            delivery.withdrawn(pending)
            session.forward_settled()
            raise
        if answer is None:
            return self._taken_over(session, pending, request)
        self._waiting.pop(request.id, None)
        self._answered(session, pending, request, answer)
        if answer.error is not None:  # refused, or a rejected Yjs update committed and reverted
            raise answer.error.local()
        return True

    async def _answer_later(
        self, session: ForwardingSession, pending: Pending, request: _Request
    ) -> None:
        """Wait for the answer to a ``/collab`` op sent by ``forward``, and settle it."""
        delivery = session.delivery
        assert pending.author is not None
        try:
            answer = await self._request(session, request)
        except TandemError as error:
            answer = Answer(request.id, error=OwnerRefused(error.code, error.message))
        except BaseException:
            self._waiting.pop(request.id, None)
            delivery.withdrawn(pending)
            session.forward_settled()
            raise
        if answer is None:  # this node took the document over: sequence it here
            self._taken_over(session, pending, request)
            try:
                await session.sequence(pending.author, pending.submission)
            except TandemError as error:
                delivery.refuse(pending, error)
            return
        self._waiting.pop(request.id, None)
        self._answered(session, pending, request, answer)
        if answer.error is not None:
            delivery.refuse(pending, answer.error.local())

    def _taken_over(self, session: ForwardingSession, pending: Pending, request: _Request) -> bool:
        self._waiting.pop(request.id, None)
        session.delivery.withdrawn(pending)
        session.forward_settled()
        return False

    def _answered(
        self, session: ForwardingSession, pending: Pending, request: _Request, answer: Answer
    ) -> None:
        """The owner answered ``pending``: ack it once its version is here, or withdraw it."""
        delivery = session.delivery
        self._metrics.forward_latency(time.perf_counter() - request.started)
        if answer.version is None:
            delivery.withdrawn(pending)
            session.forward_settled()
            return
        delivery.answered(pending, answer.version)
        if pending in delivery.forwarded:
            # Committed there, not seen here yet: the bus brings it, or the store will.
            self._host.background(self._catch_up_to(session, answer.version))
        session.forward_settled()

    def _new_request(
        self, session: ForwardingSession, member: Member, submission: Submission
    ) -> _Request:
        peer = member.peer
        request_id = next(self._ids)
        message = encode_submit(
            Forwarded(
                request_id,
                self.node,
                session.doc,
                peer.client,
                peer.user,
                peer.name,
                submission.op,
                submission.base_version,
                submission.seq,
                submission.yjs_update,
            )
        )
        resendable = submission.seq is not None or submission.yjs_update is not None
        request = _Request(request_id, message, resendable, time.monotonic() + self._give_up)
        request.future = self._waiting[request.id] = asyncio.get_running_loop().create_future()
        return request

    async def _send(self, session: ForwardingSession, request: _Request) -> bool:
        """Send ``request`` to the document's owner unless it had it; False: we own it now."""
        doc = session.doc
        if time.monotonic() > request.give_up:
            raise StorageError(f"the owner of {doc!r} did not answer; resubmit the op")
        owner, until = await self._owner_of(session)
        if owner == self.node:
            return False
        if owner != request.sent_to:
            # At most once, like everything on the bus: no answer means send again.
            self._host.publish_to(node_channel(owner), request.message)
            request.sent_to = owner
            log.debug("%s: forwarded a submit of %s to %s", self.node, doc, owner)
        request.owner, request.until = owner, until
        return True

    async def _request(self, session: ForwardingSession, request: _Request) -> Answer | None:
        """Wait for the answer to ``request``, sending it again as the owner changes;
        None: this node owns the document now."""
        doc = session.doc
        while True:
            if request.sent_to is None and not await self._send(session, request):
                return None
            future = request.future
            assert future is not None
            wait = max(0.01, min(self._check_every, request.until - time.monotonic() + 0.02))
            # asyncio.wait, not wait_for: this may run outside a task (server/eager.py).
            await asyncio.wait((future,), timeout=wait)
            if not future.done():
                # No answer yet: ask the store whether the owner still holds the lease,
                # and send again to whoever owns it then. To the same node only what it
                # can recognise as a copy (a seq, or a Yjs update, which merges once):
                # the bus may have lost it. An op without a seq goes once per owner.
                self._owners.pop(doc, None)
                if not await self._send_again(session, request):
                    return None
                continue
            answer = future.result()
            if not answer.not_owner:
                # It answered, so it held the lease a moment ago: ask the store again
                # only if a later answer is late, not before every forward.
                self._owners[doc] = (request.owner, time.monotonic() + self._check_every)
                return answer
            self._owners.pop(doc, None)
            request.sent_to = None
            request.future = self._waiting[request.id] = asyncio.get_running_loop().create_future()
            await asyncio.sleep(_NOT_OWNER_PAUSE)

    async def _send_again(self, session: ForwardingSession, request: _Request) -> bool:
        if request.resendable:
            request.sent_to = None
        return await self._send(session, request)

    async def _catch_up_to(self, session: ForwardingSession, version: int) -> None:
        for _ in range(20):
            await asyncio.sleep(_CATCH_UP_AFTER)
            if session.committed_version >= version:
                return
            session.replication.catch_up()

    # -- serving (this node owns the document) ------------------------------------------

    def _heard(self, data: bytes) -> None:
        message = decode(data)
        if isinstance(message, Answer):
            future = self._waiting.get(message.id)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, Forwarded):
            self._host.background(self._serve(message))

    async def _serve(self, request: Forwarded) -> None:
        reply = partial(self._answer, request)
        if self.handing_off:
            reply(Answer(request.id, not_owner=True))
            return
        try:
            session = await self._host.open(request.doc)
        except TandemError as error:
            reply(Answer(request.id, error=OwnerRefused(error.code, error.message)))
            return
        if not self.owns(request.doc):
            reply(Answer(request.id, not_owner=True))
            return
        if not session.delivery.members:
            session.idle_since = time.monotonic()  # forwarded traffic keeps it loaded
        peer = _RemotePeer(request.client, request.user, request.name)
        #: A rejected Yjs update is committed, its revert after it (``authorize.py``):
        #: the rejection is raised before the commit, and answered with its version.
        rejected: list[OwnerRefused] = []

        def done(version: int) -> None:
            if version >= 0:
                reply(Answer(request.id, version, rejected[0] if rejected else None))
            else:
                error = peer.error or OwnerRefused("ERR_STORAGE", "the op was not stored")
                reply(Answer(request.id, error=error))

        submission = Submission(
            request.op,
            request.base_version,
            request.seq,
            None,
            time.perf_counter(),
            done,
            None,
            request.yjs_update,
        )
        log.debug("%s: sequencing a submit of %s from %s", self.node, request.doc, request.origin)
        try:
            await session.sequence(Member(peer, "write"), submission)
        except TandemError as error:
            refused = OwnerRefused(error.code, error.message, error.details())
            if isinstance(error, Rejected) and request.yjs_update is not None:
                rejected.append(refused)  # ``done`` answers once it is stored
                return
            reply(Answer(request.id, error=refused))
        except Exception:  # noqa: BLE001 - a bug must not leave the sender waiting
            log.exception("internal error sequencing a forwarded submit")
            reply(Answer(request.id, error=OwnerRefused("ERR_INTERNAL", "internal error")))

    def _answer(self, request: Forwarded, answer: Answer) -> None:
        self._host.background(
            self._bus.publish(node_channel(request.origin), encode_answer(answer))
        )
