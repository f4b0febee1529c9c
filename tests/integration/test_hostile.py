"""Hostile input on /collab: every case gets a clear error, the document is unchanged,
and the server (and, where documented, the connection) survives.

The corpus of malformed messages lives in ``tests/hostile/collab_corpus.jsonl``:
one JSON object a line, ``{"name", "frame", "code"}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from .harness import RawClient, ServerProcess, doc_state, token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

CORPUS = [
    json.loads(line)
    for line in (Path(__file__).parents[1] / "hostile" / "collab_corpus.jsonl")
    .read_text()
    .splitlines()
    if line.strip()
]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("hostile"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def victim(shared_server: ServerProcess) -> AsyncIterator[tuple[RawClient, dict[str, Any]]]:
    client = await RawClient.connect(shared_server, f"token={token('mallory')}&doc=victim")
    snapshot = await client.expect("snapshot")
    if snapshot["v"] == 0:
        await client.send({"type": "insert", "pos": 0, "text": "hello"})
        await client.expect("ack")
    before = await doc_state(shared_server, "victim")
    try:
        yield client, before
    finally:
        await client.close()


async def assert_alive_and_unchanged(
    server: ServerProcess, client: RawClient | None, before: dict[str, Any]
) -> None:
    if client is not None:
        await client.send({"type": "ping", "id": "still-there"})
        await client.expect("pong", id="still-there")
    after = await doc_state(server, "victim")
    assert after == before


@pytest.mark.parametrize("case", CORPUS, ids=[case["name"] for case in CORPUS])
async def test_malformed_message(
    shared_server: ServerProcess, victim: tuple[RawClient, dict[str, Any]], case: dict[str, str]
) -> None:
    client, before = victim
    await client.send(case["frame"])
    error = await client.expect("error")
    assert error["code"] == case["code"], error
    assert error["message"]
    await assert_alive_and_unchanged(shared_server, client, before)


async def test_binary_frame_is_refused(
    shared_server: ServerProcess, victim: tuple[RawClient, dict[str, Any]]
) -> None:
    client, before = victim
    await client.ws.send(b"\x00\x01\xff\xfe binary")
    assert (await client.expect("error"))["code"] == "ERR_BAD_MESSAGE"
    await assert_alive_and_unchanged(shared_server, client, before)


async def test_deeply_nested_json(
    shared_server: ServerProcess, victim: tuple[RawClient, dict[str, Any]]
) -> None:
    client, before = victim
    await client.send('{"type": "op", "op": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert (await client.expect("error"))["code"] == "ERR_BAD_MESSAGE"
    await assert_alive_and_unchanged(shared_server, client, before)


async def test_ten_megabyte_frame_closes_with_1009(
    shared_server: ServerProcess, victim: tuple[RawClient, dict[str, Any]]
) -> None:
    client, before = victim
    huge = json.dumps({"type": "insert", "pos": 0, "text": "x" * (10 << 20)})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.send(huge)
        await client.next()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await assert_alive_and_unchanged(shared_server, None, before)


async def test_many_components_are_refused(
    shared_server: ServerProcess, victim: tuple[RawClient, dict[str, Any]]
) -> None:
    client, before = victim
    op = [{"insert": "a", "attributes": {"n": i}} for i in range(10_001)]
    await client.send({"type": "op", "op": op})
    assert (await client.expect("error"))["code"] == "ERR_INVALID_OP"
    await assert_alive_and_unchanged(shared_server, client, before)


async def test_a_flood_is_rate_limited_and_the_connection_survives(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "flood",
        env={"TANDEM_MESSAGE_BURST": "50", "TANDEM_MESSAGES_PER_SECOND": "20"},
    )
    server.start()
    try:
        client = await RawClient.connect(server, f"token={token('flood')}&doc=victim")
        await client.expect("snapshot")
        for _ in range(200):
            await client.send({"type": "ping"})
        codes = []
        for _ in range(200):
            message = await client.next()
            codes.append(message.get("code", message["type"]))
        assert codes.count("pong") <= 51
        assert "ERR_RATE_LIMITED" in codes
        await client.ws.ping()  # the socket is still open
        await client.close()
    finally:
        server.stop()
