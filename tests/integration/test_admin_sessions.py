"""``DELETE /api/admin/sessions/{id}`` on a real ``tandem serve``: the session ends.

docs/security.md ("Sessions") says an administrator's disconnect closes the
connection with ``ERR_FORBIDDEN`` (4403). A ``/collab`` connection used to get
the ``error`` reply only and stay open, unlisted, still editing: ``ERR_FORBIDDEN``
alone keeps a connection open (a refused join), so ending a session must close
it whatever the error's own close code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import RawClient, ServerProcess, token
from .yclient import YClient

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DOC = "admin/sessions"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(Path(tmp_path_factory.mktemp("admin-sessions")) / "data")
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def _sessions(http: httpx.AsyncClient, server: ServerProcess) -> list[dict[str, object]]:
    response = await http.get(f"{server.url}/api/admin/sessions")
    assert response.status_code == 200, response.text
    listed: list[dict[str, object]] = response.json()
    return listed


async def test_disconnecting_a_collab_session_closes_it_with_4403(server: ServerProcess) -> None:
    victim = await RawClient.connect(server, f"token={token('ada')}&doc={DOC}")
    await victim.expect("snapshot")
    bystander = await RawClient.connect(server, f"token={token('bob')}&doc={DOC}")
    await bystander.expect("snapshot")
    headers = {"Authorization": f"Bearer {token('root', admin=True)}"}
    async with httpx.AsyncClient(headers=headers) as http:
        listed = await _sessions(http, server)
        (ada,) = [s for s in listed if s["user"] == "ada"]
        assert ada["endpoint"] == "collab"
        response = await http.delete(f"{server.url}/api/admin/sessions/{ada['id']}")
        assert response.status_code == 204, response.text

        error = await victim.expect("error", timeout=5)
        assert error["code"] == "ERR_FORBIDDEN"
        await asyncio.wait_for(victim.ws.wait_closed(), 5)
        assert victim.ws.close_code == 4403
        assert [s["user"] for s in await _sessions(http, server)] == ["bob"]

    # The other user's connection is untouched.
    await bystander.send({"type": "ping", "id": 1})
    assert (await bystander.expect("pong"))["id"] == 1
    await bystander.close()


async def test_disconnecting_a_yjs_session_closes_it_with_4403(server: ServerProcess) -> None:
    client = YClient(11)
    await client.connect(f"{server.ws_url}/yjs/{DOC}?token={token('cy')}")
    await asyncio.wait_for(client.synced.wait(), 5)
    headers = {"Authorization": f"Bearer {token('root', admin=True)}"}
    async with httpx.AsyncClient(headers=headers) as http:
        (cy,) = [s for s in await _sessions(http, server) if s["user"] == "cy"]
        response = await http.delete(f"{server.url}/api/admin/sessions/{cy['id']}")
        assert response.status_code == 204, response.text
    for _ in range(50):
        if client.closed is not None:
            break
        await asyncio.sleep(0.1)
    assert client.closed == (4403, "ERR_FORBIDDEN")
    await client.disconnect()
