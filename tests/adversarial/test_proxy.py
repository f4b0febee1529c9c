"""The per-IP cap behind a reverse proxy (``trusted_proxies``, issue 28).

A small asyncio reverse proxy on 127.0.0.1 forwards each client's connection to
``tandem serve`` and appends the client's address to ``X-Forwarded-For``, as
nginx does. The clients come from six loopback addresses (127.0.1.1-6), 100
each: 600 connections through the proxy. With the proxy trusted, each client
address is counted on its own (all 600 admitted, the 101st from one address
refused with 4429); with nothing trusted every socket has the proxy's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest
import websockets
from tests.integration.harness import token

from .conftest import start_server

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.alone]

ADDRESSES = [f"127.0.1.{i}" for i in range(1, 7)]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _proxy(upstream: int) -> tuple[asyncio.Server, int]:
    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        head = await client_r.readuntil(b"\r\n\r\n")
        peer = client_w.get_extra_info("peername")[0]
        head = head[:-2] + f"X-Forwarded-For: {peer}\r\n\r\n".encode()
        server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream)
        server_w.write(head)
        await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0, backlog=1024)
    return proxy, proxy.sockets[0].getsockname()[1]


async def _connect(port: int, source: str) -> websockets.ClientConnection:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    ws = await websockets.connect(
        "ws://127.0.0.1/collab",
        sock=sock,
        additional_headers={"Authorization": f"Bearer {token(f'u{source}')}"},
        open_timeout=30,
    )
    await asyncio.wait_for(ws.recv(), 30)  # hello: admitted
    return ws


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
async def test_600_connections_through_a_proxy_are_counted_per_client(
    tmp_path: Path, trusted: bool
) -> None:
    server = start_server(
        tmp_path,
        max_connections_per_ip="100",
        max_connections_per_user="1000",
        **({"trusted_proxies": "127.0.0.1"} if trusted else {}),
    )
    proxy, port = await _proxy(server.port)
    sockets: list[websockets.ClientConnection] = []
    try:
        if trusted:
            for source in ADDRESSES:
                sockets += await asyncio.gather(*(_connect(port, source) for _ in range(100)))
            assert len(sockets) == 600
            with pytest.raises(websockets.ConnectionClosed) as closed:
                extra = await _connect(port, ADDRESSES[0])
                await extra.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        else:
            sockets += await asyncio.gather(*(_connect(port, ADDRESSES[0]) for _ in range(100)))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                extra = await _connect(port, ADDRESSES[1])  # another client, same proxy
                await extra.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        proxy.close()
        server.stop()
    if not trusted:
        assert "set trusted_proxies" in server.output
