"""Open documents: one session per document, loaded once, unloaded when idle.

``DocumentManager`` owns what the sessions share: the store, the group
committer, the bus (one ordered publisher for every document's payloads) and
the background tasks (snapshots, rebuilds, rebases). ``open`` loads a
document once however many ask at the same time (single flight); a sweeper
expires silent presence and unloads documents nobody has had open for
``Settings.document_idle_unload`` seconds, saving a snapshot first.

With PostgreSQL and a bus (several nodes) it also holds ``owners``
(``session/owners.py``): a document is claimed before it is loaded,
its lease given back when it is unloaded, and ``hand_off`` gives every lease
back when the node shuts down. One process (SQLite, the memory store, or
PostgreSQL without Redis) owns every document: no leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

from tandem.bus.base import Bus
from tandem.errors import TandemError
from tandem.metrics import Metrics
from tandem.ot.document import Document
from tandem.session.authorize import AuthorizeCheck
from tandem.session.commit import GroupCommitter
from tandem.session.document import DocumentSession
from tandem.session.incarnation import establish
from tandem.session.owners import Owners
from tandem.session.payloads import channel
from tandem.settings import Settings
from tandem.storage import open_incarnations, open_leases
from tandem.storage.base import Store
from tandem.storage.leases import Leases
from tandem.tasks import cancel_and_wait

__all__ = ["DocumentManager"]

log = logging.getLogger("tandem.session")


class DocumentManager:
    """Opens documents once (single flight), keeps them while used, unloads idle ones."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        bus: Bus | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        #: Other nodes are reached over this bus; None on a single node.
        self.bus = bus
        self.replicated = bus is not None
        self.node = settings.node_id
        #: The ``authorize`` hook's call, set by the server (None: every op is allowed).
        self.authorize: AuthorizeCheck | None = None
        self.sessions: dict[str, DocumentSession] = {}
        self.committer = GroupCommitter(store, metrics, settings)
        #: One owner per document across nodes: only with a bus and a shared store.
        self.owners: Owners | None = None
        leases = _leases(store) if bus is not None else None
        if bus is not None and leases is not None:
            self.owners = Owners(self, leases, bus, settings, metrics)
            self.committer.epoch_of = self.owners.epoch
        self._loading: dict[str, asyncio.Future[DocumentSession]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._outgoing: deque[tuple[str, bytes]] = deque()
        self._outgoing_ready = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.committer.start()
        self._sweeper = asyncio.create_task(self._sweep(), name="tandem-sweeper")
        if self.bus is not None:
            self._publisher = asyncio.create_task(self._publish_loop(), name="tandem-publisher")
        if self.owners is not None:
            await self.owners.start()

    async def hand_off(self) -> None:
        """Shutting down, in-flight commits settled: release every lease at once."""
        if self.owners is not None:
            await self.owners.hand_off()

    async def close(self) -> None:
        await cancel_and_wait(self._sweeper)
        await self.committer.close()
        if self.owners is not None:
            await self.owners.close()
        for session in list(self.sessions.values()):
            await self._unload(session, force=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await cancel_and_wait(self._publisher)

    # -- what sessions use (tandem.session.document.SessionHost) ----------------

    def publish(self, doc: str, payload: bytes) -> None:
        """Send ``payload`` on ``doc``'s channel, after everything published before it."""
        if self.bus is None:
            return
        self._outgoing.append((channel(doc), payload))
        self._outgoing_ready.set()

    def publish_to(self, name: str, payload: bytes) -> None:
        """Send ``payload`` on the bus channel ``name`` (a node's), in order with the rest.

        Never publishes here and now: a ``/collab`` handler may run outside a task
        (``server/eager.py``), where the Redis client cannot time its calls.
        """
        if self.bus is None:
            return
        self._outgoing.append((name, payload))
        self._outgoing_ready.set()

    async def _publish_loop(self) -> None:
        """Publish in commit order; a failed publish is logged (peers catch up from the store).

        What queued up meanwhile goes in one round trip when the bus can
        (``RedisBus.publish_many``): under load one op's payload and one
        forwarded submit's answer each would otherwise wait for the one before.
        """
        assert self.bus is not None
        publish_many = getattr(self.bus, "publish_many", None)
        while True:
            await self._outgoing_ready.wait()
            self._outgoing_ready.clear()
            while self._outgoing:
                try:
                    if publish_many is not None and len(self._outgoing) > 1:
                        batch = list(self._outgoing)
                        self._outgoing.clear()
                        await publish_many(batch)
                    else:
                        name, data = self._outgoing.popleft()
                        await self.bus.publish(name, data)
                except Exception as exc:  # noqa: BLE001 - at-most-once by contract
                    log.warning("bus publish failed: %s", exc)

    def background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a best-effort coroutine (snapshots); failures are logged, never raised."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)

        def finished(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("background task failed: %s", t.exception())

        task.add_done_callback(finished)

    def count_documents(self) -> None:
        self.metrics.set_documents(len(self.sessions))

    # -- opening and closing ----------------------------------------------------------

    async def open(self, doc: str) -> DocumentSession:
        """The session of ``doc``, loading it once however many ask at the same time."""
        session = self.sessions.get(doc)
        if session is not None:
            return session
        loading = self._loading.get(doc)
        if loading is not None:
            return await asyncio.shield(loading)
        loading = self._loading[doc] = asyncio.get_running_loop().create_future()
        try:
            session = await self._load(doc)
        except BaseException as exc:
            loading.set_exception(exc)
            loading.exception()  # mark retrieved
            raise
        finally:
            self._loading.pop(doc, None)
        self.sessions[doc] = session
        loading.set_result(session)
        self.count_documents()
        return session

    async def _load(self, doc: str) -> DocumentSession:
        # The lease first: loaded after it is granted, the state is the newest.
        claim = await self.owners.claim(doc) if self.owners is not None else None
        loaded = await self.store.load(doc)
        document = Document(loaded.snapshot.content) if loaded.snapshot else Document()
        for record in loaded.ops:
            document = document.apply(record.op)
        session = DocumentSession(doc, document, loaded.version, loaded.ops, self)
        session.incarnation = await establish(open_incarnations(self.store), loaded)
        session.replicas.load(loaded)
        for record in loaded.ops:
            if record.seq is not None:
                session.last_seqs[record.client_id] = record.seq
        if loaded.snapshot is not None:
            session.last_snapshot = loaded.snapshot.version
        elif loaded.ops:
            session.last_snapshot = 0
        if self.bus is not None:
            session.subscription = await self.bus.subscribe(channel(doc), session.on_bus)
            # Ops committed elsewhere between our load and our subscription.
            session.replication.catch_up()
        if self.owners is not None:
            self.owners.loaded(doc, claim)
        return session

    async def _unload(self, session: DocumentSession, *, force: bool = False) -> None:
        if not force and (session.members or session.busy):
            return
        if self.sessions.get(session.doc) is session:
            del self.sessions[session.doc]
        session.close()
        if session.subscription is not None:
            with contextlib.suppress(Exception):
                await session.subscription.unsubscribe()
            session.subscription = None
        if self.owners is not None:
            await self.owners.release(session.doc)
        snapshot = session.snapshot()
        if snapshot is not None and snapshot.version > session.last_snapshot:
            try:
                await self.store.save_snapshot(snapshot)
            except TandemError as exc:
                log.warning("snapshot of %s on unload failed: %s", session.doc, exc)
        self.count_documents()

    async def _sweep(self) -> None:
        """Expire silent presence and unload documents nobody has had open for a while."""
        while True:
            await asyncio.sleep(min(1.0, self.settings.document_idle_unload / 2 or 1.0))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                session.presence.expire(now)
                idle = session.idle_since
                if idle is not None and now - idle >= self.settings.document_idle_unload:
                    await self._unload(session)


def _leases(store: Store) -> Leases | None:
    """The store's document leases; None for one that has none (or an embedder's own)."""
    try:
        return open_leases(store)
    except TypeError:
        log.warning("no document leases with a %s: every node sequences", type(store).__name__)
        return None
