"""Replication between nodes: publishing committed ops, applying others', filling gaps.

With leases (``session/owners.py``) only a document's owner sequences it;
without them (an embedder's store shared by processes) every node may
(optimistic concurrency, see docs/architecture.md). The store refuses a
version that another node took (``ConflictError``); the session then loads
what the others committed and sequences its pending submissions again, from
their original base versions — the same transform path their clients walk
(``rebase``). Committed ops reach the other nodes over the bus
(``tandem.session.payloads`` is the payload format); an op that arrives out of
order waits, and a gap is filled from the store.

A node that does not own the document (``ReplicatingSession.follower``)
relays other owners' ops to its clients without applying them: each is
framed from the payload's JSON and broadcast (``Delivery.relay``), and kept,
undecoded, in ``relayed``. The document, its history, the CRDT replica's
backlog, the checkpoints and the presence cursors are brought up to date —
the same calls, in the same order, as applying each on arrival makes
(``apply_relayed``) — when something reads them: the session's ``sequencer``
and ``committed_document`` do it first, so a join, a REST read, a merge, a
takeover (which applies the store's ops after them), a Yjs peer or presence
sees the whole head. At most ``RELAY_LIMIT`` wait; beyond, the oldest
``RELAY_CHUNK`` are applied.

Imports no other session module: it sees the session through ``ReplicatingSession``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any, Final, Protocol

from tandem.errors import ConflictError, TandemError
from tandem.ot.document import Document
from tandem.records import OpRecord
from tandem.sequencer import Sequencer
from tandem.session.delivery import Delivery, Member, Pending, Submission
from tandem.session.payloads import PresencePayload, RemoteOp, decode_remote, encode_op
from tandem.storage.base import Store

__all__ = ["RELAY_CHUNK", "RELAY_LIMIT", "Replication", "ReplicatingSession"]

log = logging.getLogger("tandem.session")

#: Other owners' ops a follower keeps relayed but not applied, per document, at most
#: (each an ``op`` payload of a few hundred bytes; the history window keeps 10,000 ops).
RELAY_LIMIT: Final = 1024
#: How many of them are applied at once when the limit is reached.
RELAY_CHUNK: Final = 64


class ReplicatingSession(Protocol):
    """What replication needs from its session."""

    doc: str
    store: Store
    delivery: Delivery

    @property
    def sequencer(self) -> Sequencer:
        """The sequencer, with every relayed op applied."""

    @property
    def own_sequencer(self) -> Sequencer:
        """The sequencer as it is (``apply_relayed`` advances it)."""

    @property
    def follower(self) -> bool:
        """Another node sequences this document and nothing here needs each op as it
        arrives (no Yjs peer, no presence cursor to move): ops may wait, unapplied."""

    @property
    def committed_version(self) -> int: ...

    @property
    def node(self) -> str: ...

    @property
    def replicated(self) -> bool:
        """Are there other nodes to tell?"""

    def background(self, coroutine: Coroutine[Any, Any, Any]) -> None: ...

    def publish(self, payload: bytes) -> None: ...

    def roll_back(self) -> list[Pending]: ...

    def commit_failed(self, exc: BaseException) -> None: ...

    async def sequence(
        self, member: Member, submission: Submission, *, after_conflict: bool = False
    ) -> None: ...

    def remote_presence(self, message: dict[str, Any]) -> None: ...

    def advanced(self, record: OpRecord, document: Document, pending: Pending | None) -> None:
        """Mirror the committed head ``record`` (what ``Delivery`` calls when it advances)."""


class Replication:
    """One document's traffic with the other nodes."""

    def __init__(self, session: ReplicatingSession) -> None:
        self.session = session
        #: Other nodes' ops that arrived ahead of the next version, by version.
        self._remote: dict[int, OpRecord | RemoteOp] = {}
        #: Other nodes' ops broadcast (``Delivery.relay``) but not applied yet, in order.
        self.relayed: deque[RemoteOp] = deque()
        self._applying = False
        self._filling = False
        self._rebasing: asyncio.Event | None = None

    def publish(self, record: OpRecord) -> None:
        """Tell the other nodes about an op this node committed."""
        session = self.session
        if session.replicated:
            session.publish(encode_op(session.node, record))

    @property
    def rebasing(self) -> bool:
        """A rebase is under way: ``rebased`` would wait."""
        return self._rebasing is not None

    async def rebased(self) -> None:
        """Return once no rebase is under way."""
        while self._rebasing is not None:
            await self._rebasing.wait()

    # -- conflicts ----------------------------------------------------------------

    def conflict(self, *, fenced: bool = False) -> None:
        """Another node committed first: re-sequence our pending ops on top of its ops.

        ``fenced``: another node owns the document now (``session/owners.py``);
        the pending ops are sequenced again — forwarded to it — even if it has
        committed nothing yet.
        """
        if self._rebasing is None:
            self._rebasing = asyncio.Event()
            self.session.background(self._rebase(fenced))

    def caught_up(self, records: list[OpRecord]) -> None:
        """Apply ``records``, committed ops read from the store, in order (a take-over)."""
        self._apply_in_order(records)

    async def _rebase(self, fenced: bool = False) -> None:
        session = self.session
        event = self._rebasing
        try:
            records = await session.store.get_ops(session.doc, session.committed_version)
            if not records and not fenced:
                # Nobody else took our version: re-sequencing would conflict forever.
                session.commit_failed(ConflictError("the store refused the op; resubmit it"))
                return
            pending = session.roll_back()
            self._apply_in_order(records)
            for item in pending:
                submission = item.submission
                if item.author is None or (submission.op is None and submission.yjs_update is None):
                    continue
                try:
                    await session.sequence(item.author, submission, after_conflict=True)
                except TandemError as error:
                    session.delivery.refuse(item, error)
        except Exception as exc:  # noqa: BLE001 - the store is down: fail what is pending
            log.error("rebase of %s failed: %s", session.doc, exc)
            session.commit_failed(exc)
        finally:
            self._rebasing = None
            if event is not None:
                event.set()

    # -- other nodes' ops -----------------------------------------------------------

    def on_bus(self, data: bytes) -> None:
        """A payload from another node about this document."""
        session = self.session
        payload = decode_remote(session.doc, session.node, data)
        if isinstance(payload, RemoteOp):
            if payload.version > session.committed_version:
                self._remote[payload.version] = payload
                self.drain()
        elif isinstance(payload, PresencePayload):
            session.remote_presence(payload.message)

    def drain(self) -> None:
        """Apply buffered remote ops in version order while nothing local is pending."""
        session = self.session
        if session.delivery.outbox or self._rebasing is not None:
            return
        remote = self._remote
        while (record := remote.pop(session.committed_version + 1, None)) is not None:
            if isinstance(record, RemoteOp):
                if session.delivery.relayable and session.follower:
                    self._relay(record)
                    continue
                record = record.record()
            self._apply(record)
        if remote:
            self.catch_up()

    def _relay(self, op: RemoteOp) -> None:
        """Broadcast ``op`` now; apply it when something reads the document."""
        relayed = self.relayed
        if len(relayed) >= RELAY_LIMIT:
            self.apply_relayed(RELAY_CHUNK)
        relayed.append(op)
        self.session.delivery.relay(op.version, op.client_id, op.seq, op.frame())

    def apply_relayed(self, count: int | None = None) -> None:
        """Apply the relayed ops (the oldest ``count`` of them) as ``remote`` would have.

        The same calls in the same order as on arrival: the sequencer, then the
        session's mirroring (``advanced``). Whatever those read meanwhile sees
        the state as of the op being applied (no nested catching up).
        """
        relayed = self.relayed
        if self._applying or not relayed:
            return
        session = self.session
        self._applying = True
        try:
            for _ in range(len(relayed) if count is None else min(count, len(relayed))):
                record = relayed[0].record()
                document = session.own_sequencer.apply_committed(record)
                relayed.popleft()
                session.advanced(record, document, None)
        finally:
            self._applying = False

    def catch_up(self) -> None:
        """Check the store for ops other nodes committed that we have not seen."""
        if not self._filling:
            self._filling = True
            self.session.background(self._fill_gap())

    def _apply(self, record: OpRecord) -> None:
        session = self.session
        document: Document = session.sequencer.apply_committed(record)  # relayed ones first
        session.delivery.remote(record, document)

    def _apply_in_order(self, records: list[OpRecord]) -> None:
        session = self.session
        for record in records:
            if record.version == session.committed_version + 1:
                self._apply(record)
        self._forget_applied()

    def _forget_applied(self) -> None:
        session = self.session
        self._remote = {v: r for v, r in self._remote.items() if v > session.committed_version}

    async def _fill_gap(self) -> None:
        """Load ops another node committed that the bus did not bring (or not yet)."""
        session = self.session
        try:
            records = await session.store.get_ops(session.doc, session.committed_version)
            if not (session.delivery.outbox or self._rebasing is not None):
                self._apply_in_order(records)
            else:
                self._forget_applied()
        finally:
            self._filling = False
        if self._remote:
            self.drain()
