"""Revocations across nodes: stored, broadcast, enforced (the rules are ``tandem.revocation``).

``revoke`` stores the revocation (durable), applies it here and publishes it on
the bus; every node applies what it hears at once, closing the covered sockets
of every endpoint with ``ERR_REVOKED`` (close code 4403). Each node also reads
the table every ``revocation_poll_interval`` seconds (and at start-up), so a
node that missed a bus message (Redis is at-most-once) or was down still
enforces it; the table is pruned there too. New connections and REST calls are
checked on admission (``Tandem.authenticate``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from tandem.bus import Bus
from tandem.bus.base import Subscription
from tandem.errors import Revoked, StorageError
from tandem.revocation import Revocation, RevocationList, message
from tandem.server.sessions import SessionRegistry
from tandem.storage.revocations import RevocationStore
from tandem.tasks import cancel_and_wait

__all__ = ["CHANNEL", "RevocationService"]

logger = logging.getLogger(__name__)

CHANNEL = "tandem:revocations"


class RevocationService:
    def __init__(
        self,
        table: RevocationStore,
        bus: Bus | None,
        revocations: RevocationList,
        sessions: SessionRegistry,
        poll_interval: float,
    ) -> None:
        self._table = table
        self._bus = bus
        self.revocations = revocations
        self._sessions = sessions
        self._poll_interval = poll_interval
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reload()
        if self._bus is not None:
            self._subscription = await self._bus.subscribe(CHANNEL, self._heard)
        self._task = asyncio.get_running_loop().create_task(self._poll(), name="tandem-revocations")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def revoke(self, revocation: Revocation) -> None:
        """Store ``revocation``, enforce it here, and tell every other node."""
        await self._table.add(
            revocation.id, revocation.to_json().decode(), revocation.created, revocation.expires
        )
        self._apply(revocation)
        if self._bus is not None:
            await self._bus.publish(CHANNEL, revocation.to_json())

    async def reload(self) -> None:
        now = time.time()
        stored = [Revocation.from_json(data) for data in await self._table.active(now)]
        if self.revocations.replace_all(stored):
            self.enforce()

    def enforce(self) -> None:
        """Close every live session a revocation covers."""
        for session in self._sessions:
            revocation = self.revocations.affected(session.principal, session.docs())
            if revocation is not None:
                self._sessions.remove(session)
                session.end(Revoked(message(revocation)))

    def _apply(self, revocation: Revocation) -> None:
        if self.revocations.add(revocation):
            self.enforce()

    def _heard(self, data: bytes) -> None:
        try:
            revocation = Revocation.from_json(data)
        except ValueError as exc:
            logger.warning("ignoring a malformed revocation on the bus: %s", exc)
            return
        self._apply(revocation)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                await self.reload()
                await self._table.prune(time.time())
            except StorageError as exc:
                logger.warning("revocations: %s", exc)
