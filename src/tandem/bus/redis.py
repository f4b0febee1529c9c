"""``RedisBus``: the bus between several nodes, over Redis pub/sub (redis-py asyncio).

Owns two things per bus: one dedicated pub/sub connection, read by a single
reader task that dispatches each message to this node's handlers by channel
(through a ``Fanout``), and a small client pool for ``PUBLISH``. When the
pub/sub connection drops, the reader reconnects with jittered exponential
backoff and re-subscribes every channel that still has a handler; an idle
connection is probed with ``PING`` so a silently dead one is noticed too.
Messages published while it is down are lost for this node (the bus is
at-most-once; clients catch up from the store).

A node's own subscribers get its messages directly, without the Redis round
trip: they stay fast, and keep working while Redis is away. On the wire a
message is ``origin (8 random bytes per bus) + payload``, so the reader can skip
the echo of its own publishes. Channel ``c`` is the Redis channel
``<prefix>c``; the prefix (default ``tandem:``, or ``?prefix=`` in the URL) lets
several deployments share one Redis.

Imports asyncio and redis; never storage, FastAPI or ``documents``. The URL is
never logged (it may hold a password).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import deque
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tandem.bus.base import Handler, Subscription
from tandem.bus.fanout import DEFAULT_MAX_PENDING, Fanout
from tandem.tasks import cancel_and_wait

__all__ = ["DEFAULT_PREFIX", "RedisBus"]

logger = logging.getLogger("tandem.bus")

DEFAULT_PREFIX = "tandem:"
ORIGIN_BYTES = 8
_CONNECT_TIMEOUT = 5.0


class RedisBus:
    """``Bus`` over Redis pub/sub; one instance per node.

    ``open()`` connects and raises if Redis cannot be reached (a wrong URL
    fails at start-up, not later); after that, outages are ridden out by
    reconnecting. ``subscribe`` returns once Redis has confirmed the channel
    (or at once while disconnected: the channel is subscribed on reconnect).
    ``publish`` never raises for a Redis failure: it logs and drops, as the
    contract allows. Using the bus before ``open()`` or after ``close()``
    raises ``RuntimeError``.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        health_check_interval: float = 15.0,
        backoff: tuple[float, float] = (0.05, 5.0),
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._url, url_prefix = _split_prefix(url)
        self.prefix = prefix if prefix is not None else url_prefix or DEFAULT_PREFIX
        self._prefix = self.prefix.encode()
        self._health_check_interval = health_check_interval
        self._backoff = backoff
        self._fanout = Fanout(max_pending=max_pending)
        self._origin = os.urandom(ORIGIN_BYTES)
        self._state = "new"
        self._client: Redis | None = None
        self._factory: ConnectionPool | None = None  # makes pub/sub connections
        self._conn: AbstractConnection | None = None  # the live pub/sub connection, if any
        self._reader: asyncio.Task[None] | None = None
        # channel → one future per SUBSCRIBE sent and not yet confirmed, oldest first
        self._confirmations: dict[str, deque[asyncio.Future[None]]] = {}
        self._publish_failing = False

    def __repr__(self) -> str:
        return f"RedisBus(prefix={self.prefix!r}, {self._state})"

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up and the last publish reached Redis.

        ``publish`` never raises for a Redis failure, so a health check should read this.
        """
        conn = self._conn
        return conn is not None and conn.is_connected and not self._publish_failing

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the publish client and the pub/sub connection. Idempotent."""
        if self._state == "open":
            return
        if self._state == "closed":
            raise RuntimeError("RedisBus is closed; create a new one")
        client = Redis.from_url(
            self._url, socket_connect_timeout=_CONNECT_TIMEOUT, socket_timeout=_CONNECT_TIMEOUT
        )
        # The pub/sub connection speaks RESP2: its replies stay plain arrays for
        # read_response, where under RESP3 they are push frames that redis-py also
        # formats into a debug log line, message by message.
        factory = ConnectionPool.from_url(
            self._url,
            protocol=2,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            socket_timeout=_CONNECT_TIMEOUT,
        )
        conn = _pubsub_connection(factory)
        try:
            await _connect(conn)
        except BaseException:
            await conn.disconnect()
            await client.aclose()
            raise
        self._client = client
        self._factory = factory
        self._conn = conn  # live at once: a subscribe() right after open() uses it
        self._state = "open"
        self._reader = asyncio.get_running_loop().create_task(
            self._read_forever(conn), name=f"tandem-bus-reader:{self.prefix}"
        )

    async def close(self) -> None:
        """Stop the reader, drop every subscription, close both connections. Idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        reader, self._reader = self._reader, None
        await cancel_and_wait(reader)
        conn, self._conn = self._conn, None
        if conn is not None:  # the reader was cancelled before it started
            await _drop(conn)
        await self._fanout.close()
        self._release_confirmations()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _check_open(self, action: str) -> None:
        if self._state != "open":
            raise RuntimeError(f"RedisBus.{action} on a {self._state} bus")

    # -- publish / subscribe -----------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> None:
        """Deliver to this node's subscribers now, then ``PUBLISH`` for the other nodes."""
        self._check_open("publish")
        assert self._client is not None
        self._fanout.deliver(channel, message)
        await self._to_redis(self._client.publish(self._key(channel), self._origin + message))

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """``publish`` each ``(channel, message)`` in order, in one round trip (a pipeline)."""
        self._check_open("publish")
        assert self._client is not None
        for channel, message in messages:
            self._fanout.deliver(channel, message)
        pipe = self._client.pipeline(transaction=False)
        for channel, message in messages:
            pipe.publish(self._key(channel), self._origin + message)
        await self._to_redis(pipe.execute())

    async def _to_redis(self, sending: Awaitable[object]) -> None:
        """Await one publish (or pipeline) to Redis; a failure drops it and is logged once."""
        try:
            await sending
        except (RedisError, OSError) as exc:
            if not self._publish_failing:
                self._publish_failing = True
                logger.warning("bus: publishing to Redis failed (%s); dropping messages", exc)
            return
        if self._publish_failing:
            self._publish_failing = False
            logger.info("bus: publishing to Redis works again")

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
        conn = self._conn
        if conn is None or not conn.is_connected:
            return  # the reader subscribes every channel when it reconnects
        if command == "SUBSCRIBE":
            loop = asyncio.get_running_loop()
            for channel in channels:
                self._confirmations.setdefault(channel, deque()).append(loop.create_future())
        try:
            await conn.send_command(command, *(self._key(c) for c in channels))
        except (RedisError, OSError) as exc:
            # The reader sees the same failure, reconnects and re-subscribes.
            logger.debug("bus: %s failed (%s)", command, exc)

    def _key(self, channel: str) -> bytes:
        return self._prefix + channel.encode()

    # -- the reader --------------------------------------------------------------------

    async def _read_forever(self, conn: AbstractConnection | None) -> None:
        """Serve the pub/sub connection; on loss, reconnect with backoff, forever."""
        low, high = self._backoff
        delay = low
        resubscribe = False  # the connection from open() has no channels yet
        while True:
            if conn is None:
                conn = _pubsub_connection(self._factory)
                try:
                    await _connect(conn)
                except BaseException as exc:
                    await _drop(conn)
                    if not isinstance(exc, RedisError | OSError):
                        raise
                    conn = None
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
                await self._serve(conn, resubscribe=resubscribe)
            except (RedisError, OSError) as exc:
                logger.warning("bus: lost the Redis pub/sub connection (%s); reconnecting", exc)
            except Exception:  # a bug must not silently end this node's subscriptions
                logger.exception("bus: Redis reader failed; reconnecting")
            finally:
                self._release_confirmations()
                await _drop(conn)
                self._conn = None
            conn, resubscribe = None, True
            await asyncio.sleep(low * random.uniform(0.5, 1.0))

    async def _serve(self, conn: AbstractConnection, *, resubscribe: bool) -> None:
        if resubscribe:
            # No await between reading the channel list and publishing the connection:
            # a subscribe() before this point is in the list, one after sends its own.
            channels = self._fanout.channels()
            loop = asyncio.get_running_loop()
            for channel in channels:
                self._confirmations.setdefault(channel, deque()).append(loop.create_future())
            self._conn = conn
            if channels:
                await conn.send_command("SUBSCRIBE", *(self._key(c) for c in channels))
        probing = False
        while True:
            reply = await conn.read_response(timeout=self._health_check_interval, push_request=True)
            if reply is None:  # idle for a whole interval: is the connection alive?
                if probing:
                    raise RedisTimeoutError("no reply to PING")
                await conn.send_command("PING")
                probing = True
                continue
            probing = False
            self._dispatch(reply)

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 2:
            return
        kind = reply[0]
        if kind == b"message" and len(reply) == 3:
            key, data = reply[1], reply[2]
            if len(data) < ORIGIN_BYTES:
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


def _channel(key: bytes, prefix: bytes) -> str | None:
    """The channel name in a Redis channel ``key``; None if it is not one of ours."""
    if not key.startswith(prefix):
        return None
    try:
        return key[len(prefix) :].decode()
    except UnicodeDecodeError:
        return None


def _pubsub_connection(factory: ConnectionPool | None) -> AbstractConnection:
    """A new connection from ``factory``'s settings (the pool itself never hands out any)."""
    if factory is None:
        raise RuntimeError("RedisBus is not open")
    return factory.connection_class(**factory.connection_kwargs)


async def _connect(conn: AbstractConnection) -> None:
    await conn.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py


async def _drop(conn: AbstractConnection) -> None:
    with contextlib.suppress(RedisError, OSError):
        await conn.disconnect()


def _split_prefix(url: str) -> tuple[str, str]:
    """Take Tandem's own ``prefix`` query parameter out of a Redis URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for name, value in query if name == "prefix"), "")
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix
