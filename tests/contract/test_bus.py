"""The Bus contract, run against every backend: LocalBus and RedisBus.

``cluster(n)`` gives the n nodes of one deployment: for the local backend
that is the same bus n times (one process), for Redis n separate ``RedisBus``
instances sharing a channel prefix unique to the test. So every test that
publishes on ``nodes[0]`` and listens on ``nodes[1]`` checks cross-node
delivery for Redis and in-process delivery for local.

Redis is found at ``TANDEM_TEST_REDIS_URL`` or redis://127.0.0.1:6379/0; when
it is unreachable the redis cases skip, or fail when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import anyio
import pytest
from redis.asyncio import Redis

from tandem.bus import Bus, LocalBus, Subscription, open_bus
from tandem.bus.redis import RedisBus

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("TANDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TIMEOUT = 10.0

Cluster = Callable[[int], Awaitable[list[Bus]]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _require_redis() -> None:
    parts = urlsplit(REDIS_URL)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2).close()
    except OSError as exc:
        reason = f"Redis is not reachable at {parts.hostname}:{parts.port} ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires the Redis bus contract to run")
        pytest.skip(f"{reason}; start redis-server to run the Redis bus contract")


@pytest.fixture
def prefix() -> str:
    return f"tandem-test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["local", "redis"])
async def cluster(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Cluster]:
    backend: str = request.param
    if backend == "redis":
        _require_redis()
    opened: list[Bus] = []

    async def make(n: int) -> list[Bus]:
        if backend == "local":
            bus: Bus = LocalBus()
            await bus.open()
            opened.append(bus)
            return [bus] * n
        nodes: list[Bus] = []
        for _ in range(n):
            node = RedisBus(REDIS_URL, prefix=prefix)
            await node.open()
            opened.append(node)
            nodes.append(node)
        return nodes

    yield make
    for bus in opened:
        await bus.close()


@pytest.fixture
async def redis_nodes(prefix: str) -> AsyncIterator[Callable[..., Awaitable[RedisBus]]]:
    """Redis-only tests: make named RedisBus nodes sharing the test's prefix."""
    _require_redis()
    opened: list[RedisBus] = []

    async def make(url: str = REDIS_URL) -> RedisBus:
        node = RedisBus(url, prefix=prefix)
        await node.open()
        opened.append(node)
        return node

    yield make
    for node in opened:
        await node.close()


class Inbox:
    """A handler that records what it gets and lets a test wait for it."""

    def __init__(self, *, asynchronous: bool = False) -> None:
        self.messages: list[bytes] = []
        self.asynchronous = asynchronous
        self._changed = asyncio.Event()

    def handler(self) -> Callable[[bytes], Awaitable[None] | None]:
        if self.asynchronous:

            async def receive_async(message: bytes) -> None:
                await asyncio.sleep(0)  # really yield, like a socket send would
                self._record(message)

            return receive_async
        return self._record

    def _record(self, message: bytes) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[bytes]:
        with anyio.fail_after(timeout):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


async def subscribe(bus: Bus, channel: str, *, asynchronous: bool = False) -> Inbox:
    inbox = Inbox(asynchronous=asynchronous)
    await bus.subscribe(channel, inbox.handler())
    return inbox


HANDLER_KINDS = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])


# -- the contract ------------------------------------------------------------------------


@HANDLER_KINDS
async def test_every_subscriber_gets_every_message(cluster: Cluster, asynchronous: bool) -> None:
    a, b = await cluster(2)
    inboxes = [await subscribe(node, "doc", asynchronous=asynchronous) for node in (a, b, b)]
    await a.publish("doc", b"one")
    await b.publish("doc", b"two")
    for inbox in inboxes:
        assert sorted(await inbox.wait_for(2)) == [b"one", b"two"]


@HANDLER_KINDS
async def test_no_delivery_after_unsubscribe(cluster: Cluster, asynchronous: bool) -> None:
    a, b = await cluster(2)
    gone = Inbox(asynchronous=asynchronous)
    subscription = await b.subscribe("doc", gone.handler())
    stays = await subscribe(b, "doc", asynchronous=asynchronous)
    await a.publish("doc", b"before")
    await gone.wait_for(1)
    await subscription.unsubscribe()
    await subscription.unsubscribe()  # idempotent
    await a.publish("doc", b"after")
    await stays.wait_for(2)  # delivered to the node, so "gone" would have had it by now
    assert gone.messages == [b"before"]


async def test_no_delivery_after_last_subscriber_leaves(cluster: Cluster) -> None:
    a, b = await cluster(2)
    gone = Inbox()
    subscription = await b.subscribe("doc", gone.handler())
    barrier = await subscribe(b, "barrier")
    await subscription.unsubscribe()
    await a.publish("doc", b"after")
    await a.publish("barrier", b"later")  # same publisher: arrives after "after" would
    await barrier.wait_for(1)
    assert gone.messages == []


async def test_resubscribe_after_unsubscribe(cluster: Cluster) -> None:
    a, b = await cluster(2)
    first = await b.subscribe("doc", Inbox().handler())
    await first.unsubscribe()
    again = await subscribe(b, "doc")
    await a.publish("doc", b"x")
    assert await again.wait_for(1) == [b"x"]


async def test_publish_many_keeps_order_across_channels(
    redis_nodes: Callable[..., Awaitable[RedisBus]],
) -> None:
    """``RedisBus.publish_many`` (one pipeline) delivers like as many ``publish`` calls."""
    a, b = await redis_nodes(), await redis_nodes()
    here, there = await subscribe(a, "doc"), await subscribe(b, "doc")
    other = await subscribe(b, "node:x")
    sent = [str(i).encode() for i in range(300)]
    await a.publish_many([("doc" if i % 3 else "node:x", m) for i, m in enumerate(sent)])
    assert await here.wait_for(200) == [m for i, m in enumerate(sent) if i % 3]
    assert await there.wait_for(200) == [m for i, m in enumerate(sent) if i % 3]
    assert await other.wait_for(100) == [m for i, m in enumerate(sent) if not i % 3]


@HANDLER_KINDS
async def test_per_publisher_order(cluster: Cluster, asynchronous: bool) -> None:
    a, b = await cluster(2)
    here = await subscribe(a, "doc", asynchronous=asynchronous)
    there = await subscribe(b, "doc", asynchronous=asynchronous)
    sent = [str(i).encode() for i in range(1000)]
    for message in sent:
        await a.publish("doc", message)
    assert await here.wait_for(1000) == sent
    assert await there.wait_for(1000) == sent


async def test_channel_isolation(cluster: Cluster) -> None:
    a, b = await cluster(2)
    one = await subscribe(b, "doc-1")
    two = await subscribe(b, "doc-10")
    await a.publish("doc-1", b"for one")
    await a.publish("doc-10", b"for ten")
    await a.publish("nobody", b"dropped")
    assert await one.wait_for(1) == [b"for one"]
    assert await two.wait_for(1) == [b"for ten"]
    await a.publish("doc-1", b"barrier")
    await one.wait_for(2)
    assert two.messages == [b"for ten"]


async def test_binary_payloads(cluster: Cluster) -> None:
    a, b = await cluster(2)
    inbox = await subscribe(b, "bin")
    every_byte = bytes(range(256))
    sent = [every_byte, every_byte[::-1], b"", b"\x00", b"\r\n\xff" * 1000]
    sent += [bytes([i]) for i in range(256)]
    for message in sent:
        await a.publish("bin", message)
    assert await inbox.wait_for(len(sent)) == sent


async def test_unicode_channel_names(cluster: Cluster) -> None:
    a, b = await cluster(2)
    inbox = await subscribe(b, "notes/été ✍")
    await a.publish("notes/été ✍", b"ok")
    assert await inbox.wait_for(1) == [b"ok"]


async def test_raising_handlers_do_not_stop_others(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await cluster(2)
    calls: list[bytes] = []

    def bad_sync(message: bytes) -> None:
        calls.append(message)
        raise ValueError("sync boom")

    async def bad_async(message: bytes) -> None:
        raise ValueError("async boom")

    await b.subscribe("doc", bad_sync)
    await b.subscribe("doc", bad_async)
    good_sync = await subscribe(b, "doc")
    good_async = await subscribe(b, "doc", asynchronous=True)
    for i in range(3):
        await a.publish("doc", b"%d" % i)
    assert await good_sync.wait_for(3) == [b"0", b"1", b"2"]
    assert await good_async.wait_for(3) == [b"0", b"1", b"2"]
    assert calls == [b"0", b"1", b"2"]  # the failing handler itself keeps getting messages
    assert "sync boom" in caplog.text


async def test_slow_handler_does_not_block_others(cluster: Cluster) -> None:
    a, b = await cluster(2)
    release = asyncio.Event()
    slow_got: list[bytes] = []

    async def slow(message: bytes) -> None:
        await release.wait()
        slow_got.append(message)

    await b.subscribe("doc", slow)
    fast = await subscribe(b, "doc", asynchronous=True)
    for i in range(50):
        await a.publish("doc", b"%d" % i)
    await fast.wait_for(50)
    assert slow_got == []
    release.set()
    with anyio.fail_after(TIMEOUT):
        while len(slow_got) < 50:
            await asyncio.sleep(0.01)
    assert slow_got == [b"%d" % i for i in range(50)]


async def test_handler_may_unsubscribe_itself(cluster: Cluster) -> None:
    a, b = await cluster(2)
    got: list[bytes] = []
    subscription: Subscription | None = None

    async def once(message: bytes) -> None:
        got.append(message)
        assert subscription is not None
        await subscription.unsubscribe()

    subscription = await b.subscribe("doc", once)
    barrier = await subscribe(b, "doc")
    await a.publish("doc", b"1")
    await barrier.wait_for(1)
    with anyio.fail_after(TIMEOUT):
        while not got:
            await asyncio.sleep(0.01)
    await a.publish("doc", b"2")
    await barrier.wait_for(2)
    assert got == [b"1"]


async def test_lifecycle(cluster: Cluster) -> None:
    (bus,) = await cluster(1)
    await bus.open()  # idempotent
    inbox = await subscribe(bus, "doc")
    await bus.close()
    await bus.close()  # idempotent
    with pytest.raises(RuntimeError):
        await bus.publish("doc", b"x")
    with pytest.raises(RuntimeError):
        await bus.subscribe("doc", inbox.handler())
    assert inbox.messages == []


async def test_close_stops_queued_async_handlers(cluster: Cluster) -> None:
    (bus,) = await cluster(1)
    started = asyncio.Event()

    async def stuck(message: bytes) -> None:
        started.set()
        await asyncio.Event().wait()

    await bus.subscribe("doc", stuck)
    for _ in range(5):
        await bus.publish("doc", b"x")
    with anyio.fail_after(TIMEOUT):
        await started.wait()
    with anyio.fail_after(TIMEOUT):
        await bus.close()  # cancels the stuck handler, drops the rest without warnings


def test_buses_satisfy_the_protocol() -> None:
    assert isinstance(LocalBus(), Bus)
    assert isinstance(RedisBus("redis://127.0.0.1:1/0"), Bus)


def test_open_bus_by_url() -> None:
    assert isinstance(open_bus(""), LocalBus)
    assert isinstance(open_bus("local://"), LocalBus)
    redis_bus = open_bus("redis://127.0.0.1:6379/0?prefix=prod:")
    assert isinstance(redis_bus, RedisBus) and redis_bus.prefix == "prod:"
    assert isinstance(open_bus("rediss://example.com:6380"), RedisBus)
    assert RedisBus("redis://h/0").prefix == "tandem:"
    with pytest.raises(ValueError, match="scheme"):
        open_bus("kafka://broker")


# -- Redis only: several nodes, reconnects ---------------------------------------------


async def test_two_redis_nodes_see_each_other(
    redis_nodes: Callable[..., Awaitable[RedisBus]],
) -> None:
    a, b = await redis_nodes(), await redis_nodes()
    assert a.connected and b.connected
    at_a, at_b = await subscribe(a, "doc"), await subscribe(b, "doc")
    await a.publish("doc", b"from a")
    await b.publish("doc", b"from b")
    assert sorted(await at_a.wait_for(2)) == [b"from a", b"from b"]
    assert sorted(await at_b.wait_for(2)) == [b"from a", b"from b"]


async def test_prefixes_separate_deployments(
    redis_nodes: Callable[..., Awaitable[RedisBus]],
) -> None:
    ours = await redis_nodes()
    theirs = RedisBus(REDIS_URL, prefix=f"other-{uuid.uuid4().hex[:8]}:")
    await theirs.open()
    try:
        spy = await subscribe(theirs, "doc")
        barrier = await subscribe(theirs, "barrier")
        other = await redis_nodes()
        inbox = await subscribe(other, "doc")
        await ours.publish("doc", b"private")
        await inbox.wait_for(1)
        await theirs.publish("barrier", b"x")
        await barrier.wait_for(1)
        assert spy.messages == []
    finally:
        await theirs.close()


async def _pubsub_ids(admin: Redis, name: str) -> set[str]:
    clients = await admin.client_list(_type="pubsub")
    return {str(c["id"]) for c in clients if c.get("name") == name}


async def test_redis_bus_recovers_after_its_connection_is_killed(
    redis_nodes: Callable[..., Awaitable[RedisBus]],
) -> None:
    # Name the victim's connections, so only its pub/sub connection is killed and
    # other suites sharing this Redis are left alone.
    name = f"tandem-test-{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in REDIS_URL else "?"
    victim = await redis_nodes(f"{REDIS_URL}{separator}client_name={name}")
    publisher = await redis_nodes()
    inbox = await subscribe(victim, "doc")
    await publisher.publish("doc", b"before")
    await inbox.wait_for(1)

    admin = Redis.from_url(REDIS_URL)
    try:
        (old_id,) = await _pubsub_ids(admin, name)
        killed = await admin.client_kill_filter(_id=old_id, _type="pubsub")
        assert killed == 1
        # Publish until the victim hears again: it must reconnect and re-subscribe.
        with anyio.fail_after(TIMEOUT):
            probe = 0
            while len(inbox.messages) < 2:
                probe += 1
                await publisher.publish("doc", b"probe")
                with anyio.move_on_after(0.05):
                    await inbox.wait_for(2)
        new_ids = await _pubsub_ids(admin, name)
        assert new_ids and old_id not in new_ids
    finally:
        await admin.aclose()

    after = [b"after-%d" % i for i in range(100)]
    start = len(inbox.messages)
    for message in after:
        await publisher.publish("doc", message)
    assert (await inbox.wait_for(start + 100))[start:] == after


async def test_redis_subscribe_while_disconnected_takes_effect_on_reconnect(
    redis_nodes: Callable[..., Awaitable[RedisBus]],
) -> None:
    name = f"tandem-test-{uuid.uuid4().hex[:12]}"
    victim = await redis_nodes(f"{REDIS_URL}?client_name={name}")
    publisher = await redis_nodes()
    admin = Redis.from_url(REDIS_URL)
    try:
        # Before any subscription the connection is not yet in pub/sub mode. Kill
        # both of the victim's connections (pub/sub and publish).
        clients = await admin.client_list()
        old_ids = {str(c["id"]) for c in clients if c.get("name") == name}
        assert len(old_ids) == 2
        for old_id in old_ids:
            await admin.client_kill_filter(_id=old_id)
    finally:
        await admin.aclose()
    inbox = await subscribe(victim, "doc")  # may land while the reader reconnects
    with anyio.fail_after(TIMEOUT):
        while not inbox.messages:
            await publisher.publish("doc", b"probe")
            with anyio.move_on_after(0.05):
                await inbox.wait_for(1)


async def test_redis_open_fails_loudly_when_unreachable() -> None:
    bus = RedisBus("redis://127.0.0.1:1/0")
    with pytest.raises(Exception, match="(?i)connect"):
        await bus.open()
    assert not bus.connected
    await bus.close()


async def test_redis_reader_survives_foreign_messages(
    redis_nodes: Callable[..., Awaitable[RedisBus]], prefix: str
) -> None:
    node, publisher = await redis_nodes(), await redis_nodes()
    inbox = await subscribe(node, "doc")
    admin = Redis.from_url(REDIS_URL)
    try:
        await admin.publish(f"{prefix}doc", b"short")  # no 8-byte origin: dropped
    finally:
        await admin.aclose()
    await publisher.publish("doc", b"real")
    assert await inbox.wait_for(1) == [b"real"]
