"""Tandem mounted into an existing FastAPI app, as docs/operations.md shows.

Runs the combined app on a real uvicorn server in this process.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn
import websockets
from fastapi import FastAPI

from tandem import Settings
from tandem.server.app import Tandem

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_tandem_router_inside_an_existing_app(tmp_path: Path) -> None:
    tandem = Tandem(Settings(data_dir=tmp_path, jwt_secret="embedded-secret-0123456789abcdef"))
    app = FastAPI(lifespan=tandem.lifespan)

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"app": "mine"}

    app.include_router(tandem.router, prefix="/collab-server")
    token = tandem.authenticator.issue("embedder", docs={"*": "write"}, now=time.time())
    async with serving(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        assert (await http.get("/hello")).json() == {"app": "mine"}
        assert (await http.get("/collab-server/healthz")).status_code == 200
        assert (await http.get("/collab-server/api/docs")).status_code == 401
        url = f"ws://{host}/collab-server/collab?token={token}&doc=e"
        async with websockets.connect(url) as ws:
            messages: list[dict[str, object]] = []
            while not any(m.get("type") == "snapshot" for m in messages):
                data = orjson.loads(await ws.recv())
                messages.extend(data if isinstance(data, list) else [data])
            await ws.send('{"type": "insert", "pos": 0, "text": "embedded"}')
            assert orjson.loads(await ws.recv())["type"] == "ack"
        response = await http.get(
            "/collab-server/api/docs/e", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.json()["text"] == "embedded"
