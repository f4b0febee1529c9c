"""Every limit of docs/security.md, enforced on a real server with small values from the
environment: a clear error (or the documented close code), the document unchanged, the
server healthy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from .harness import RawClient, ServerProcess, doc_state, token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LIMITS = {
    "TANDEM_MAX_FRAME_BYTES": "4096",
    "TANDEM_MAX_DOCUMENT_CHARS": "100",
    "TANDEM_MESSAGES_PER_SECOND": "5",
    "TANDEM_MESSAGE_BURST": "20",
    "TANDEM_MAX_CONNECTIONS_PER_USER": "3",
    "TANDEM_MAX_JOINS_PER_CONNECTION": "3",
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("limits"), env=LIMITS)
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def joined(server: ServerProcess, user: str, doc: str) -> RawClient:
    client = await RawClient.connect(server, f"token={token(user)}&doc={doc}")
    await client.expect("snapshot")
    return client


@pytest.fixture
async def seeded(limited: ServerProcess) -> AsyncIterator[tuple[RawClient, dict[str, Any]]]:
    """A writer on a document ``limits`` holding some text, and its state before the test."""
    client = await joined(limited, "owner", "limits")
    if (await doc_state(limited, "limits"))["v"] == 0:
        await client.send({"type": "insert", "pos": 0, "text": "0123456789"})
        await client.expect("ack")
    before = await doc_state(limited, "limits")
    try:
        yield client, before
    finally:
        await client.close()


async def assert_healthy(server: ServerProcess, doc: str, before: dict[str, Any]) -> None:
    """The document is unchanged and a new client can connect, join and be answered."""
    assert await doc_state(server, doc) == before
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.url + "/healthz")).status_code == 200
    probe = await joined(server, "probe", doc)
    await probe.send({"type": "ping", "id": 1})
    await probe.expect("pong", id=1)
    await probe.close()


async def closed_with(client: RawClient) -> int:
    """Read until the server closes; the close code."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        for _ in range(1000):
            await client.next()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


# -- frame size ---------------------------------------------------------------------------------


async def test_a_frame_over_the_limit_gets_an_error_then_1009(
    limited: ServerProcess, seeded: tuple[RawClient, dict[str, Any]]
) -> None:
    _, before = seeded
    client = await joined(limited, "big", "limits")
    await client.send({"type": "insert", "pos": 0, "text": "x" * 4500})  # under uvicorn's cap
    error = await client.expect("error")
    assert error["code"] == "ERR_FRAME_TOO_LARGE" and "4096" in error["message"]
    assert await closed_with(client) == 1009
    await assert_healthy(limited, "limits", before)


async def test_a_frame_far_over_the_limit_is_closed_by_the_websocket_layer(
    limited: ServerProcess, seeded: tuple[RawClient, dict[str, Any]]
) -> None:
    _, before = seeded
    client = await joined(limited, "huge", "limits")
    await client.send({"type": "insert", "pos": 0, "text": "x" * 200_000})
    assert await closed_with(client) == 1009
    await assert_healthy(limited, "limits", before)


async def test_the_frame_limit_counts_bytes_not_characters(
    limited: ServerProcess, seeded: tuple[RawClient, dict[str, Any]]
) -> None:
    # 1,100 four-byte characters: 1,100 code points, 4,400+ bytes (under uvicorn's cap of
    # max_frame_bytes + 1024, so it reaches the parser, which must count bytes).
    _, before = seeded
    client = await joined(limited, "wide", "limits")
    await client.send({"type": "insert", "pos": 0, "text": "😀" * 1_100})
    error = await client.expect("error")
    assert error["code"] == "ERR_FRAME_TOO_LARGE"
    assert await closed_with(client) == 1009
    await assert_healthy(limited, "limits", before)


# -- document size ------------------------------------------------------------------------------


async def test_an_op_that_grows_the_document_past_its_limit_is_refused(
    limited: ServerProcess,
) -> None:
    client = await joined(limited, "grower", "small-doc")
    await client.send({"type": "insert", "pos": 0, "text": "a" * 90, "seq": 1})
    await client.expect("ack", seq=1)
    before = await doc_state(limited, "small-doc")
    await client.send({"type": "insert", "pos": 0, "text": "b" * 11, "seq": 2, "ref": "r2"})
    error = await client.expect("error")
    assert error["code"] == "ERR_DOC_TOO_LARGE" and error["seq"] == 2 and error["ref"] == "r2"
    assert "100" in error["message"]
    await assert_healthy(limited, "small-doc", before)
    # Up to the limit is fine, and so is shrinking.
    await client.send({"type": "insert", "pos": 0, "text": "c" * 10, "seq": 3})
    await client.expect("ack", seq=3)
    await client.send({"type": "delete", "pos": 0, "length": 10, "seq": 4})
    await client.expect("ack", seq=4)
    assert (await doc_state(limited, "small-doc"))["text"] == "a" * 90
    await client.close()


# -- rate ---------------------------------------------------------------------------------------


async def test_a_burst_over_the_rate_is_dropped_with_an_error_and_nothing_half_applied(
    limited: ServerProcess,
) -> None:
    client = await joined(limited, "typist", "rated")
    letters = [chr(0x4E00 + i) for i in range(60)]
    for seq, letter in enumerate(letters, 1):
        await client.send({"type": "insert", "pos": 0, "text": letter, "seq": seq})
    acked, limited_count = set(), 0
    while len(acked) + limited_count < len(letters):
        message = await client.next()
        if message["type"] == "ack":
            acked.add(message["seq"])
        elif message["type"] == "error":
            assert message["code"] == "ERR_RATE_LIMITED", message
            limited_count += 1
    assert 15 <= len(acked) <= 40 and limited_count >= 20  # burst 20 + 5/s
    text = (await doc_state(limited, "rated"))["text"]
    assert sorted(text) == sorted(letters[seq - 1] for seq in acked)  # exactly the acked ones
    # The connection survives and recovers once the bucket refills.
    await client.ws.ping()
    for _ in range(100):
        await client.send({"type": "ping", "id": "later"})
        reply = await client.next()
        if reply["type"] == "pong":
            break
        assert reply["code"] == "ERR_RATE_LIMITED"
        await asyncio.sleep(0.1)  # bounded: the bucket refills at 5 per second
    else:
        raise AssertionError("still rate limited after 10 s")
    await client.close()


# -- connections per user / per IP --------------------------------------------------------------


async def test_connections_per_user_are_capped_with_4429(limited: ServerProcess) -> None:
    before = await doc_state(limited, "conns")
    first = [await joined(limited, "many", "conns") for _ in range(3)]
    extra = await RawClient.connect(limited, f"token={token('many')}&doc=conns")
    error = await extra.expect("error")
    assert error["code"] == "ERR_LIMIT_EXCEEDED" and "user" in error["message"]
    assert await closed_with(extra) == 4429
    other_user = await joined(limited, "someone-else", "conns")  # the cap is per user
    await first[0].close()
    # The slot is released when the server notices the close: retry, bounded.
    for _ in range(100):
        again = await RawClient.connect(limited, f"token={token('many')}&doc=conns")
        message = await again.next()
        if message["type"] == "hello":
            await again.expect("snapshot")
            await again.close()
            break
        await again.close()
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the closed connection's slot was never released")
    for client in (*first[1:], other_user):
        await client.close()
    await assert_healthy(limited, "conns", before)


async def test_connections_per_ip_are_capped_with_4429(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "ip", env={"TANDEM_MAX_CONNECTIONS_PER_IP": "4"})
    server.start()
    try:
        clients = [await joined(server, f"user{i}", "ip") for i in range(4)]
        extra = await RawClient.connect(server, f"token={token('user9')}&doc=ip")
        error = await extra.expect("error")
        assert error["code"] == "ERR_LIMIT_EXCEEDED" and "address" in error["message"]
        assert await closed_with(extra) == 4429
        for client in clients:
            await client.close()
        async with httpx.AsyncClient() as http:  # REST is not a WebSocket connection
            assert (await http.get(server.url + "/healthz")).status_code == 200
    finally:
        server.stop()


# -- joins per connection -----------------------------------------------------------------------


async def test_joins_per_connection_are_capped(limited: ServerProcess) -> None:
    client = await RawClient.connect(limited, f"token={token('joiner')}")
    for doc in ("j1", "j2", "j3"):
        await client.send({"type": "join", "doc": doc})
        await client.expect("snapshot", doc=doc)
    await client.send({"type": "join", "doc": "j2"})  # re-joining is not a new join
    await client.expect("snapshot", doc="j2")
    await client.send({"type": "join", "doc": "j4", "ref": "fourth"})
    error = await client.expect("error")
    assert error["code"] == "ERR_LIMIT_EXCEEDED" and error["ref"] == "fourth"
    assert "3" in error["message"]
    await client.close()


async def test_a_refused_join_keeps_the_connection_open(limited: ServerProcess) -> None:
    client = await RawClient.connect(limited, f"token={token('joiner2')}")
    for doc in ("k1", "k2", "k3", "k4"):
        await client.send({"type": "join", "doc": doc})
    for doc in ("k1", "k2", "k3"):
        await client.expect("snapshot", doc=doc)
    assert (await client.expect("error"))["code"] == "ERR_LIMIT_EXCEEDED"
    await client.send({"type": "leave", "doc": "k1"})
    await client.send({"type": "join", "doc": "k4"})
    await client.expect("snapshot", doc="k4")
    await client.close()
