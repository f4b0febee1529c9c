"""Sending webhooks: the I/O around ``webhooks.rules`` (httpx, the store's outbox, a task).

How a change becomes a POST, and why nothing is lost:

1. ``changed(doc, version)`` is called once an op is durable. The document's
   ``Debounce`` fires ``webhook_debounce`` seconds after its last change (at
   most ``webhook_max_debounce`` after its first).
2. Firing *queues* a delivery per matching subscription in the store's outbox:
   ``(cursor, head]``, compare-and-set on the cursor, so two nodes, or a node
   and its restarted self, never queue overlapping ranges.
3. The sender claims due deliveries (leased, one per document and URL, oldest
   first) and POSTs each, signed. A 2xx removes it; anything else (an error
   status, a timeout, a refused connection) schedules a retry with exponential
   backoff; after ``webhook_max_attempts`` it is dropped and logged.
4. Every ``webhook_scan_interval`` seconds, and at start-up, each node compares
   every matching document's head with its cursor and queues what is missing:
   the changes a crash caught inside the debounce window, or that another node
   committed. A document never delivered to a URL is owed a delivery from
   version 0 if it changed after the URL was first subscribed.

A delivery that was POSTed but not yet removed when the process died is sent
again after the restart with the same ``id`` (``Idempotency-Key``): receivers
deduplicate on it. Ranges of one document reach one URL in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import httpx

from tandem.errors import StorageError
from tandem.metrics import Metrics
from tandem.settings import Settings
from tandem.storage.base import Store
from tandem.storage.outbox import Delivery, Outbox
from tandem.tasks import cancel_and_wait
from tandem.webhooks.rules import (
    ATTEMPT_HEADER,
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Debounce,
    Subscription,
    backoff,
    parse_subscriptions,
    payload,
    sign,
)

__all__ = ["WebhookDispatcher"]

logger = logging.getLogger(__name__)

#: Deliveries sent at once by one node.
CONCURRENCY = 16
#: Longest the loop sleeps with nothing due (a safety net; wake-ups are explicit).
MAX_IDLE = 5.0


class WebhookDispatcher:
    """Queues and sends the webhooks ``settings.webhooks`` subscribes to."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        outbox: Outbox,
        metrics: Metrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.subscriptions: tuple[Subscription, ...] = parse_subscriptions(settings.webhooks)
        if self.subscriptions and not settings.webhook_secret:
            raise ValueError("webhooks are configured but webhook_secret is empty")
        self._settings = settings
        self._secret = settings.webhook_secret.encode()
        self._store = store
        self._outbox = outbox
        self._metrics = metrics
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._pending: dict[str, Debounce] = {}
        self._since: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._next_scan = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.subscriptions)

    async def start(self) -> None:
        if not self.enabled:
            return
        now = time.time()
        for url in {s.url for s in self.subscriptions}:
            self._since[url] = await self._outbox.subscribe(url, now)
        self._client = httpx.AsyncClient(
            timeout=self._settings.webhook_timeout, transport=self._transport
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tandem-webhooks")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for sending in list(self._sending):
            sending.cancel()
        if self._sending:
            await asyncio.wait(self._sending)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def changed(self, doc: str, version: int) -> None:
        """``doc`` has a durable op at ``version``: queue a call after the debounce."""
        if not self.enabled or not any(s.matches(doc) for s in self.subscriptions):
            return
        now = time.time()
        pending = self._pending.get(doc)
        if pending is None:
            self._pending[doc] = Debounce(version, version, now, now)
            self._wake.set()
        else:
            pending.changed(version, now)

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                wait = await self._step()
            except (StorageError, OSError) as exc:  # the store is down: try again soon
                logger.warning("webhooks: %s", exc)
                wait = 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, wait))

    async def _step(self) -> float:
        """Queue what is due, send what is due; return how long to sleep."""
        settings = self._settings
        now = time.time()
        if now >= self._next_scan:
            self._next_scan = now + settings.webhook_scan_interval
            await self._scan()
        for doc, pending in list(self._pending.items()):
            if pending.due_at(settings.webhook_debounce, settings.webhook_max_debounce) <= now:
                del self._pending[doc]
                await self._queue(doc, pending.first_version - 1, pending.last_version)
        free = CONCURRENCY - len(self._sending)
        if free > 0:
            lease = settings.webhook_timeout + 5.0
            for delivery in await self._outbox.claim(now, lease, free):
                task = asyncio.get_running_loop().create_task(self._send(delivery))
                self._sending.add(task)
                task.add_done_callback(self._sent)
        wake_at = [self._next_scan]
        wake_at += [
            p.due_at(settings.webhook_debounce, settings.webhook_max_debounce)
            for p in self._pending.values()
        ]
        if len(self._sending) < CONCURRENCY and (due := await self._outbox.next_due()) is not None:
            wake_at.append(due)
        return min(min(wake_at) - time.time(), MAX_IDLE)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("webhooks: sending failed", exc_info=exc)

    # -- queuing --------------------------------------------------------------------------

    async def _queue(self, doc: str, first_seen: int, head: int) -> None:
        """Queue ``doc`` up to ``head`` for every matching URL, from its cursor on."""
        for url in {s.url for s in self.subscriptions if s.matches(doc)}:
            cursors = await self._outbox.cursors(url)
            cursor = cursors.get(doc)
            start = max(first_seen, 0) if cursor is None else cursor
            if head > start:
                await self._enqueue(url, doc, start, head, cursor)

    async def _scan(self) -> None:
        """Queue every change the cursors do not cover yet (see the module docstring, 4)."""
        documents = await self._store.list_documents()
        for url in {s.url for s in self.subscriptions}:
            subscribed = [s for s in self.subscriptions if s.url == url]
            cursors = await self._outbox.cursors(url)
            for info in documents:
                if not any(s.matches(info.doc) for s in subscribed):
                    continue
                cursor = cursors.get(info.doc)
                if cursor is None and info.updated < self._since[url]:
                    continue  # unchanged since the URL was subscribed: nothing owed
                start = cursor or 0
                if info.version > start and info.doc not in self._pending:
                    await self._enqueue(url, info.doc, start, info.version, cursor)

    async def _enqueue(self, url: str, doc: str, start: int, head: int, cursor: int | None) -> None:
        now = time.time()
        delivery = Delivery(secrets.token_hex(16), url, doc, start, head, 0, now, now)
        if await self._outbox.enqueue(delivery, cursor):
            self._wake.set()
        else:  # another node, or our own scan, moved the cursor first: the scan catches up
            self._next_scan = min(self._next_scan, now + 1.0)

    # -- sending --------------------------------------------------------------------------

    async def _send(self, delivery: Delivery) -> None:
        settings = self._settings
        d = delivery
        ops: list[dict[str, Any]] | None = None
        if d.to_version - d.from_version <= settings.webhook_max_ops:
            records = await self._store.get_ops(d.doc, d.from_version, d.to_version)
            ops = [
                {"v": r.version, "op": r.op.to_json(), "user": r.user, "time": r.time}
                for r in records
            ]
        body = payload(d.id, d.doc, d.from_version, d.to_version, d.created, ops)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Tandem-Webhooks",
            ID_HEADER: d.id,
            "Idempotency-Key": d.id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            ATTEMPT_HEADER: str(d.attempts + 1),
        }
        if self._client is None:
            return
        try:
            response = await self._client.post(d.url, content=body, headers=headers)
            ok, why = response.is_success, f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok, why = False, type(exc).__name__
        if ok:
            await self._outbox.finish(d.id)
            self._metrics.webhook("delivered")
            return
        attempts = d.attempts + 1
        if attempts >= settings.webhook_max_attempts:
            await self._outbox.finish(d.id)
            self._metrics.webhook("dropped")
            logger.error(
                "webhook to %s for %r (versions %d-%d) dropped after %d attempts (%s)",
                d.url,
                d.doc,
                d.from_version + 1,
                d.to_version,
                attempts,
                why,
            )
            return
        delay = backoff(attempts, settings.webhook_retry_base, settings.webhook_retry_max)
        await self._outbox.retry(d.id, attempts, time.time() + delay)
        self._metrics.webhook("retried")
        logger.warning(
            "webhook to %s for %r failed (%s); attempt %d in %.1f s",
            d.url,
            d.doc,
            why,
            attempts + 1,
            delay,
        )
