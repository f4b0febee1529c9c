"""The ``authorize`` decision point of one document: hold a commit back, ask, then go on.

With an ``authorize`` hook configured, the session's one ``sequence()``
(``session/document.py``) takes its turn on this document's ``turn`` lock and,
once the sequencer has decided a commit, hands it to ``Authorization.commit``
instead of to the store. The decision is then **held**: it is the sequencer's
head and sits in the delivery core's outbox (so ops from other nodes wait
behind it, joins and SyncStep2 answers count it as in flight, snapshots skip
it), but the store has not seen it and nobody has heard of it. The hook gets
the op as it stands at the head (``tandem.authorization.AuthorizeRequest``),
and then:

* **allowed** (or failed, under ``authorize_failure = "allow"``): the commit
  goes on to the store exactly as without a hook;
* **rejected** (or failed, under the default ``"reject"``), an OT, REST or
  merge op: it is taken back — the sequencer's head and the outbox are as if it
  had never come — and ``sequence`` raises ``Rejected``: its author gets one
  error naming the reason; the document, the replica and the store are unchanged;
* **rejected**, a Yjs update: a Yjs client cannot un-know the items it made,
  and the server must hold them (deleted) to accept that client's later
  updates, which build on them. So the update commits, and right behind it, in
  the same hand-off to the store, the server's revert (``compensation``, user
  ``tandem:authorize``): two versions, each with its own exact Yjs update, which
  every Yjs client (the author included) merges in order, ending at the
  server's content; OT clients get both in one frame. (One version holding both
  updates would be neater, but Yrs does not always integrate a merged update
  with formatting as it did the two in turn, and every replay must be exact.)
  ``sequence`` raises ``Rejected`` for the endpoint to pass the reason on.

Holding the turn lock while the hook runs keeps the head still, so the op the
hook saw is the op that commits. It is this document's lock only: other
documents sequence on (the call runs within ``authorize_timeout``). If the
decision was rolled back while the hook ran (a failed commit before it, or a
rebase after another node took a version), the roll-back owns it: it was
refused with ``ERR_STORAGE`` or is sequenced again, and asked again.

Imports no other session module but the pure delivery core and the Yjs side;
it sees the session through ``AuthorizingSession``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from tandem.authorization import AuthorizeRequest, compensation
from tandem.errors import Rejected
from tandem.ot.document import Document
from tandem.records import OpRecord
from tandem.sequencer import Sequencer
from tandem.session.delivery import Delivery, Pending
from tandem.session.yjs import ReplicaHost

__all__ = ["REVERT_USER", "Authorization", "AuthorizeCheck", "AuthorizingSession"]

#: Who the revert of a rejected Yjs update is committed as (history shows it so).
REVERT_USER: Final = "tandem:authorize"
REVERT_CLIENT: Final = "tandem-authorize"

#: The server's authorize call (``HookRunner.authorize``): the error to refuse with, or None.
AuthorizeCheck = Callable[[AuthorizeRequest], Awaitable[Rejected | None]]


class AuthorizingSession(Protocol):
    """What the decision point needs from its session."""

    doc: str
    sequencer: Sequencer
    delivery: Delivery
    replicas: ReplicaHost

    def enqueue(self, pending: Pending) -> None:
        """Hand a decided commit on to the store."""

    def wake_settled(self) -> None:
        """Something in flight was settled: wake whoever waits for that."""


class Authorization:
    """One document's authorize decision point (see the module docstring)."""

    def __init__(self, session: AuthorizingSession, check: AuthorizeCheck | None) -> None:
        self.session = session
        self.check = check
        #: Taken by ``sequence()`` for a whole decision while a hook is configured.
        self.turn = asyncio.Lock()

    @property
    def active(self) -> bool:
        return self.check is not None

    async def commit(self, pending: Pending, before: Document, source: str) -> None:
        """Hold ``pending`` (the head, decided from ``before``) until the hook answers.

        Raises ``Rejected`` when it was rejected (after taking it back, or for a
        Yjs update after committing its revert).
        """
        session = self.session
        record, member = pending.record, pending.author
        assert record is not None and member is not None and self.check is not None
        sequencer = session.sequencer
        peer = member.peer
        request = AuthorizeRequest(
            doc=session.doc,
            op=record.op,
            version=record.version,
            document=before,
            user=peer.user,
            name=peer.name,
            client=peer.client,
            principal=getattr(peer, "principal", None),
            source=source,
        )
        session.delivery.decided(pending)  # held: in flight, but not yet for the store
        try:
            rejected = await self.check(request)
        except BaseException:
            # Cancelled (the connection went away): as if it had never come.
            if self._held(pending, sequencer):
                self._take_back(pending, before, source)
            raise
        if not self._held(pending, sequencer):
            return  # rolled back meanwhile: the roll-back refused it or sequences it again
        if rejected is None:
            session.enqueue(pending)
            return
        if source == "yjs":
            session.enqueue(pending)
            revert = self._revert(pending, before)
            session.delivery.decided(revert)
            session.enqueue(revert)
        else:
            # Not ``done(-1)``: that says "not stored, resend"; the raise says why.
            self._take_back(pending, before, source)
        raise rejected

    def _held(self, pending: Pending, sequencer: Sequencer) -> bool:
        """Is ``pending`` still the held head (not rolled back while the hook ran)?"""
        session = self.session
        outbox = session.delivery.outbox
        return session.sequencer is sequencer and bool(outbox) and outbox[-1] is pending

    def _take_back(self, pending: Pending, before: Document, source: str) -> None:
        session = self.session
        assert pending.record is not None
        session.sequencer.withdraw(pending.record.version, before)
        session.delivery.withdraw(pending)
        if source == "yjs":
            # The replica merged the update: rebuild it from the store (the client's
            # next update then lacks its base, and its resync brings it again).
            session.replicas.rolled_back()
        session.wake_settled()

    def _revert(self, pending: Pending, before: Document) -> Pending:
        """The server's op undoing the merged head ``pending``, as the next version."""
        session = self.session
        record = pending.record
        assert record is not None
        undo = compensation(record.op, before)
        revert = OpRecord(
            record.doc, record.version + 1, undo, REVERT_CLIENT, None, REVERT_USER, record.time
        )
        document = session.sequencer.apply_committed(revert)
        return Pending(revert.version, None, record=revert, document=document)
