"""``create_app(settings)`` and the embeddable ``Tandem`` object: the composition root.

``Tandem`` builds every part and hands itself to the endpoints as their
``tandem.server.context.Context``; no endpoint imports this module.

``Tandem`` owns the store, the authenticator, the document manager and the
metrics, and exposes ``router`` (every route: ``/collab``, ``/yjs/{doc}``,
``/hocuspocus``, ``/api``, ``/livez``, ``/readyz``, ``/healthz``, ``/metrics``,
the demo) and ``lifespan``. To embed Tandem in an existing FastAPI app::

    tandem = Tandem(Settings.from_env())
    app = FastAPI(lifespan=tandem.lifespan)
    app.include_router(tandem.router, prefix="/collab-server")

(Starlette does not run the lifespan of *mounted* sub-apps, which is why we
offer a router plus a lifespan rather than an app to mount.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from tandem import __version__
from tandem.assets import find_assets
from tandem.auth import Principal
from tandem.auth_keys import Identity
from tandem.bus import Bus, open_bus
from tandem.errors import AuthError, TandemError
from tandem.history.service import History
from tandem.hooks import HookFailed, HookRunner, load_hooks
from tandem.metrics import CONTENT_TYPE_LATEST, Metrics
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.revocation import RevocationList
from tandem.server.admin import build_admin_router
from tandem.server.admission import Admission
from tandem.server.collab_asgi import serve_collab
from tandem.server.doc_admin import DocumentControl
from tandem.server.health import build_health_router
from tandem.server.hocuspocus import serve_hocuspocus
from tandem.server.rest import build_rest_router
from tandem.server.revocations import RevocationService
from tandem.server.sessions import SessionRegistry
from tandem.server.shutdown import GracefulShutdown
from tandem.server.yjs import serve_yjs
from tandem.session.manager import DocumentManager
from tandem.settings import Settings
from tandem.storage import MemoryOutbox, open_archive, open_outbox, open_revocations, open_store
from tandem.storage.base import OpRecord, Store
from tandem.storage.document_admin import open_document_admin
from tandem.storage.observed import ObservedStore
from tandem.storage.revocations import MemoryRevocations, RevocationStore
from tandem.tasks import cancel_and_wait
from tandem.webhooks.dispatcher import WebhookDispatcher

__all__ = ["Tandem", "create_app"]

logger = logging.getLogger(__name__)


def _revocation_table(store: Store) -> RevocationStore:
    try:
        return open_revocations(store)
    except TypeError:  # an embedder's own Store: revocations last as long as the process
        logger.warning("revocations are kept in memory only with a %s", type(store).__name__)
        return MemoryRevocations()


class Tandem:
    """One Tandem server: its parts, its routes and its lifespan."""

    def __init__(
        self, settings: Settings, *, store: Store | None = None, hooks: object | None = None
    ) -> None:
        self.settings = settings
        self.metrics = Metrics(settings.node_id)
        self._given_store = store
        raw_store = (
            store
            if store is not None
            else open_store(
                settings.database_url, settings.data_dir, sync_delay=settings.sync_delay
            )
        )
        self.metrics.watch_disk(settings.data_dir, getattr(raw_store, "path", None))
        if hooks is None and settings.hooks:
            hooks = load_hooks(settings.hooks)
        outbox = open_outbox(raw_store) if settings.webhooks or hooks else MemoryOutbox()
        self.webhooks = WebhookDispatcher(settings, raw_store, outbox, self.metrics)
        self.hooks = HookRunner(hooks, settings, raw_store, outbox, self.metrics)
        self.hooks.content_of = self._content_of
        # Listeners hear of each batch of ops once it is durable (storage/observed.py).
        initial = self.hooks.initial_content if self.hooks.has("load") else None
        observed = self.webhooks.enabled or self.hooks.observes_commits or initial is not None
        self.store: Store = (
            ObservedStore(raw_store, self._durable, initial) if observed else raw_store
        )
        self.identity = Identity(settings, data_dir=settings.data_dir)
        self.authenticator = self.identity.authenticator
        # Several nodes share documents through a bus; one node needs none.
        self.bus: Bus | None = open_bus(settings.redis_url) if settings.redis_url else None
        self.sessions = SessionRegistry(self.hooks.notify)
        self.revocations = RevocationList()
        self.document_control = DocumentControl(self, open_document_admin(raw_store))
        self.revocation_service = RevocationService(
            _revocation_table(raw_store),
            self.bus,
            self.revocations,
            self.sessions,
            settings.revocation_poll_interval,
        )
        self.documents = DocumentManager(self.store, settings, self.metrics, self.bus)
        if self.hooks.has("authorize"):
            self.documents.authorize = self.hooks.authorize
        #: Versions, authorship, labels and retention (None for an embedder's own Store).
        self.history: History | None = None
        try:
            archive = open_archive(raw_store)
        except TypeError:
            archive = None
        if archive is not None:
            self.history = History(
                self.store,
                archive,
                checkpoint_every=settings.history_checkpoint_every,
                max_changes=settings.history_max_changes,
            )
        self._retention: asyncio.Task[None] | None = None
        self.admission = Admission(settings, self.authenticate, self.metrics)
        #: The per-user and per-address counts (``admission.connections``).
        self.connections = self.admission.connections
        self.started = 0.0
        #: True once shutdown began: /readyz answers 503 so load balancers move on.
        self.draining = False
        self.shutdown = GracefulShutdown(self)
        self.router = self._build_router()

    async def start(self) -> None:
        await self.store.open()
        await self.identity.start()
        if self.bus is not None:
            await self.bus.open()
        await self.documents.start()
        await self.revocation_service.start()
        await self.document_control.start()
        await self.webhooks.start()
        await self.hooks.start()
        settings = self.settings
        if self.history is not None and (
            settings.history_keep_versions or settings.history_keep_days
        ):
            self._retention = asyncio.create_task(self._apply_retention(self.history))
        self.started = time.time()

    async def _apply_retention(self, history: History) -> None:
        """Compact every document's old ops now and every ``history_compact_interval``."""
        settings = self.settings
        while True:
            try:
                cut = await history.compact_all(
                    keep_versions=settings.history_keep_versions or None,
                    keep_days=settings.history_keep_days or None,
                    now=time.time(),
                )
                for doc, oldest in cut.items():
                    logger.info("retention: %s now starts at version %d", doc, oldest)
            except TandemError as exc:
                logger.warning("retention failed: %s", exc)
            await asyncio.sleep(settings.history_compact_interval)

    async def stop(self) -> None:
        # Commit and acknowledge what is in flight, close /collab clients with 1012.
        await self.shutdown.drain()
        retention, self._retention = self._retention, None
        await cancel_and_wait(retention)
        await self.webhooks.close()
        await self.hooks.close()
        await self.revocation_service.close()
        await self.document_control.close()
        await self.documents.close()
        if self.bus is not None:
            await self.bus.close()
        await self.store.close()
        await self.identity.close()

    async def authenticate(self, token: str) -> Principal:
        """The ``Principal`` of ``token``, with what administrators revoked; ``AuthError``.

        A credential that is not a JWT goes to the ``authenticate`` hook, if any.
        """
        if token.count(".") != 2 and self.hooks.has("authenticate"):
            try:
                principal = await self.hooks.authenticate(token)
            except HookFailed as exc:
                raise AuthError(str(exc)) from None
            if principal is None:
                raise AuthError("the credential was not accepted")
        else:
            principal = await self.identity.verify(token)
        return self.revocations.apply(principal)

    def _durable(self, records: Sequence[OpRecord]) -> None:
        for record in records:
            self.webhooks.changed(record.doc, record.version)
        self.hooks.durable(records)

    async def _content_of(self, doc: str) -> tuple[int, Delta]:
        """``doc``'s latest committed content: from memory if loaded here, else the store."""
        session = self.documents.sessions.get(doc)
        if session is not None:
            return session.committed_version, session.committed_document.to_delta()
        loaded = await self.store.load(doc)
        document = Document(loaded.snapshot.content) if loaded.snapshot else Document()
        for record in loaded.ops:
            document = document.apply(record.op)
        return loaded.version, document.to_delta()

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def _build_router(self) -> APIRouter:
        router = APIRouter()

        @router.websocket("/collab")
        async def collab(websocket: WebSocket) -> None:
            await serve_collab(websocket, self)

        @router.websocket("/yjs/{doc:path}")
        async def yjs(websocket: WebSocket, doc: str) -> None:
            await serve_yjs(websocket, self, doc)

        @router.websocket("/hocuspocus")
        async def hocuspocus(websocket: WebSocket) -> None:
            await serve_hocuspocus(websocket, self)

        router.include_router(build_rest_router(self))
        router.include_router(build_admin_router(self))

        router.include_router(build_health_router(self))

        @router.get("/metrics", tags=["operations"], summary="Prometheus metrics")
        async def metrics() -> Response:
            return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

        @router.get(
            "/api/dev/token", tags=["development"], summary="A token (development mode only)"
        )
        async def dev_token(user: str = "guest", name: str | None = None) -> Response:
            if not self.settings.dev_mode:
                return JSONResponse(
                    {"code": "ERR_FORBIDDEN", "message": "development tokens are disabled"},
                    status_code=403,
                )
            try:
                token = self.authenticator.issue(
                    user[:64] or "guest",
                    name=(name or user)[:64],
                    docs={"*": "write"},
                    ttl=12 * 3600,
                    now=time.time(),
                )
            except TandemError as error:
                return JSONResponse({"code": error.code, "message": error.message}, status_code=400)
            return JSONResponse({"token": token})

        demo_index = find_assets().demo / "index.html"
        if demo_index.is_file():

            @router.get("/", include_in_schema=False)
            async def index() -> FileResponse:
                return FileResponse(demo_index)

        return router

    def mount_static(self, app: FastAPI, prefix: str = "") -> None:
        """Serve the demo page, the JS client and its vendored modules."""
        assets = find_assets()
        for path, folder in (
            ("/demo", assets.demo),
            ("/client", assets.client),
            ("/vendor", assets.vendor),
        ):
            if folder.is_dir():
                app.mount(prefix + path, StaticFiles(directory=folder), name=f"tandem{path}")


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """A complete Tandem server as a FastAPI app."""
    settings = settings or Settings.from_env()
    tandem = Tandem(settings, store=store)
    app = FastAPI(
        title="Tandem",
        version=__version__,
        description="Real-time collaborative editing: OT over WebSocket, REST, presence.",
        lifespan=tandem.lifespan,
    )
    app.include_router(tandem.router)
    tandem.mount_static(app)
    app.state.tandem = tandem
    return app
