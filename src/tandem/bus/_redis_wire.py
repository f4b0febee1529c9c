"""The one place Tandem reaches into redis-py's private internals (``RedisBus``'s wire).

redis-py makes and closes ``RedisBus``'s two connections: it resolves the URL,
opens TCP or TLS (``rediss://``), sends AUTH (username/password), SELECT (the
db) and CLIENT SETNAME. After that the bus reads and writes the connection's
stream itself, through ``Wire`` below: redis-py's ``read_response`` costs one
coroutine and one timeout context per reply, where a pub/sub connection under
load has dozens of replies buffered per socket read; ``Wire`` parses every
complete reply of a read with one ``hiredis.Reader`` (public API) in one go.

What is private here, and verified against redis 8.2 and hiredis 3.5 (pyproject
pins that range): a connected ``redis.asyncio.connection.AbstractConnection``
keeps its ``asyncio.StreamReader`` in ``_reader`` and its ``StreamWriter`` in
``_writer``, and has read every reply of its connect handshake (nothing is left
in its own parser's buffer). Nothing else in Tandem may use redis-py internals.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["READ_SIZE", "Wire"]

#: Bytes asked of the socket per read.
READ_SIZE = 65536
#: Unsent bytes above which ``write`` waits for the socket (bounds this node's memory).
HIGH_WATER = 1 << 20


class Wire:
    """Raw RESP over a connected redis-py connection: batched writes, batched replies."""

    def __init__(self, conn: AbstractConnection) -> None:
        reader = getattr(conn, "_reader", None)
        writer = getattr(conn, "_writer", None)
        if not isinstance(reader, asyncio.StreamReader) or not isinstance(
            writer, asyncio.StreamWriter
        ):
            raise RuntimeError("redis-py connection internals changed: see tandem.bus._redis_wire")
        self.conn = conn
        self._stream = reader
        self._writer = writer
        # Replies as redis-py's RESP2 parser returns them: bytes, ints, lists; an
        # error reply is a ``hiredis.ReplyError`` value, not raised.
        self._parser = hiredis.Reader()

    @property
    def is_connected(self) -> bool:
        return self.conn.is_connected and not self._writer.is_closing()

    def write(self, data: bytes) -> None:
        """Queue ``data`` on the socket now (no await); raises if the connection is gone."""
        if self._writer.is_closing():
            raise RedisConnectionError("Redis connection closed")
        self._writer.write(data)

    def needs_drain(self) -> bool:
        return self._writer.transport.get_write_buffer_size() > HIGH_WATER

    async def drain(self) -> None:
        await self._writer.drain()

    def buffered(self) -> list[Any]:
        """Every complete reply already read and not yet returned, oldest first."""
        replies: list[Any] = []
        gets = self._parser.gets
        while (reply := gets()) is not False:
            replies.append(reply)
        return replies

    async def read(self, timeout: float) -> list[Any] | None:
        """Every complete reply the next socket read completes (at least one).

        None if nothing at all arrived within ``timeout`` seconds; raises
        ``redis.exceptions.ConnectionError`` when the server closed the connection.
        """
        replies = self.buffered()
        if replies:
            return replies
        timer = asyncio.timeout(timeout)
        try:
            async with timer:
                while True:
                    await self._feed()
                    replies = self.buffered()
                    if replies:
                        return replies
                    # Part of a reply only: read on, under the same deadline.
        except TimeoutError:
            if timer.expired():
                return None
            raise

    async def read_replies(self, count: int, timeout: float) -> list[Any]:
        """Exactly the next ``count`` replies; raises ``TimeoutError`` past ``timeout``."""
        replies = self.buffered()
        if len(replies) >= count:
            return replies
        async with asyncio.timeout(timeout):
            while len(replies) < count:
                await self._feed()
                replies.extend(self.buffered())
        return replies

    async def _feed(self) -> None:
        """One socket read into the parser; raises if the server closed the connection."""
        data = await self._stream.read(READ_SIZE)
        if not data:
            raise RedisConnectionError("Redis closed the connection")
        self._parser.feed(data)
