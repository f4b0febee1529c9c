"""Revoking access on three ``tandem serve`` nodes over real PostgreSQL and Redis.

Ada is connected to every node, over ``/collab`` (OT), ``/yjs`` and
``/hocuspocus``; Bob too. An administrator revokes Ada through node 0's admin
endpoint. Within a second every one of Ada's sockets, on every node, gets
``ERR_REVOKED`` and is closed (4403); Bob's stay and keep editing; REST refuses
Ada's old token on every node, and a token issued after the revocation works.
Revoking a single token (``jti``) and a user's documents (a glob) are checked
on one node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tandem.merge import yproto

from .harness import (
    RawClient,
    ServerProcess,
    three_nodes,
    token,
)
from .hpclient import HPClient
from .yclient import YClient

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DOC = "team/plan"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    with three_nodes(tmp_path) as nodes:
        yield nodes


async def closed_with_revoked(client: RawClient) -> float:
    """Wait for ``ERR_REVOKED`` and the close; return when the error arrived."""
    error = await client.expect("error", timeout=5)
    arrived = time.monotonic()
    assert error["code"] == "ERR_REVOKED", error
    await asyncio.wait_for(client.ws.wait_closed(), 5)
    assert client.ws.close_code == 4403
    return arrived


async def wait_for(check: object, timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time")
        await asyncio.sleep(0.005)
    return time.monotonic()


async def revoke(node: ServerProcess, **body: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{node.url}/api/admin/revocations",
            json=body,
            headers={"Authorization": f"Bearer {token('root', admin=True)}"},
        )


async def rest_status(node: ServerProcess, credential: str) -> tuple[int, str]:
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{node.url}/api/docs/{DOC}", headers={"Authorization": f"Bearer {credential}"}
        )
    if response.status_code == 200:
        return 200, ""
    body = response.json()
    return response.status_code, body.get("code") or body["detail"]["code"]


async def test_a_revoked_user_is_closed_on_every_node_within_a_second(
    cluster: list[ServerProcess],
) -> None:
    ada_token, bob_token = token("ada"), token("bob")
    ada_ot = [await RawClient.connect(n, f"token={ada_token}&doc={DOC}") for n in cluster]
    bob_ot = [await RawClient.connect(n, f"token={bob_token}&doc={DOC}") for n in cluster]
    for client in ada_ot + bob_ot:
        await client.expect("snapshot")
    ada_y = YClient(101)
    await ada_y.connect(f"{cluster[1].ws_url}/yjs/{DOC}?token={ada_token}")
    await asyncio.wait_for(ada_y.synced.wait(), 5)
    ada_hp = HPClient()
    await ada_hp.connect(f"{cluster[2].ws_url}/hocuspocus")
    hp_doc = await ada_hp.open(DOC, ada_token, 102)
    await wait_for(lambda: hp_doc.synced)

    # Only an admin token may revoke.
    async with httpx.AsyncClient() as http:
        refused = await http.post(
            f"{cluster[0].url}/api/admin/revocations",
            json={"user": "ada"},
            headers={"Authorization": f"Bearer {bob_token}"},
        )
    assert refused.status_code == 403

    started = time.monotonic()
    response = await revoke(cluster[0], user="ada", reason="left the team")
    assert response.status_code == 201, response.text
    closed_at = await asyncio.gather(
        *(closed_with_revoked(client) for client in ada_ot),
        wait_for(lambda: ada_y.closed is not None),
        wait_for(lambda: ada_hp.closed is not None),
    )
    slowest = max(closed_at) - started
    print(f"every socket of the revoked user closed {slowest * 1000:.0f} ms after the request")
    assert slowest < 1.0
    assert ada_y.closed == (4403, "ERR_REVOKED")
    auth = [f for f in ada_y.frames if f.kind == yproto.AUTH]
    assert auth and b"ERR_REVOKED" in auth[-1].payload
    assert ada_hp.closed is not None and ada_hp.closed[0] == 4403
    assert hp_doc.denied and hp_doc.denied[0].startswith("ERR_REVOKED")

    # Bob is untouched on every node and still edits.
    await bob_ot[1].send({"type": "op", "doc": DOC, "v": 0, "seq": 1, "op": [{"insert": "hi"}]})
    await bob_ot[1].expect("ack")
    for i in (0, 2):
        assert (await bob_ot[i].expect("op"))["op"] == [{"insert": "hi"}]

    # Ada's old token is refused everywhere, REST and sockets alike.
    for node in cluster:
        assert await rest_status(node, ada_token) == (403, "ERR_REVOKED")
        assert await rest_status(node, bob_token) == (200, "")
    again = await RawClient.connect(cluster[2], f"token={ada_token}&doc={DOC}")
    assert (await again.expect("error"))["code"] == "ERR_REVOKED"
    # A token issued after the revocation (she signed in again) works.
    fresh = token("ada", iat=int(time.time()) + 2)
    assert await rest_status(cluster[1], fresh) == (200, "")
    for client in bob_ot + [again]:
        await client.close()
    await ada_y.disconnect()
    await ada_hp.close()


async def test_revoking_one_token_and_one_users_documents(cluster: list[ServerProcess]) -> None:
    node = cluster[0]
    first, second = token("cy", jti="t-1"), token("cy", jti="t-2")
    a = await RawClient.connect(node, f"token={first}&doc={DOC}")
    b = await RawClient.connect(node, f"token={second}&doc={DOC}")
    c = await RawClient.connect(node, f"token={second}&doc=team/other")
    for client in (a, b, c):
        await client.expect("snapshot")
    assert (await revoke(cluster[1], jti="t-1")).status_code == 201
    await closed_with_revoked(a)  # only that token
    assert await rest_status(node, second) == (200, "")

    assert (await revoke(cluster[2], user="cy", docs="team/p*")).status_code == 201
    await closed_with_revoked(b)  # joined to team/plan
    await c.send({"type": "op", "doc": "team/other", "v": 0, "seq": 1, "op": [{"insert": "ok"}]})
    await c.expect("ack")  # team/other is not covered
    assert await rest_status(node, second) == (403, "ERR_FORBIDDEN")
    await c.close()
