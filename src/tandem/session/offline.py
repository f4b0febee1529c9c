"""Offline merge: a client's long branch reconciled in one step, then sequenced like any op.

``OfflineMerge.merge`` takes a client's branch (``ops``, the first based on
``base_version``, each next one on the previous). Instead of transforming
every branch op past every server op since the base (n·m transforms), both
branches are merged from the base in one step (``tandem.merge.branch``, in a
worker thread, so the loop keeps serving everyone else) and the resulting
``commit`` op goes through the session's one ``sequence()`` at the committed
head ``h`` it was computed against, like any submit based on ``h``. Once it
is durable as version ``V`` the author receives ``merged`` with the op taking
its final state (base + branch) to the document at ``V``. A merge whose
``(client, seq)`` was already committed is answered again and not applied
twice.

The base document is rebuilt from the newest checkpoint at or before the
base (one every ``Settings.merge_checkpoint_every`` committed versions, the last
``Settings.merge_checkpoints_kept``), else from the store.

Imports no other session module: it sees the session through ``MergingSession``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Protocol

from tandem.errors import (
    HistoryUnavailable,
    InvalidOperation,
    OperationTooLong,
    ReadOnly,
    VersionError,
)
from tandem.merge.branch import BranchMerge, compose_branch, merge_branches
from tandem.ot.delta import Delta
from tandem.ot.diff import diff
from tandem.ot.document import Document
from tandem.ot.transform import transform
from tandem.protocol import encode, merged_message
from tandem.records import OpRecord
from tandem.sequencer import HistoryGap, Sequencer
from tandem.session.delivery import Delivery, Member, Pending, Submission
from tandem.settings import Settings
from tandem.storage.base import Store

__all__ = ["MergingSession", "OfflineMerge"]


class MergingSession(Protocol):
    """What an offline merge needs from its session."""

    doc: str
    settings: Settings
    store: Store
    sequencer: Sequencer
    delivery: Delivery
    committed_document: Document

    @property
    def committed_version(self) -> int: ...

    async def records_between(self, after: int, upto: int) -> list[OpRecord]: ...

    async def rebased(self) -> None: ...

    async def settled(self, waiting_for: Callable[[Pending], bool] | None) -> None: ...

    async def sequence(self, member: Member, submission: Submission) -> None: ...


class OfflineMerge:
    """The offline merges of one document, and the checkpoints they start from."""

    def __init__(self, session: MergingSession) -> None:
        self.session = session
        settings = session.settings
        self._every = settings.merge_checkpoint_every
        #: ``(version, document)`` every ``merge_checkpoint_every`` committed versions, oldest
        #: first: where a merge rebuilds its base document from.
        self._checkpoints: deque[tuple[int, Document]] = deque(
            [(session.committed_version, session.committed_document)],
            maxlen=settings.merge_checkpoints_kept,
        )
        #: Merges being computed, by ``(client key, seq)``: a duplicate waits.
        self._merging: dict[tuple[str, int], asyncio.Event] = {}

    def checkpoint(self, version: int, document: Document) -> None:
        """``version`` is committed with ``document``: keep it if it is a checkpoint."""
        if version % self._every == 0:
            self._checkpoints.append((version, document))

    async def merge(
        self,
        member: Member,
        base_version: int,
        seq: int | None,
        ops: list[Delta],
        ref: str | int | None = None,
    ) -> None:
        """Merge an offline branch and commit it as one op; the author gets ``merged``."""
        if member.permission != "write":
            raise ReadOnly(f"read-only access to {self.session.doc!r}: edits are refused")
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
        session = self.session
        received = time.perf_counter()
        await session.rebased()
        if base_version > session.committed_version:
            raise VersionError(
                f"base version {base_version} is above the head version {session.committed_version}"
            )
        if seq is not None:
            known = session.sequencer.find_seq(member.key, seq)
            if known is None:
                known = await session.store.find_seq(session.doc, member.key, seq)
            while known is not None and known > session.committed_version:
                # An earlier copy is committed in memory, not yet stored: answer
                # once it is (a reply against the older committed head would undo
                # the branch), or merge anew if it was rolled back.
                await session.settled(partial(_has_version, version=known))
                known = session.sequencer.find_seq(member.key, seq)
            if known is not None:
                await self._merge_again(member, base_version, seq, ops, ref)
                return
        head, server_head = session.committed_version, session.committed_document
        start, replay = await self._base_of(base_version)
        server_ops = [record.op for record in await session.records_between(base_version, head)]
        result = await asyncio.to_thread(_merge_branch, start, replay, ops, server_ops, server_head)

        def answer(pending: Pending) -> str:
            version, catchup = self._catchup(member, seq, result, head, pending)
            return encode(merged_message(session.doc, seq, version, catchup, ref))

        submission = Submission(result.commit, head, seq, ref, received, None, answer)
        await session.sequence(member, submission)

    def _catchup(
        self, member: Member, seq: int | None, result: BranchMerge, head: int, pending: Pending
    ) -> tuple[int, Delta]:
        """The version the author ends at, and the op taking its final state there.

        Called when ``pending`` is committed (so the committed head is its version):
        the merge's catch-up, then each op committed between ``head`` and the
        merge's own version, transformed past the commit as the client's state
        machine would (``S' = transform(S, P, "left")``, ``P' = transform(P, S,
        "right")``: the same diamond the sequencer walked with the commit).
        """
        session = self.session
        duplicate = (
            pending.record is None
            and seq is not None
            and session.sequencer.find_seq(member.key, seq) is not None
        )
        try:
            records = [] if duplicate else session.sequencer.entries_since(head)
        except HistoryGap:
            duplicate = True
        if duplicate:
            # Committed by an earlier copy of this merge (another node): rare, state-based.
            return session.committed_version, diff(
                result.client_document, session.committed_document
            )
        last = pending.version - 1 if pending.record is not None else pending.version
        commit = result.commit
        steps = [result.catchup]
        for record in records:
            if record.version > last:
                break
            steps.append(transform(record.op, commit, "left"))
            commit = transform(commit, record.op, "right")
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
        session = self.session
        start, replay = await self._base_of(base_version)
        version, target = session.committed_version, session.committed_document
        catchup = await asyncio.to_thread(_diff_branch, start, replay, ops, target)
        # No await from here on: add what was committed meanwhile, then reply.
        head = session.committed_version
        later = [
            record.op
            for record in session.sequencer.entries_since(version)
            if record.version <= head
        ]
        message = merged_message(session.doc, seq, head, compose_branch([catchup, *later]), ref)
        session.delivery.reply_at_head(member, encode(message))

    async def document_at(self, version: int) -> Document:
        """The committed document at ``version`` (from a checkpoint, else from storage)."""
        document, ops = await self._base_of(version)
        for op in ops:
            document = document.apply(op)
        return document

    async def _base_of(self, version: int) -> tuple[Document, list[Delta]]:
        """A document at or before committed ``version`` and the ops taking it to ``version``.

        From the newest checkpoint at or before ``version``; older bases come
        from the store: its newest snapshot if that is not newer than
        ``version``, else every op from version 0 (slow for a long history, but
        only for branches older than the checkpoints).
        """
        session = self.session
        for checkpoint, document in reversed(self._checkpoints):
            if checkpoint <= version:
                records = await session.records_between(checkpoint, version)
                return document, [record.op for record in records]
        loaded = await session.store.load(session.doc)
        snapshot = loaded.snapshot
        if snapshot is not None and snapshot.version <= version:
            start, document = snapshot.version, Document(snapshot.content)
        else:
            start, document = 0, Document()
        stored = await session.store.get_ops(session.doc, start, version)
        if len(stored) != version - start:
            raise HistoryUnavailable(
                f"history of {session.doc!r} from version {start} is not available; re-join"
            )
        return document, [record.op for record in stored]


def _has_version(pending: Pending, version: int) -> bool:
    return pending.version == version


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
    """Worker-thread half of ``merge``: rebuild the base, merge both branches."""
    base = _replay(start, replay, ops)
    try:
        return merge_branches(base, server_ops, ops, server_head)
    except ValueError as exc:
        raise InvalidOperation(f"the merge branch does not apply: {exc}") from None


def _diff_branch(start: Document, replay: list[Delta], ops: list[Delta], target: Document) -> Delta:
    """Worker-thread half of a repeated merge: the client's final state → ``target``."""
    base = _replay(start, replay, ops)
    return diff(base.apply(compose_branch(ops)), target)
