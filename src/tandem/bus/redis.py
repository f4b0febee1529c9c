"""``RedisBus``: the bus between several nodes, over Redis pub/sub.

Owns two connections per bus, both made by redis-py (URL, TLS, AUTH, db) and
then read and written directly through ``tandem.bus._redis_wire.Wire``:

* the pub/sub connection, read by a single reader task that parses every
  complete reply of each socket read at once and dispatches each message to
  this node's handlers by channel (through a ``Fanout``). When it drops, the
  reader reconnects with jittered exponential backoff and re-subscribes every
  channel that still has a handler; an idle connection is probed with ``PING``
  so a silently dead one is noticed too. Messages published while it is down
  are lost for this node (the bus is at-most-once; clients catch up from the
  store).
* the publish connection, written by a single publisher task: every
  ``publish``/``publish_many`` of one event-loop turn is queued and goes out as
  one write of ``PUBLISH`` commands, in call order, and the publisher reads
  their replies before it writes the next batch (what is queued meanwhile goes
  in that next batch). ``publish`` does not wait for Redis: a failure drops the
  batch, is logged, and shows in ``connected``.

A node's own subscribers get its messages directly, without the Redis round
trip: they stay fast, and keep working while Redis is away. On the wire a
message is ``origin (8 random bytes per bus) + payload``, so the reader can skip
the echo of its own publishes. Channel ``c`` is the Redis channel
``<prefix>c``; the prefix (default ``tandem:``, or ``?prefix=`` in the URL) lets
several deployments share one Redis.

Imports asyncio, redis and hiredis; never storage, FastAPI or ``documents``. The
URL is never logged (it may hold a password).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tandem.bus._redis_wire import Wire
from tandem.bus.base import Handler, Subscription
from tandem.bus.fanout import DEFAULT_MAX_PENDING, Fanout
from tandem.tasks import cancel_and_wait

__all__ = ["DEFAULT_PREFIX", "RedisBus"]

logger = logging.getLogger("tandem.bus")

DEFAULT_PREFIX = "tandem:"
ORIGIN_BYTES = 8
_CONNECT_TIMEOUT = 5.0
#: Queued publish bytes above which further publishes are dropped until Redis
#: takes the queue (a slow or hung Redis must not grow a node's memory).
MAX_QUEUED_BYTES = 16 << 20
#: How long ``close`` lets the publisher send what is queued.
_CLOSE_FLUSH_TIMEOUT = 1.0


class RedisBus:
    """``Bus`` over Redis pub/sub; one instance per node.

    ``open()`` connects and raises if Redis cannot be reached (a wrong URL
    fails at start-up, not later); after that, outages are ridden out by
    reconnecting. ``subscribe`` returns once Redis has confirmed the channel
    (or at once while disconnected: the channel is subscribed on reconnect).
    ``publish`` queues the message for the publisher task and returns without
    waiting for Redis; it never raises for a Redis failure: the publisher logs
    and drops, as the contract allows. Using the bus before ``open()`` or after
    ``close()`` raises ``RuntimeError``.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        health_check_interval: float = 15.0,
        backoff: tuple[float, float] = (0.05, 5.0),
        max_pending: int = DEFAULT_MAX_PENDING,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self._url, url_prefix = _split_prefix(url)
        self.prefix = prefix if prefix is not None else url_prefix or DEFAULT_PREFIX
        self._prefix = self.prefix.encode()
        self._health_check_interval = health_check_interval
        self._backoff = backoff
        self._fanout = Fanout(max_pending=max_pending)
        self._origin = os.urandom(ORIGIN_BYTES)
        self._state = "new"
        self._factory: ConnectionPool | None = None  # makes both connections
        self._wire: Wire | None = None  # the live pub/sub connection, if any
        self._reader: asyncio.Task[None] | None = None
        # channel → one future per SUBSCRIBE sent and not yet confirmed, oldest first
        self._confirmations: dict[str, deque[asyncio.Future[None]]] = {}
        # Publishing: PUBLISH commands (already in RESP) queued for the publisher task.
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._max_queued_bytes = max_queued_bytes
        self._outbox_ready = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._publish_wire: Wire | None = None
        self._publish_failing = False
        self._dropping = False  # the outbox is full: publishes are being dropped

    def __repr__(self) -> str:
        return f"RedisBus(prefix={self.prefix!r}, {self._state})"

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up and the last publish reached Redis.

        ``publish`` never raises for a Redis failure, so a health check should read this.
        """
        wire = self._wire
        return wire is not None and wire.is_connected and not self._publish_failing

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the publish and the pub/sub connections. Idempotent."""
        if self._state == "open":
            return
        if self._state == "closed":
            raise RuntimeError("RedisBus is closed; create a new one")
        # RESP2 on both: pub/sub replies stay plain arrays (under RESP3 they are push
        # frames), and the wire's parser reads RESP2.
        factory = ConnectionPool.from_url(
            self._url,
            protocol=2,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            socket_timeout=_CONNECT_TIMEOUT,
        )
        wire = await _open_wire(factory)
        try:
            publish_wire = await _open_wire(factory)
        except BaseException:
            await _drop(wire.conn)
            raise
        self._factory = factory
        self._wire = wire  # live at once: a subscribe() right after open() uses it
        self._publish_wire = publish_wire
        self._state = "open"
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(
            self._read_forever(wire), name=f"tandem-bus-reader:{self.prefix}"
        )
        self._publisher = loop.create_task(
            self._publish_forever(), name=f"tandem-bus-publisher:{self.prefix}"
        )

    async def close(self) -> None:
        """Send what is queued (for up to a second), stop both tasks, drop every
        subscription, close both connections. Idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        publisher, self._publisher = self._publisher, None
        if publisher is not None and self._outbox:
            self._outbox_ready.set()  # the publisher ends once the outbox is sent
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(publisher), _CLOSE_FLUSH_TIMEOUT)
        await cancel_and_wait(publisher)
        reader, self._reader = self._reader, None
        await cancel_and_wait(reader)
        for wire in (self._wire, self._publish_wire):
            if wire is not None:  # the reader was cancelled before it started
                await _drop(wire.conn)
        self._wire = self._publish_wire = None
        self._outbox.clear()
        await self._fanout.close()
        self._release_confirmations()

    def _check_open(self, action: str) -> None:
        if self._state != "open":
            raise RuntimeError(f"RedisBus.{action} on a {self._state} bus")

    # -- publish -----------------------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> None:
        """Deliver to this node's subscribers now; queue ``PUBLISH`` for the other nodes."""
        self._check_open("publish")
        self._fanout.deliver(channel, message)
        self._queue(channel, message)

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """``publish`` each ``(channel, message)`` in order."""
        self._check_open("publish")
        for channel, message in messages:
            self._fanout.deliver(channel, message)
        for channel, message in messages:
            self._queue(channel, message)

    def _queue(self, channel: str, message: bytes) -> None:
        key = self._prefix + channel.encode()
        size = ORIGIN_BYTES + len(message)
        if self._outbox_bytes + size > self._max_queued_bytes:
            if not self._dropping:
                self._dropping = True
                logger.warning("bus: Redis is not taking publishes fast enough; dropping messages")
            return
        command = b"".join(
            (
                b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n" % len(key),
                key,
                b"\r\n$%d\r\n" % size,
                self._origin,
                message,
                b"\r\n",
            )
        )
        self._outbox.append(command)
        self._outbox_bytes += len(command)
        self._outbox_ready.set()

    async def _publish_forever(self) -> None:
        """Send the outbox, one write per batch, one batch at a time, in order."""
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            if not self._outbox:
                continue
            batch, count = b"".join(self._outbox), len(self._outbox)
            self._outbox.clear()
            self._outbox_bytes = 0
            self._dropping = False
            await self._send_batch(batch, count)
            if self._state == "closed" and not self._outbox:
                return

    async def _send_batch(self, batch: bytes, count: int) -> None:
        """Write ``count`` PUBLISH commands and read their replies; a failure drops them
        and is logged once per outage."""
        wire = self._publish_wire
        try:
            if wire is None or not wire.is_connected:
                self._publish_wire = None
                if wire is not None:
                    await _drop(wire.conn)
                wire = await _open_wire(self._factory)
                self._publish_wire = wire
            wire.write(batch)
            if wire.needs_drain():
                await wire.drain()
            replies = await wire.read_replies(count, _CONNECT_TIMEOUT)
            error = next((r for r in replies if isinstance(r, Exception)), None)
            if error is not None:
                raise RedisError(str(error))
        except Exception as exc:  # a bug must not silently end this node's publishing
            if wire is not None:
                # Its replies are out of step with what was sent: start over.
                self._publish_wire = None
                await _drop(wire.conn)
            if not isinstance(exc, RedisError | OSError | TimeoutError):
                logger.exception("bus: Redis publisher failed; dropping messages")
            elif not self._publish_failing:
                logger.warning("bus: publishing to Redis failed (%s); dropping messages", exc)
            self._publish_failing = True
            return
        if self._publish_failing:
            self._publish_failing = False
            logger.info("bus: publishing to Redis works again")

    # -- subscribe ---------------------------------------------------------------------

    async def subscribe(self, channel: str, handler: Handler) -> Subscription:
        """Deliver every later message on ``channel`` to ``handler`` until unsubscribed."""
        self._check_open("subscribe")
        subscription, new = self._fanout.add(channel, handler, on_empty=self._unsubscribe)
        if new:
            await self._send("SUBSCRIBE", channel)
        pending = self._confirmations.get(channel)
        if pending:
            # Wait for Redis to confirm the latest SUBSCRIBE, so a message published
            # after this returns is delivered. Shielded: our cancellation must not
            # cancel a future other subscribers wait on too.
            await asyncio.shield(pending[-1])
        return subscription

    async def _unsubscribe(self, channel: str) -> None:
        if self._state == "open" and not self._fanout.has(channel):
            await self._send("UNSUBSCRIBE", channel)

    async def _send(self, command: str, *channels: str) -> None:
        """Send (UN)SUBSCRIBE on the live pub/sub connection; a no-op while disconnected."""
        wire = self._wire
        if wire is None or not wire.is_connected:
            return  # the reader subscribes every channel when it reconnects
        if command == "SUBSCRIBE":
            loop = asyncio.get_running_loop()
            for channel in channels:
                self._confirmations.setdefault(channel, deque()).append(loop.create_future())
        try:
            _write_command(wire, command, *(self._key(c) for c in channels))
            if wire.needs_drain():
                await wire.drain()
        except (RedisError, OSError) as exc:
            # The reader sees the same failure, reconnects and re-subscribes.
            logger.debug("bus: %s failed (%s)", command, exc)

    def _key(self, channel: str) -> bytes:
        return self._prefix + channel.encode()

    # -- the reader --------------------------------------------------------------------

    async def _read_forever(self, wire: Wire | None) -> None:
        """Serve the pub/sub connection; on loss, reconnect with backoff, forever."""
        low, high = self._backoff
        delay = low
        resubscribe = False  # the connection from open() has no channels yet
        while True:
            if wire is None:
                try:
                    wire = await _open_wire(self._factory)
                except BaseException as exc:
                    if not isinstance(exc, RedisError | OSError):
                        raise
                    # Warn once per outage; the retries of a long one only at debug level.
                    log = logger.warning if delay == low else logger.debug
                    log("bus: reconnecting to Redis failed (%s); retry in %.2fs", exc, delay)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, high)
                    continue
                logger.info("bus: reconnected to Redis")
                # Redis answers again: a publish that failed during the outage must
                # not keep an idle node reported down until its next publish.
                self._publish_failing = False
            delay = low
            try:
                await self._serve(wire, resubscribe=resubscribe)
            except (RedisError, OSError) as exc:
                logger.warning("bus: lost the Redis pub/sub connection (%s); reconnecting", exc)
            except Exception:  # a bug must not silently end this node's subscriptions
                logger.exception("bus: Redis reader failed; reconnecting")
            finally:
                self._release_confirmations()
                await _drop(wire.conn)
                self._wire = None
            wire, resubscribe = None, True
            await asyncio.sleep(low * random.uniform(0.5, 1.0))

    async def _serve(self, wire: Wire, *, resubscribe: bool) -> None:
        if resubscribe:
            # No await between reading the channel list and publishing the connection:
            # a subscribe() before this point is in the list, one after sends its own.
            channels = self._fanout.channels()
            loop = asyncio.get_running_loop()
            for channel in channels:
                self._confirmations.setdefault(channel, deque()).append(loop.create_future())
            self._wire = wire
            if channels:
                _write_command(wire, "SUBSCRIBE", *(self._key(c) for c in channels))
                await wire.drain()
        probing = False
        dispatch = self._dispatch
        while True:
            replies = await wire.read(self._health_check_interval)
            if replies is None:  # idle for a whole interval: is the connection alive?
                if probing:
                    raise RedisTimeoutError("no reply to PING")
                _write_command(wire, "PING")
                probing = True
                continue
            probing = False
            for reply in replies:
                dispatch(reply)

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 2:
            return
        kind = reply[0]
        if kind == b"message" and len(reply) == 3:
            key, data = reply[1], reply[2]
            if not isinstance(data, bytes) or len(data) < ORIGIN_BYTES:
                return
            if data[:ORIGIN_BYTES] == self._origin:
                return  # our own publish: already delivered locally
            channel = _channel(key, self._prefix)
            if channel is not None:
                self._fanout.deliver(channel, data[ORIGIN_BYTES:])
        elif kind == b"subscribe":
            channel = _channel(reply[1], self._prefix)
            if channel is None:
                return
            pending = self._confirmations.get(channel)
            if pending:
                future = pending.popleft()
                if not future.done():
                    future.set_result(None)
                if not pending:
                    del self._confirmations[channel]

    def _release_confirmations(self) -> None:
        """Let every waiting ``subscribe`` return: its SUBSCRIBE will never be confirmed."""
        for pending in self._confirmations.values():
            for future in pending:
                if not future.done():
                    future.set_result(None)
        self._confirmations.clear()


def _channel(key: Any, prefix: bytes) -> str | None:
    """The channel name in a Redis channel ``key``; None if it is not one of ours."""
    if not isinstance(key, bytes) or not key.startswith(prefix):
        return None
    try:
        return key[len(prefix) :].decode()
    except UnicodeDecodeError:
        return None


def _write_command(wire: Wire, *args: str | bytes) -> None:
    wire.write(b"".join(wire.conn.pack_command(*args)))


async def _open_wire(factory: ConnectionPool | None) -> Wire:
    """A new connection from ``factory``'s settings (the pool itself never hands out
    any), connected and wrapped; on any failure it is dropped and the error raised."""
    if factory is None:
        raise RuntimeError("RedisBus is not open")
    conn: AbstractConnection = factory.connection_class(**factory.connection_kwargs)
    try:
        await conn.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
        return Wire(conn)
    except BaseException:
        await _drop(conn)
        raise


async def _drop(conn: AbstractConnection) -> None:
    with contextlib.suppress(RedisError, OSError):
        await conn.disconnect()


def _split_prefix(url: str) -> tuple[str, str]:
    """Take Tandem's own ``prefix`` query parameter out of a Redis URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for name, value in query if name == "prefix"), "")
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    rebuilt = urlunsplit(parts._replace(query=rest))
    scheme = f"{parts.scheme}:"
    if not parts.netloc and url.startswith(f"{scheme}//") and not rebuilt.startswith(f"{scheme}//"):
        # ``unix:///path``: urlunsplit drops the empty authority, redis-py needs it back
        rebuilt = f"{scheme}//{rebuilt[len(scheme) :]}"
    return rebuilt, prefix
