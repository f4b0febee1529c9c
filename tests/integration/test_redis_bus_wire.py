"""``RedisBus``'s own wire (``tandem.bus._redis_wire``) against real redis-servers.

The shared Redis (``TANDEM_TEST_REDIS_URL``) for the parsing cases; a
redis-server of the test's own where the test kills, pauses or configures it
(AUTH, a user, a db). What the bus promises here: every complete reply of a
read is returned at once and a reply split over reads is returned whole; an
idle pub/sub connection is probed with PING and a silent server is noticed;
publishes of one loop turn leave in call order, what is queued past the bound
is dropped (newest first) and a failure drops a batch without raising, without
duplicating or reordering anything that does arrive.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tandem.bus._redis_wire import READ_SIZE, Wire
from tandem.bus.redis import RedisBus

from .harness import RedisServer, require_services

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REDIS_URL = os.environ.get("TANDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TIMEOUT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    require_services("redis")
    bus = RedisBus(REDIS_URL)
    await bus.open()
    try:
        assert bus._publish_wire is not None
        # Borrow the bus's idle publish connection, with its publisher stopped.
        assert bus._publisher is not None
        bus._publisher.cancel()
        yield bus._publish_wire
    finally:
        await bus.close()


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


async def test_every_reply_of_one_read_is_returned_at_once(wire: Wire) -> None:
    wire.write(b"".join(command(b"ECHO", b"%d" % i) for i in range(200)))
    await wire.drain()
    await asyncio.sleep(0.1)  # let all 200 replies arrive before the first read
    first = await wire.read(TIMEOUT)
    assert first is not None and len(first) > 1
    replies = list(first)
    while len(replies) < 200:
        more = await wire.read(TIMEOUT)
        assert more is not None
        replies += more
    assert replies == [b"%d" % i for i in range(200)]


async def test_a_reply_split_over_reads_is_returned_whole(wire: Wire) -> None:
    key = f"tandem-test-{uuid.uuid4().hex[:12]}".encode()
    value = os.urandom(READ_SIZE * 16 + 7)
    wire.write(command(b"SET", key, value) + command(b"GET", key) + command(b"DEL", key))
    await wire.drain()
    replies = await wire.read_replies(3, TIMEOUT)
    assert replies == [b"OK", value, 1]


async def test_reading_past_a_closed_connection_raises(wire: Wire) -> None:
    wire.write(command(b"QUIT"))
    await wire.drain()
    assert await wire.read(TIMEOUT) == [b"OK"]
    with pytest.raises(RedisConnectionError):
        await wire.read(TIMEOUT)


async def test_an_idle_read_times_out_with_none(wire: Wire) -> None:
    assert await wire.read(0.05) is None


# -- the bus on a redis-server of the test's own -------------------------------------------


@pytest.fixture
def server() -> Iterator[RedisServer]:
    redis = RedisServer()
    redis.start()
    yield redis
    if redis.process is not None:
        redis.process.send_signal(signal.SIGCONT)
    redis.kill()


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_an_idle_connection_is_probed_and_a_silent_server_noticed(
    server: RedisServer,
) -> None:
    name = f"tandem-test-{uuid.uuid4().hex[:12]}"
    url = f"redis://127.0.0.1:{server.port}/0?client_name={name}"
    node, other = RedisBus(url, health_check_interval=0.2), RedisBus(url)
    admin = Redis.from_url(f"redis://127.0.0.1:{server.port}/0")
    try:
        async with opened(node, other):
            got: list[bytes] = []
            await node.subscribe("doc", got.append)

            async def probed() -> bool:
                clients = await admin.client_list(_type="pubsub")
                return any(c.get("name") == name and c.get("cmd") == "ping" for c in clients)

            with anyio.fail_after(TIMEOUT):
                while not await probed():
                    await asyncio.sleep(0.05)
            assert node.connected
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)  # up, but silent
            await until(lambda: not node.connected)  # no PONG within the interval
            server.process.send_signal(signal.SIGCONT)
            await until(lambda: node.connected)
            with anyio.fail_after(TIMEOUT):
                while not got:  # re-subscribed: publishes reach it again
                    await other.publish("doc", b"again")
                    await asyncio.sleep(0.05)
    finally:
        await admin.aclose()


async def test_publishes_of_one_turn_arrive_in_call_order(server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{server.port}/0"
    publisher, listener = RedisBus(url), RedisBus(url)
    async with opened(publisher, listener):
        got: list[bytes] = []
        await listener.subscribe("doc", got.append)
        await listener.subscribe("other", got.append)
        sent: list[bytes] = []
        for turn in range(20):
            calls = []
            for i in range(50):
                message = b"%d-%d" % (turn, i)
                sent.append(message)
                if i % 5 == 0:
                    calls.append(publisher.publish_many([("other", message)]))
                else:
                    calls.append(publisher.publish("doc", message))
            await asyncio.gather(*calls)  # fifty publishes in one loop turn
        await until(lambda: len(got) == len(sent))
        assert got == sent
        assert publisher.connected


async def test_publishes_past_the_queue_bound_are_dropped_newest_first(
    server: RedisServer,
) -> None:
    url = f"redis://127.0.0.1:{server.port}/0"
    publisher = RedisBus(url, max_queued_bytes=10_000)
    listener = RedisBus(url)
    async with opened(publisher, listener):
        got: list[bytes] = []
        await listener.subscribe("doc", got.append)
        sent = [b"%04d" % i + bytes(96) for i in range(1000)]  # ~100 kB in one turn
        for message in sent:
            await publisher.publish("doc", message)  # never yields: all queued at once
        await publisher.publish("barrier", b"")
        await asyncio.sleep(0.3)
        assert 0 < len(got) < len(sent)
        assert got == sent[: len(got)]  # a prefix: the newest were dropped
        await publisher.publish("doc", b"later")  # the queue drained: taken again
        await until(lambda: got[-1:] == [b"later"])


async def test_a_failed_batch_is_dropped_never_raised_duplicated_or_reordered(
    server: RedisServer,
) -> None:
    url = f"redis://127.0.0.1:{server.port}/0"
    publisher, listener = RedisBus(url), RedisBus(url)
    async with opened(publisher, listener):
        got: list[bytes] = []
        await listener.subscribe("doc", got.append)
        sent: list[bytes] = []

        async def publish(count: int) -> None:
            for _ in range(count):
                message = b"%d" % len(sent)
                sent.append(message)
                await publisher.publish("doc", message)  # never raises
            await asyncio.sleep(0.01)

        await publish(100)
        await until(lambda: len(got) == 100)
        server.kill()
        for _ in range(5):
            await publish(100)  # batches written into a dead connection
        await until(lambda: not publisher.connected)
        server.start()  # same port
        with anyio.fail_after(TIMEOUT):
            while not got or got[-1] != sent[-1]:
                await publish(10)
                await asyncio.sleep(0.05)
        assert publisher.connected
        numbers = [int(m) for m in got]
        assert numbers == sorted(set(numbers))  # no duplicate, no reordering
        await publish(100)
        await until(lambda: got[-1] == sent[-1])
        assert got[-100:] == sent[-100:]


@asynccontextmanager
async def two_buses_talking(url: str, payload: bytes) -> AsyncIterator[tuple[RedisBus, RedisBus]]:
    """Two buses on ``url``, open for the body once the second heard ``payload`` from the first."""
    a, b = RedisBus(url), RedisBus(url)
    async with opened(a, b):
        got: list[bytes] = []
        await b.subscribe("doc", got.append)
        await a.publish("doc", payload)
        await until(lambda: got == [payload])
        yield a, b


@asynccontextmanager
async def opened(*buses: RedisBus) -> AsyncIterator[None]:
    """Open ``buses`` for the body; each one opened is closed after it."""
    async with AsyncExitStack() as stack:
        for bus in buses:
            await bus.open()
            stack.push_async_callback(bus.close)
        yield


async def test_auth_user_and_db_come_from_the_url() -> None:
    redis = RedisServer(
        *("--user", "tandem", "on", ">pw", "~*", "&*", "+@all"), *("--user", "default", "off")
    )
    redis.start()
    try:
        name = f"tandem-test-{uuid.uuid4().hex[:12]}"
        url = f"redis://tandem:pw@127.0.0.1:{redis.port}/5?client_name={name}"
        async with two_buses_talking(url, b"hello"):
            admin = Redis.from_url(f"redis://tandem:pw@127.0.0.1:{redis.port}/0")
            try:
                clients = [c for c in await admin.client_list() if c.get("name") == name]
            finally:
                await admin.aclose()
            assert len(clients) == 4 and {c["db"] for c in clients} == {"5"}
            assert {c["user"] for c in clients} == {"tandem"}
        wrong = RedisBus(f"redis://tandem:nope@127.0.0.1:{redis.port}/0")
        with pytest.raises(Exception, match="(?i)invalid|WRONGPASS|auth"):
            await wrong.open()
        await wrong.close()
    finally:
        redis.kill()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, for a TLS redis-server."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_from_a_rediss_url(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    redis = RedisServer(
        *("--tls-port", "0"),  # replaced below: the port the test picked serves TLS
        *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
        *("--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"),
    )
    # TLS on the picked port, plain TCP off; the start-up probe only needs the port open.
    redis.args[1] = str(redis.port)
    redis.args += ["--port", "0"]
    redis.start()
    try:
        url = f"rediss://127.0.0.1:{redis.port}/0?ssl_ca_certs={cert}"
        async with two_buses_talking(url, b"over tls") as (a, b):
            assert a.connected and b.connected
        plain = RedisBus(f"redis://127.0.0.1:{redis.port}/0")
        with pytest.raises(Exception):  # noqa: B017, PT011 - any failure: it is not TLS
            await plain.open()
        await plain.close()
    finally:
        redis.kill()


async def test_a_unix_socket_url_with_a_db(tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    redis = RedisServer("--unixsocket", str(path))
    redis.start()
    try:
        url = f"unix://{path}?db=3"
        async with two_buses_talking(url, b"over a socket"):
            pass
    finally:
        redis.kill()
