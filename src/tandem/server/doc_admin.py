"""Deleting, erasing, copying and renaming documents while clients may have them open.

The rows change in the store first (``storage/document_admin.py``), so a
commit still in flight for the old document conflicts and changes nothing;
then every node closes the document: its sessions on every endpoint get
``ERR_DOC_DELETED`` (close code 4410) and the loaded document is dropped
without the snapshot an unload would write. This node does it at once, the
others when they hear it on the bus. A client that comes back finds the
document as it now is: gone, so a new one starts from version 0.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Protocol

import orjson

from tandem.bus.base import Subscription
from tandem.errors import DocumentDeleted
from tandem.storage.document_admin import DocumentAdmin, Tombstone

if TYPE_CHECKING:
    from tandem.bus import Bus
    from tandem.server.sessions import SessionRegistry
    from tandem.session.manager import DocumentManager
    from tandem.storage.base import Store

__all__ = ["CHANNEL", "DocumentControl"]

logger = logging.getLogger(__name__)

CHANNEL = "tandem:documents-closed"


class _Parts(Protocol):
    """What document control uses of the server (``tandem.server.app.Tandem``)."""

    @property
    def bus(self) -> Bus | None: ...

    @property
    def store(self) -> Store: ...

    @property
    def sessions(self) -> SessionRegistry: ...

    @property
    def documents(self) -> DocumentManager: ...


class DocumentControl:
    def __init__(self, tandem: _Parts, admin: DocumentAdmin) -> None:
        self._tandem = tandem
        self.admin = admin
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        if self._tandem.bus is not None:
            self._subscription = await self._tandem.bus.subscribe(CHANNEL, self._heard)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def delete(self, doc: str, by: str, *, erase: bool) -> Tombstone | None:
        """Delete ``doc`` (a tombstone stays) or erase it (no row stays); close it everywhere."""
        version = await self._tandem.store.head(doc)
        tombstone = None if erase else Tombstone(doc, time.time(), version, by)
        await self.admin.remove(doc, tombstone)
        verb = "erased" if erase else "deleted"
        await self._closed([doc], f"document {doc!r} was {verb} by an administrator")
        return tombstone

    async def copy(self, source: str, target: str) -> None:
        await self.admin.copy(source, target)
        await self._closed([target], f"document {target!r} was replaced by a copy")

    async def rename(self, source: str, target: str) -> None:
        await self.admin.rename(source, target)
        await self._closed(
            [source, target], f"document {source!r} was renamed to {target!r} by an administrator"
        )

    async def _closed(self, docs: list[str], message: str) -> None:
        await self._close_here(docs, message)
        bus = self._tandem.bus
        if bus is not None:
            await bus.publish(CHANNEL, orjson.dumps({"docs": docs, "message": message}))

    async def _heard(self, data: bytes) -> None:
        try:
            payload = orjson.loads(data)
            docs, message = list(payload["docs"]), str(payload["message"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            logger.warning("ignoring a malformed document-closed message: %s", exc)
            return
        await self._close_here(docs, message)

    async def _close_here(self, docs: list[str], message: str) -> None:
        tandem = self._tandem
        for live in tandem.sessions:
            if any(doc in docs for doc in live.docs()):
                tandem.sessions.remove(live)
                live.end(DocumentDeleted(message))
        for doc in docs:
            session = tandem.documents.sessions.get(doc)
            if session is None:
                continue
            # Drop it without the snapshot an unload writes: that row would bring it back.
            session.last_snapshot = session.committed_version
            with contextlib.suppress(Exception):
                await tandem.documents._unload(session, force=True)
