"""Graceful shutdown: stop taking edits, commit and acknowledge what is in flight, close 1012.

A node that stops (SIGTERM or SIGINT to ``tandem serve``, or the lifespan of an
app embedding Tandem ending) does, in order:

1. **Stops accepting.** The listener closes (uvicorn), ``/readyz`` answers 503,
   and ``/collab`` connections take no new message: one that arrives now is
   not applied and gets no reply, so its client still holds it as unacknowledged
   and resends it to the node it reconnects to.
2. **Commits and acknowledges everything in flight.** It waits until no
   message is being handled and every document's sequenced ops are committed
   and synced (``DocumentSession.stored``); their acks are then queued.
3. **Hands its documents off** (several nodes): releases every document
   lease it holds at once (``DocumentManager.hand_off``), so the node each
   client reconnects to takes the document over without waiting for the
   lease to expire; a submit forwarded to this node from now on is answered
   "not owner" and its node takes the lease.
4. **Closes every ``/collab`` client with 1012** ("service restart") after
   what is queued for it, acks included, so clients reconnect elsewhere at once.
   (``/yjs`` and ``/hocuspocus`` sockets are closed with 1012 by uvicorn; a Yjs
   client re-syncs by state vector, so an update whose SyncStatus it missed is
   resent and merged once.)

Steps 1-2 take at most ``shutdown_timeout`` seconds; past it, steps 3-4 happen
anyway (an op still unacknowledged is resent by its client: nothing
acknowledged is lost, since an ack is only sent once its op is durable).
``tandem serve`` exits within ``shutdown_timeout`` + ``CLOSE_GRACE`` seconds,
and at once on a second signal.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tandem.server.context import Closable, Context

__all__ = ["CLOSE_GRACE", "SERVICE_RESTART", "GracefulShutdown"]

log = logging.getLogger("tandem.shutdown")

#: Close code for "the server is restarting: reconnect" (RFC 6455 registry).
SERVICE_RESTART = 1012
#: Seconds after the drain for the closing handshakes and the lifespan's own
#: shutdown, after which ``tandem serve`` exits regardless.
CLOSE_GRACE = 3.0


class GracefulShutdown:
    """The live ``/collab`` connections of one node, and the drain that ends them."""

    def __init__(self, tandem: Context) -> None:
        self.tandem = tandem
        self.connections: set[Closable] = set()
        #: Messages being handled right now (each may sequence an op).
        self._handling = 0
        #: Made by the drain when it must wait for ``_handling`` to reach 0 (not an
        #: event cleared and set around every message: this runs once per message).
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # -- what connections report ---------------------------------------------------------

    def opened(self, connection: Closable) -> None:
        self.connections.add(connection)

    def ended(self, connection: Closable) -> None:
        self.connections.discard(connection)

    def started_handling(self) -> None:
        """A message is being handled: the drain waits for ``finished_handling``."""
        self._handling += 1

    def finished_handling(self) -> None:
        self._handling -= 1
        if not self._handling and self._idle is not None:
            self._idle.set()

    # -- the drain -------------------------------------------------------------------------

    def begin(self) -> asyncio.Task[None]:
        """Start the drain (once; later calls return the same task)."""
        if self._task is None:
            self.tandem.draining = True
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return self._task

    async def drain(self) -> None:
        """Start the drain if needed and wait for it."""
        await self.begin()

    async def _drain(self) -> None:
        timeout = self.tandem.settings.shutdown_timeout
        log.info("shutting down: finishing what is in flight (at most %gs)", timeout)
        try:
            async with asyncio.timeout(timeout):
                await self._settle()
        except TimeoutError:
            log.warning("shutdown: in-flight ops not settled within %gs; closing anyway", timeout)
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                await self.tandem.documents.hand_off()
        except Exception as exc:  # noqa: BLE001 - the leases then expire by themselves
            log.warning("shutdown: releasing document leases failed (they expire): %s", exc)
        for connection in list(self.connections):
            connection.close(SERVICE_RESTART, "server restarting")
        log.info("shutdown: %d connection(s) closed with 1012", len(self.connections))

    async def _settle(self) -> None:
        if self._handling:  # new messages are not handled once draining
            self._idle = asyncio.Event()
            await self._idle.wait()
        sessions = list(self.tandem.documents.sessions.values())
        await asyncio.gather(*(session.stored() for session in sessions))
