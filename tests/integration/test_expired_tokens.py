"""An honestly expired token is refused on every endpoint, by the ``exp`` check.

The token (``harness.expired_token``) is issued an hour ago and expired a minute
ago: ``exp`` after ``iat``, past the leeway, signed with the right key, so no
other check refuses it. Each endpoint must answer exactly ``ERR_TOKEN_EXPIRED``
and hand out no content: no ``hello`` or snapshot on ``/collab`` (whichever way
the token travels), no sync message on ``/yjs`` or ``/hocuspocus``, 401 on REST.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import orjson
import pytest
import websockets

from tandem.merge import hocuspocus as hp
from tandem.merge import yproto

from .harness import ServerProcess, doc_state, expired_token, token, until
from .hpclient import HPClient

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

DOC = "expiry/doc"


def ways(credential: str) -> dict[str, dict[str, Any]]:
    """The three ways a WebSocket client can present a token."""
    return {
        "query": {"query": f"token={credential}&"},
        "header": {"query": "", "additional_headers": {"Authorization": f"Bearer {credential}"}},
        "subprotocol": {"query": "", "subprotocols": ["tandem.v1", f"bearer.{credential}"]},
    }


async def everything_until_close(ws: websockets.ClientConnection) -> list[Any]:
    frames: list[Any] = []
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            frames.append(await asyncio.wait_for(ws.recv(), 10))
    return frames


@pytest.mark.parametrize("way", ["query", "header", "subprotocol"])
async def test_collab_answers_only_err_token_expired(server: ServerProcess, way: str) -> None:
    await seed(server)
    options = ways(expired_token("late"))[way]
    query = options.pop("query")
    url = f"{server.ws_url}/collab?{query}doc={DOC}"
    async with websockets.connect(url, **options) as ws:
        with_join = orjson.dumps({"type": "join", "doc": DOC}).decode()
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(with_join)
        frames = await everything_until_close(ws)
        messages = [m for f in frames for m in _unbatch(orjson.loads(f))]
        assert [m["type"] for m in messages] == ["error"], messages
        assert messages[0]["code"] == "ERR_TOKEN_EXPIRED"
        assert ws.close_code == 4401
    assert (await doc_state(server, DOC))["text"] == "secret"


async def seed(server: ServerProcess) -> None:
    """Content, so a snapshot or a document read would have something to leak."""
    async with httpx.AsyncClient() as http:
        seeded = await http.post(
            f"{server.url}/api/docs/{DOC}/ops",
            json={"type": "insert", "pos": 0, "text": "secret"},
            headers={"Authorization": f"Bearer {token('owner')}"},
        )
        assert seeded.status_code == 200, seeded.text


def _unbatch(data: Any) -> list[dict[str, Any]]:
    return data if isinstance(data, list) else [data]


@pytest.mark.parametrize("way", ["query", "header", "subprotocol"])
async def test_yjs_answers_only_err_token_expired(server: ServerProcess, way: str) -> None:
    options = ways(expired_token("late"))[way]
    query = options.pop("query").rstrip("&")
    url = f"{server.ws_url}/yjs/{DOC}" + (f"?{query}" if query else "")
    async with websockets.connect(url, **options) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(yproto.sync_step1(b"\x00"))
        frames = await everything_until_close(ws)
        kinds = [yproto.parse(f).kind for f in frames]
        assert yproto.SYNC not in kinds, "a sync message went to an expired token"
        assert kinds == [yproto.AUTH]
        assert (ws.close_code, ws.close_reason) == (4401, "ERR_TOKEN_EXPIRED")


async def test_hocuspocus_answers_only_err_token_expired(server: ServerProcess) -> None:
    client = HPClient()
    await client.connect(f"{server.ws_url}/hocuspocus")
    doc = await client.open(DOC, expired_token("late"), 41)
    await until(lambda: bool(doc.denied))
    assert doc.denied[0].split(":")[0] == "ERR_TOKEN_EXPIRED"
    sync = [f for f in client.frames if f not in (hp.PING_FRAME, hp.PONG_FRAME)]
    assert all(hp.parse(f).kind != hp.SYNC for f in sync), "a sync message went to it"
    assert doc.scope is None and not doc.synced
    await client.close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/docs", None),
        ("GET", f"/api/docs/{DOC}", None),
        ("GET", f"/api/docs/{DOC}/ops", None),
        ("POST", f"/api/docs/{DOC}/ops", {"type": "insert", "pos": 0, "text": "pwned"}),
    ],
)
async def test_rest_answers_401_err_token_expired(
    server: ServerProcess, method: str, path: str, body: Any
) -> None:
    await seed(server)
    async with httpx.AsyncClient() as http:
        response = await http.request(
            method,
            server.url + path,
            json=body,
            headers={"Authorization": f"Bearer {expired_token('late')}"},
        )
    assert response.status_code == 401, response.text
    assert response.json()["detail"]["code"] == "ERR_TOKEN_EXPIRED"
    assert "secret" not in response.text
    assert (await doc_state(server, DOC))["text"] == "secret"
