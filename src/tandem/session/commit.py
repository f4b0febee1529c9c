"""Group commit: many ops of many documents, one durable transaction.

``GroupCommitter`` owns the single queue between the document sessions and
the store. Whatever accumulates while one transaction is in flight goes into
the next, so under load many ops share one fsync and idle there is no added
delay. It reports back through the small ``Committing`` interface:
``committed`` once a batch is written (every reader sees it), ``synced`` once
it is fsync'd (for most stores at the same moment; the SQLite store syncs
behind its commits, and one sync covers every commit before it),
``conflict`` when another node took a version first, ``fenced`` when another
node owns the document now (the commit carried a stale lease epoch:
``epoch_of`` gives each document's, ``session/owners.py``),
``commit_failed`` for any other storage failure, ``sync_failed`` when the disk refused a sync. It
never acknowledges anything itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Protocol

from tandem.errors import ConflictError, FencedError, StorageError
from tandem.metrics import Metrics
from tandem.settings import Settings
from tandem.storage.base import OpRecord, Store
from tandem.tasks import cancel_and_wait

__all__ = ["Committing", "GroupCommitter"]

log = logging.getLogger("tandem.commit")


class Committing(Protocol):
    """What the committer tells a document session about its records."""

    def committed(self, version: int, synced: bool) -> None:
        """Everything up to ``version`` is committed (and ``synced``, if so)."""

    def synced(self, version: int) -> None:
        """Everything up to ``version`` is synced (after ``committed(version, False)``)."""

    def sync_failed(self, exc: BaseException) -> None:
        """The store could not sync what was committed; it will not be synced."""

    def conflict(self) -> None:
        """Another node committed one of these versions first; nothing was written."""

    def commit_failed(self, exc: BaseException) -> None:
        """The store failed; nothing was written."""

    def fenced(self) -> None:
        """The lease epoch was stale: another node owns the document; nothing was written."""


class GroupCommitter:
    """Writes pending op records of all documents in as few transactions as possible.

    Whatever accumulates while one transaction is in flight goes into the next:
    under load many ops share one fsync, idle there is no added delay.
    """

    def __init__(self, store: Store, metrics: Metrics, settings: Settings) -> None:
        self._store = store
        self._metrics = metrics
        self._max_batch = settings.commit_max_batch
        self._max_delay = settings.commit_max_delay
        self._queue: deque[tuple[Committing, OpRecord]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        #: Committed batches whose sync is still running.
        self._syncing = 0
        #: The lease epoch to commit each document under (None: one process, no leases).
        self.epoch_of: Callable[[str], int | None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tandem-group-commit")

    async def close(self) -> None:
        await self.drain()
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def drain(self) -> None:
        """Wait until everything queued so far is written (or failed)."""
        while self._queue or not self._idle.is_set():
            await self._idle.wait()
            if self._queue:
                await asyncio.sleep(0)

    def enqueue(self, session: Committing, record: OpRecord) -> None:
        self._queue.append((session, record))
        self._idle.clear()
        self._wakeup.set()

    def discard(self, session: Committing) -> None:
        """Drop the queued (not yet written) records of a session that rolled back."""
        self._queue = deque(item for item in self._queue if item[0] is not session)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._max_delay:
                await asyncio.sleep(self._max_delay)
            while self._queue:
                batch = [
                    self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))
                ]
                await self._write(batch)
            if not self._queue and not self._syncing:
                self._idle.set()

    async def _write(self, batch: list[tuple[Committing, OpRecord]]) -> None:
        started = time.perf_counter()
        try:
            records = [record for _, record in batch]
            fence = self._fence(batch)
            # Without leases, called as before (an embedder's Store may predate fences).
            sync = await (
                self._store.commit(records) if fence is None else self._store.commit(records, fence)
            )
        except Exception as exc:  # noqa: BLE001 - any store failure fails the batch
            groups: dict[int, list[tuple[Committing, OpRecord]]] = {}
            for item in batch:
                groups.setdefault(id(item[0]), []).append(item)
            if len(groups) > 1:
                # One document's conflict must not fail the others: write each alone.
                for group in groups.values():
                    await self._write(group)
                return
            session = batch[0][0]
            self.discard(session)
            if isinstance(exc, FencedError):
                log.warning("commit of %s fenced: another node owns it now", batch[0][1].doc)
                session.fenced()
            elif isinstance(exc, ConflictError):
                # Another node committed this version first: re-sequence on top of it.
                self._metrics.conflict()
                session.conflict()
            else:
                log.error("commit of %d ops failed: %s", len(batch), exc)
                self._metrics.commit_failed()
                session.commit_failed(exc)
            return
        self._metrics.committed(len(batch), time.perf_counter() - started)
        self._metrics.committed_documents(record.doc for _, record in batch)
        highest: dict[int, tuple[Committing, int]] = {}
        for session, record in batch:
            highest[id(session)] = (session, record.version)
        for session, version in highest.values():
            session.committed(version, sync is None)
        if sync is not None:
            self._syncing += 1
            sync.add_done_callback(partial(self._synced, list(highest.values())))

    def _fence(self, batch: list[tuple[Committing, OpRecord]]) -> dict[str, int] | None:
        epoch_of = self.epoch_of
        if epoch_of is None:
            return None
        fence = {}
        for _, record in batch:
            epoch = epoch_of(record.doc)
            if epoch is not None:
                fence[record.doc] = epoch
        return fence

    def _synced(self, sessions: list[tuple[Committing, int]], sync: asyncio.Future[None]) -> None:
        self._syncing -= 1
        # A failed sync is logged once, by the store; each batch it covered lands here.
        exc = StorageError("the sync was cancelled") if sync.cancelled() else sync.exception()
        for session, version in sessions:
            if exc is None:
                session.synced(version)
            else:
                session.sync_failed(exc)
        if not self._queue and not self._syncing:
            self._idle.set()
