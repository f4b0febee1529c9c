"""``CollabProtocol``: ``/collab`` served without ASGI, on a real uvicorn in this process.

``tandem serve`` runs exactly this (``ws=CollabServer(tandem)``); the integration
suite covers the wire protocol end to end, these tests the protocol's own duties:
ordering when a message's handling suspends, the hand-over of other paths to
uvicorn, control frames, fragments, refusals, token expiry and shutdown. Plus
``run_eagerly``, which runs a handler without a task until it suspends.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import websockets
from fastapi import FastAPI, WebSocket

from tandem import Settings
from tandem.server.app import Tandem
from tandem.server.eager import run_eagerly
from tandem.server.uvicorn_glue import CollabServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Running:
    def __init__(self, tandem: Tandem, server: uvicorn.Server, host: str) -> None:
        self.tandem, self.server, self.host = tandem, server, host

    def url(self, query: str = "", path: str = "/collab") -> str:
        return f"ws://{self.host}{path}?{query}"

    def token(self, **kw: Any) -> str:
        return self.tandem.authenticator.issue("u", docs={"*": "write"}, now=time.time(), **kw)


@asynccontextmanager
async def running(tmp_path: Path, **settings: Any) -> AsyncIterator[Running]:
    tandem = Tandem(
        Settings(data_dir=tmp_path, jwt_secret="protocol-secret-0123456789abcdef", **settings)
    )
    app = FastAPI(lifespan=tandem.lifespan)
    app.include_router(tandem.router)

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("echo:" + await websocket.receive_text())
        await websocket.close()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        port=port,
        log_level="warning",
        lifespan="on",
        ws=CollabServer(tandem),  # type: ignore[arg-type]  # uvicorn calls it like a class
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield Running(tandem, server, f"127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await task


async def receive(ws: Any, kind: str) -> dict[str, Any]:
    """The next message of ``kind``; server batches are unpacked, the rest kept for later."""
    pending: list[dict[str, Any]] = ws.__dict__.setdefault("pending", [])
    while True:
        while pending:
            message = pending.pop(0)
            if message["type"] == kind:
                return message
            assert message["type"] != "error", message
        data = orjson.loads(await ws.recv())
        pending.extend(data if isinstance(data, list) else [data])


async def test_messages_after_a_suspended_one_wait_their_turn(tmp_path: Path) -> None:
    async with (
        running(tmp_path) as server,
        websockets.connect(server.url(f"token={server.token()}")) as ws,
    ):
        await receive(ws, "hello")
        # The join loads the document (it suspends); the op right behind it must see it.
        await ws.send(orjson.dumps({"type": "join", "doc": "d"}).decode())
        await ws.send(orjson.dumps({"type": "insert", "doc": "d", "pos": 0, "text": "x"}).decode())
        await ws.send(orjson.dumps({"type": "ping", "id": 1}).decode())
        assert (await receive(ws, "snapshot"))["v"] == 0
        pending: list[dict[str, Any]] = ws.__dict__["pending"]
        while {"ack", "pong"} - {message["type"] for message in pending}:
            data = orjson.loads(await ws.recv())  # the ack waits for the commit: any order
            pending.extend(data if isinstance(data, list) else [data])
        assert (await receive(ws, "ack"))["v"] == 1


async def test_other_paths_are_handed_to_uvicorn(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        async with websockets.connect(server.url(path="/echo")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
        async with httpx.AsyncClient(base_url=f"http://{server.host}") as http:
            assert (await http.get("/healthz")).status_code == 200
        assert len(server.server.server_state.connections) <= 1


async def test_control_frames_and_fragments(tmp_path: Path) -> None:
    async with (
        running(tmp_path) as server,
        websockets.connect(server.url(f"token={server.token()}&doc=f")) as ws,
    ):
        await receive(ws, "snapshot")
        latency = await ws.ping()  # answered by the protocol
        await asyncio.wait_for(latency, 5)
        await ws.send(iter(['{"type": "pi', 'ng", "id": "fragmented"}']))
        assert (await receive(ws, "pong"))["id"] == "fragmented"
        await ws.send(b"\x00binary")
        data = orjson.loads(await ws.recv())
        error = data[0] if isinstance(data, list) else data
        assert error["code"] == "ERR_BAD_MESSAGE"


async def test_a_socket_without_a_token_is_told_why_and_closed_with_4401(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as server, websockets.connect(server.url()) as ws:
        error = orjson.loads(await ws.recv())
        assert error["type"] == "error" and error["code"].startswith("ERR_")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert server.tandem.connections.users == {}


async def test_the_per_ip_cap_counts_the_address_a_trusted_proxy_forwarded(
    tmp_path: Path,
) -> None:
    async with running(
        tmp_path, max_connections_per_ip=1, trusted_proxies=("127.0.0.0/8",)
    ) as server:
        url = server.url(f"token={server.token()}")
        first = await websockets.connect(url, additional_headers={"X-Forwarded-For": "10.0.0.1"})
        second = await websockets.connect(url, additional_headers={"X-Forwarded-For": "10.0.0.2"})
        await receive(first, "hello")
        await receive(second, "hello")
        again = await websockets.connect(url, additional_headers={"X-Forwarded-For": "10.0.0.1"})
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await again.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        assert server.tandem.connections.ips == {"10.0.0.1": 1, "10.0.0.2": 1}
        await first.close()
        await second.close()


async def test_forwarded_headers_from_an_untrusted_peer_are_not_believed(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, max_connections_per_ip=1) as server:
        url = server.url(f"token={server.token()}")
        first = await websockets.connect(url, additional_headers={"X-Forwarded-For": "10.0.0.1"})
        await receive(first, "hello")
        assert server.tandem.connections.ips == {"127.0.0.1": 1}
        again = await websockets.connect(url, additional_headers={"X-Forwarded-For": "10.0.0.2"})
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await again.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        await first.close()


async def test_an_expiring_token_is_warned_then_closed(tmp_path: Path) -> None:
    async with running(tmp_path, token_expiry_warning=0.5) as server:
        ws = await websockets.connect(server.url(f"token={server.token(ttl=1)}"))
        await receive(ws, "token_expiring")
        data = orjson.loads(await ws.recv())
        error = data[0] if isinstance(data, list) else data
        assert error["code"] == "ERR_TOKEN_EXPIRED"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_shutdown_closes_with_1012_and_counts_the_socket_gone(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        ws = await websockets.connect(server.url(f"token={server.token()}&doc=s"))
        await receive(ws, "snapshot")
        server.server.should_exit = True
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert server.tandem.connections.users == {}
    assert server.tandem.documents.sessions == {} or all(
        not session.members for session in server.tandem.documents.sessions.values()
    )


async def test_closed_sockets_are_freed_without_the_cyclic_collector(tmp_path: Path) -> None:
    # A closed socket's objects must go when it closes: what waits for the cyclic
    # collector reaches its oldest generation under a crowd, and tandem.runtime
    # makes full collections rare. uvicorn's upgraded HTTP protocol (a cycle with its
    # parser) and a Yjs link's membership (a cycle with the link) used to wait.
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from tandem.server.collab import Connection
    from tandem.server.collab_transport import CollabProtocol
    from tandem.server.yjs import YjsConnection

    kinds = (HttpToolsProtocol, CollabProtocol, Connection, YjsConnection)

    def alive() -> dict[str, int]:
        counts = dict.fromkeys((kind.__name__ for kind in kinds), 0)
        for obj in gc.get_objects():
            if type(obj) in kinds:
                counts[type(obj).__name__] += 1
        return counts

    async with running(tmp_path) as server:
        gc.collect()
        gc.disable()
        try:
            before = alive()
            token = server.token()
            for _ in range(3):
                async with websockets.connect(server.url(f"token={token}&doc=g")) as ws:
                    await receive(ws, "snapshot")
                async with websockets.connect(server.url(f"token={token}", path="/yjs/g")) as ws:
                    await ws.recv()  # SyncStep1
                async with websockets.connect(server.url(path="/echo")) as ws:
                    await ws.send("hi")
                    await ws.recv()
            for _ in range(100):  # the server sees the closes a moment later
                if alive() == before:
                    break
                await asyncio.sleep(0.02)
            assert alive() == before
        finally:
            gc.enable()


# -- run_eagerly -----------------------------------------------------------------------------


async def test_a_coroutine_that_never_suspends_needs_no_task() -> None:
    done: list[int] = []

    async def quick() -> None:
        done.append(1)

    assert run_eagerly(quick()) is None
    assert done == [1]


async def test_a_coroutine_that_suspends_is_carried_on_by_a_task() -> None:
    steps: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    async def slow() -> None:
        steps.append("before")
        steps.append(await gate)
        await asyncio.sleep(0)
        steps.append("after")

    task = run_eagerly(slow())
    assert task is not None and steps == ["before"]
    gate.set_result("resumed")
    await task
    assert steps == ["before", "resumed", "after"]


async def test_errors_and_cancellation_reach_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    failing = loop.create_future()
    seen: list[str] = []

    async def awaits(future: asyncio.Future[None]) -> None:
        try:
            await future
        except ValueError:
            seen.append("error")
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    first = run_eagerly(awaits(failing))
    assert first is not None
    failing.set_exception(ValueError("boom"))
    await first
    never = loop.create_future()
    second = run_eagerly(awaits(never))
    assert second is not None
    await asyncio.sleep(0)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert seen == ["error", "cancelled"] and never.cancelled()


class RawSocket:
    """A WebSocket client of hand-made frames: what a read holds is up to the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: Running, query: str) -> RawSocket:
        host, port = server.host.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET /collab?{query} HTTP/1.1\r\nHost: {server.host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    @staticmethod
    def frame(payload: bytes, first: int = 0x81, mask: bytes = b"\x11\x22\x33\x44") -> bytes:
        """One frame: FIN and text by default (``first``), masked unless ``mask`` is empty."""
        size = len(payload)
        length = bytes([size]) if size < 126 else bytes([126]) + size.to_bytes(2, "big")
        if not mask:
            return bytes([first]) + length + payload
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bytes([first, length[0] | 0x80]) + length[1:] + mask + masked

    @staticmethod
    def ping(id: str) -> bytes:
        return orjson.dumps({"type": "ping", "id": id})

    async def send(self, *chunks: bytes) -> None:
        """Each chunk in a write of its own, a moment apart (so in reads of their own)."""
        for chunk in chunks:
            self.writer.write(chunk)
            await self.writer.drain()
            await asyncio.sleep(0.02)

    async def next(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload)."""
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(await self.reader.readexactly(2), "big")
        elif size == 127:
            size = int.from_bytes(await self.reader.readexactly(8), "big")
        return first & 0x0F, await self.reader.readexactly(size)

    async def messages(self, kind: str, count: int) -> list[dict[str, Any]]:
        """The next ``count`` messages of ``kind`` (others skipped; batches unpacked)."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            opcode, payload = await asyncio.wait_for(self.next(), 5)
            if opcode == 0x1:
                data = orjson.loads(payload)
                batch = data if isinstance(data, list) else [data]
                found += [message for message in batch if message["type"] == kind]
        return found

    async def close_code(self) -> int:
        """Read up to the server's close frame, which must come first; its code."""
        opcode, payload = await asyncio.wait_for(self.next(), 5)
        assert opcode == 0x8, payload
        return int.from_bytes(payload[:2], "big")


async def test_frames_in_any_split_of_the_reads(tmp_path: Path) -> None:
    """Whole frames are read past websockets' parser; every other shape still goes to it."""
    async with running(tmp_path) as server:
        raw = await RawSocket.open(server, f"token={server.token()}&doc=raw")
        await raw.messages("snapshot", 1)
        frame = RawSocket.frame
        two = frame(RawSocket.ping("a")) + frame(RawSocket.ping("b"))
        await raw.send(two)  # two messages in one read
        long = frame(RawSocket.ping("x" * 60) + b" " * 200)  # a 16-bit length
        await raw.send(long, long[:1], long[1:3], long[3:9], long[9:])  # whole, split anyhow
        ping = frame(b"hi", first=0x89)  # a control frame between two messages
        await raw.send(frame(RawSocket.ping("c")) + ping + frame(RawSocket.ping("d"))[:5])
        await raw.send(frame(RawSocket.ping("d"))[5:] + frame(RawSocket.ping("e")))
        fragments = frame(b'{"type": "ping",', first=0x01) + frame(b' "id": "f"}', first=0x80)
        await raw.send(fragments + frame(RawSocket.ping("g")))
        pongs = await raw.messages("pong", 9)
        assert [m["id"] for m in pongs] == ["a", "b", "x" * 60, "x" * 60, "c", "d", "e", "f", "g"]
        # Invalid UTF-8 in a whole frame: 1007, and nothing after it is handled.
        await raw.send(frame(b'{"type": "ping", "id": "\xff"}') + frame(RawSocket.ping("h")))
        assert await raw.close_code() == 1007
        raw.writer.close()


async def test_an_unmasked_or_oversized_frame_fails_the_socket(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        for bad, code in [
            (RawSocket.frame(RawSocket.ping("u"), mask=b""), 1002),
            (RawSocket.frame(RawSocket.ping("r"), first=0xC1), 1002),  # RSV1, no extension
        ]:
            raw = await RawSocket.open(server, f"token={server.token()}")
            await raw.messages("hello", 1)
            await raw.send(bad)
            assert await raw.close_code() == code
            raw.writer.close()
        server.server.config.ws_max_size = 64
        raw = await RawSocket.open(server, f"token={server.token()}")
        await raw.messages("hello", 1)
        await raw.send(RawSocket.frame(RawSocket.ping("y" * 100)))
        assert await raw.close_code() == 1009
        raw.writer.close()
