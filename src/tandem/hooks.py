"""Python hooks: the application around Tandem gets a say (docs/extending.md).

Pass an object to ``Tandem(settings, hooks=...)`` or name it with ``--hooks
package.module:object`` (``Settings.hooks``; a class is instantiated). It may
define any of these coroutines; ``Hooks`` is a base class with them all doing
nothing. Every call has a time limit (``hook_timeout``) and is counted in
``tandem_hook_calls_total{hook, outcome}``; what a failure (an exception or a
timeout) means is fixed per hook:

``authenticate(credential) -> Principal | None``
    A credential that is not a JWT (an API key, a session id) sent where a
    token travels. ``None`` or a failure refuses it (``ERR_UNAUTHORIZED``).
``authorize(request) -> Rejection | None``
    Each op about to commit, transformed to the head (``AuthorizeRequest``:
    the op, the head ``document``, who, where from), on every path: ``/collab``,
    REST, Yjs, offline merges. ``None`` commits it; a ``Rejection(code,
    reason)`` refuses it (``ERR_REJECTED``; the document is unchanged). Its own
    time limit, ``authorize_timeout``; a failure refuses the op
    (``ERR_AUTHORIZE_FAILED``) unless ``authorize_failure`` is ``"allow"``.
    Counted in ``tandem_authorize_total{outcome}`` too.
``on_change(changes)``
    Committed ops of one document, in version order, once durable, in batches.
    Runs beside sequencing, never in its way. At least once: the version it
    reached is stored per document, so after a crash it resumes from there. A
    failure is retried (backoff up to 30 s) and holds back that document's later
    changes only; other documents go on.
``load(doc) -> str | Delta | None``
    Initial content of a document that has no history: committed as version 1
    (user ``tandem:load``) before anyone sees the document. ``None``: it starts
    empty. A failure refuses the join with ``ERR_STORAGE``; the next join asks again.
``store(doc, version, content)``
    The document's content, debounced (``hook_store_debounce`` after its last
    change, at most ten times that after its first). A failure is logged and
    counted; the next change stores again.
``connect(session)`` / ``disconnect(session)``
    A client was admitted / went away (``session`` is the ``LiveSession``:
    endpoint, user, IP, documents). Notifications: they cannot refuse, and a
    failure is only counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tandem.auth import Principal
from tandem.authorization import AuthorizeRequest, Rejection, verdict
from tandem.errors import Rejected, StorageError
from tandem.metrics import Metrics
from tandem.ot.delta import Delta
from tandem.settings import Settings
from tandem.storage.base import OpRecord, Store
from tandem.storage.outbox import Outbox
from tandem.webhooks.rules import Debounce, backoff

__all__ = ["Change", "HookFailed", "HookRunner", "Hooks", "load_hooks"]

logger = logging.getLogger(__name__)

#: Where ``on_change`` keeps its place, in the outbox's cursor table.
CURSOR = "hook:on_change"
#: Documents whose ``on_change`` calls run at once.
CONCURRENCY = 64


@dataclass(frozen=True, slots=True)
class Change:
    """One committed op, as ``on_change`` sees it."""

    doc: str
    version: int
    op: Delta
    user: str
    client_id: str
    time: float


class Hooks:
    """Every hook, doing nothing: subclass it and override what you need."""

    async def authenticate(self, credential: str) -> Principal | None:
        return None

    async def authorize(self, request: AuthorizeRequest) -> Rejection | None:
        return None

    async def on_change(self, changes: Sequence[Change]) -> None:
        return None

    async def load(self, doc: str) -> str | Delta | None:
        return None

    async def store(self, doc: str, version: int, content: Delta) -> None:
        return None

    async def connect(self, session: Any) -> None:
        return None

    async def disconnect(self, session: Any) -> None:
        return None


class HookFailed(Exception):
    """A hook raised or timed out (the cause is chained)."""


def load_hooks(spec: str) -> object:
    """The object ``package.module:name`` names (instantiated if it is a class)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"hooks must be 'package.module:object', got {spec!r}")
    found: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found() if isinstance(found, type) else found


class HookRunner:
    """Calls the hooks of one server, with time limits, metrics and the rules above."""

    def __init__(
        self,
        hooks: object | None,
        settings: Settings,
        store: Store,
        outbox: Outbox,
        metrics: Metrics,
    ) -> None:
        self.hooks = hooks
        self._settings = settings
        self._store = store
        self._outbox = outbox
        self._metrics = metrics
        self._cursor: dict[str, int] = {}
        self._head: dict[str, int] = {}
        self._draining: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._store_pending: dict[str, Debounce] = {}
        self._store_timer: asyncio.TimerHandle | None = None
        self._gate = asyncio.Semaphore(CONCURRENCY)
        self._since = 0.0
        self.content_of: Callable[[str], Awaitable[tuple[int, Delta]]] | None = None

    def has(self, name: str) -> bool:
        """Does the hooks object define ``name`` (beyond ``Hooks``'s do-nothing one)?"""
        method = getattr(type(self.hooks), name, None)
        return method is not None and method is not getattr(Hooks, name, None)

    @property
    def observes_commits(self) -> bool:
        return self.has("on_change") or self.has("store")

    async def call(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        """``hooks.name(*args)`` within ``hook_timeout``; ``HookFailed`` if it raised or hung."""
        limit = self._settings.hook_timeout if timeout is None else timeout
        if asyncio.current_task() is None:  # the fast /collab path runs eagerly
            return await asyncio.ensure_future(self._call(name, limit, *args))
        return await self._call(name, limit, *args)

    async def _call(self, name: str, limit: float, *args: Any) -> Any:
        try:
            async with asyncio.timeout(limit):
                result = await getattr(self.hooks, name)(*args)
        except TimeoutError as exc:
            self._metrics.hook(name, "timeout")
            raise HookFailed(f"the {name} hook took longer than {limit:g} s") from exc
        except Exception as exc:  # noqa: BLE001 - a hook's failure is counted, never ours
            self._metrics.hook(name, "error")
            raise HookFailed(f"the {name} hook failed: {type(exc).__name__}: {exc}") from exc
        self._metrics.hook(name, "ok")
        return result

    # -- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.has("on_change"):
            return
        self._since = await self._outbox.subscribe(CURSOR, time.time())
        self._cursor = await self._outbox.cursors(CURSOR)
        for info in await self._store.list_documents():  # what a crash left undelivered
            cursor = self._cursor.get(info.doc)
            if cursor is None and info.updated < self._since:
                continue
            if info.version > (cursor or 0):
                self._cursor.setdefault(info.doc, 0)
                self._head[info.doc] = info.version
                self._drain_soon(info.doc)

    async def close(self) -> None:
        if self._store_timer is not None:
            self._store_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- authenticate, load, connect, disconnect ------------------------------------------

    async def authenticate(self, credential: str) -> Principal | None:
        principal = await self.call("authenticate", credential)
        if principal is not None and not isinstance(principal, Principal):
            raise HookFailed("the authenticate hook must return a Principal or None")
        return principal

    async def authorize(self, request: AuthorizeRequest) -> Rejected | None:
        """Ask the hook about one op: the error to refuse it with, or None to commit it."""
        settings = self._settings
        answer: object = None
        failure: str | None = None
        try:
            answer = await self.call("authorize", request, timeout=settings.authorize_timeout)
        except HookFailed as exc:
            failure = str(exc)
        outcome, error = verdict(answer, failure, settings.authorize_failure)
        self._metrics.authorize(outcome)
        if outcome.startswith("failed"):
            logger.warning(
                "%s (document %r); the op was %s",
                failure or error,
                request.doc,
                "allowed" if error is None else "refused",
            )
        return error

    async def initial_content(self, doc: str) -> Delta | None:
        try:
            content = await self.call("load", doc)
        except HookFailed as exc:  # the join fails; the next one asks again
            raise StorageError(str(exc)) from exc
        if content is None or isinstance(content, Delta):
            return content
        if isinstance(content, str):
            return Delta().insert(content) if content else None
        raise StorageError("the load hook must return a str, a Delta or None")

    def notify(self, name: str, session: object) -> None:
        if self.has(name):
            self._spawn(self._quietly(name, session))

    async def _quietly(self, name: str, *args: Any) -> None:
        with contextlib.suppress(HookFailed):
            await self.call(name, *args)

    # -- on_change and store: fed by the store once ops are durable ------------------------

    def durable(self, records: Sequence[OpRecord]) -> None:
        if not records:
            return
        watch_changes, watch_store = self.has("on_change"), self.has("store")
        now = time.time()
        for record in records:
            if watch_changes:
                if record.doc not in self._cursor:
                    self._cursor[record.doc] = record.version - 1
                self._head[record.doc] = max(self._head.get(record.doc, 0), record.version)
            if watch_store:
                pending = self._store_pending.get(record.doc)
                if pending is None:
                    self._store_pending[record.doc] = Debounce(
                        record.version, record.version, now, now
                    )
                else:
                    pending.changed(record.version, now)
        if watch_changes:
            for doc in {record.doc for record in records}:
                self._drain_soon(doc)
        if watch_store:
            self._schedule_store()

    def _drain_soon(self, doc: str) -> None:
        if doc not in self._draining:
            self._draining.add(doc)
            self._spawn(self._drain(doc))

    async def _drain(self, doc: str) -> None:
        """Deliver ``doc``'s changes in order until its cursor reaches the head seen."""
        failures = 0
        try:
            while self._cursor.get(doc, 0) < self._head.get(doc, 0):
                start, head = self._cursor[doc], self._head[doc]
                async with self._gate:
                    records = await self._store.get_ops(doc, start, head)
                    changes = [
                        Change(r.doc, r.version, r.op, r.user, r.client_id, r.time) for r in records
                    ]
                    try:
                        if changes:
                            await self.call("on_change", changes)
                    except HookFailed as exc:
                        failures += 1
                        delay = backoff(failures, 0.5, 30.0)
                        logger.warning("%s (document %r); retrying in %.1f s", exc, doc, delay)
                        await asyncio.sleep(delay)
                        continue
                failures = 0
                reached = changes[-1].version if changes else head
                await self._outbox.set_cursor(CURSOR, doc, reached)
                self._cursor[doc] = reached
        finally:
            self._draining.discard(doc)

    def _schedule_store(self) -> None:
        if self._store_timer is not None or not self._store_pending:
            return
        quiet = self._settings.hook_store_debounce
        due = min(p.due_at(quiet, quiet * 10) for p in self._store_pending.values())
        loop = asyncio.get_running_loop()
        self._store_timer = loop.call_at(loop.time() + max(0.0, due - time.time()), self._store_due)

    def _store_due(self) -> None:
        self._store_timer = None
        quiet, now = self._settings.hook_store_debounce, time.time()
        for doc, pending in list(self._store_pending.items()):
            if pending.due_at(quiet, quiet * 10) <= now:
                del self._store_pending[doc]
                self._spawn(self._store_one(doc))
        self._schedule_store()

    async def _store_one(self, doc: str) -> None:
        if self.content_of is None:
            return
        try:
            version, content = await self.content_of(doc)
            await self.call("store", doc, version, content)
        except HookFailed as exc:
            logger.warning("%s (document %r); the next change stores it again", exc, doc)
