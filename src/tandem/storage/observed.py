"""``ObservedStore``: a ``Store`` that reports each batch of ops once it is durable.

Webhooks (and Python hooks) need to hear about every committed op, after it is
durable, from every path that commits (OT, REST, Yjs, offline merge, group
commit). All of them end in ``Store.append`` or ``Store.commit``, so the
observation sits here, at the storage edge, and the sessions know nothing of
it. ``on_durable`` gets the records of one batch in version order, after
``append`` returned or ``commit``'s sync completed; never for a batch that
failed. It runs on the event loop and must not block. It is installed only
when something listens, so a plain server pays nothing for it. ``initial``
(the ``load`` hook) gives a document with no history its first content.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from tandem.errors import ConflictError
from tandem.ot.delta import Delta
from tandem.storage.base import DocumentInfo, LoadedDocument, OpRecord, Snapshot, Store

__all__ = ["ObservedStore"]


class ObservedStore:
    """Delegates to ``inner``; calls ``on_durable(records)`` once a batch is durable."""

    def __init__(
        self,
        inner: Store,
        on_durable: Callable[[Sequence[OpRecord]], None],
        initial: Callable[[str], Awaitable[Delta | None]] | None = None,
    ) -> None:
        self.inner = inner
        self._on_durable = on_durable
        self._initial = initial

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def append(self, records: Sequence[OpRecord]) -> None:
        await self.inner.append(records)
        self._on_durable(records)

    async def commit(
        self, records: Sequence[OpRecord], fence: Mapping[str, int] | None = None
    ) -> asyncio.Future[None] | None:
        sync = await self.inner.commit(records, fence)
        if sync is None:
            self._on_durable(records)
        else:
            sync.add_done_callback(lambda done: self._synced(done, records))
        return sync

    def _synced(self, done: asyncio.Future[None], records: Sequence[OpRecord]) -> None:
        if not done.cancelled() and done.exception() is None:
            self._on_durable(records)

    async def load(self, doc: str) -> LoadedDocument:
        """``inner.load``; a document with no history first gets ``initial(doc)`` as version 1.

        Two nodes loading it at once both try; the store lets one commit and the
        other ``ConflictError``, after which both read the same version 1.
        """
        loaded = await self.inner.load(doc)
        if self._initial is None or loaded.ops or loaded.snapshot is not None:
            return loaded
        content = await self._initial(doc)
        if content is None:
            return loaded
        record = OpRecord(doc, 1, content, "tandem-load", None, "tandem:load", time.time())
        try:
            await self.inner.append([record])
        except ConflictError:
            return await self.inner.load(doc)
        self._on_durable([record])
        return await self.inner.load(doc)

    async def head(self, doc: str) -> int:
        return await self.inner.head(doc)

    async def get_ops(
        self, doc: str, from_version: int, to_version: int | None = None
    ) -> list[OpRecord]:
        return await self.inner.get_ops(doc, from_version, to_version)

    async def find_seq(self, doc: str, client_id: str, seq: int) -> int | None:
        return await self.inner.find_seq(doc, client_id, seq)

    async def last_seq(self, doc: str, client_id: str) -> int | None:
        return await self.inner.last_seq(doc, client_id)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self.inner.save_snapshot(snapshot)

    async def list_documents(self) -> list[DocumentInfo]:
        return await self.inner.list_documents()
