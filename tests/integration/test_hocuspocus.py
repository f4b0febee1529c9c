"""Hocuspocus providers on ``/hocuspocus`` against a real server, frames built by hand.

Auth by message (ok, bad, expired, forbidden, read-only, renewal, expiry),
sync, writes acknowledged with SyncStatus only once stored and visible
through ``GET /api/docs``, two documents on one socket, awareness shared
with ``/yjs`` clients, and malformed or unknown frames: a broken envelope
closes the socket with 4400, a broken body closes only its document.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pycrdt
import pytest
import websockets

from tandem.merge import hocuspocus as hp
from tandem.merge import yproto

from .harness import RawClient, ServerProcess, doc_state, expired_token, token, until
from .hpclient import HPClient, auth_frame, frame
from .yclient import YClient

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def text_of(state: dict[str, object]) -> str:
    content = state["content"]
    assert isinstance(content, list)
    return "".join(part["insert"] for part in content)


async def connect(server: ServerProcess) -> HPClient:
    client = HPClient()
    await client.connect(f"{server.ws_url}/hocuspocus")
    return client


async def test_sync_edit_and_acknowledgement_once_stored(server: ServerProcess) -> None:
    ot = await RawClient.connect(server, f"token={token('otto')}&doc=hp")
    await ot.expect("snapshot", v=0)
    await ot.send({"type": "op", "v": 0, "seq": 1, "op": [{"insert": "hi 😀"}]})
    await ot.expect("ack", v=1)

    client = await connect(server)
    doc = await client.open("hp", token("hana"), 4001)
    await until(lambda: doc.synced and doc.plain() == "hi 😀")
    assert doc.scope == "read-write"
    await until(lambda: doc.unsynced == 0)  # our SyncStep2 answer was acknowledged

    client.insert("hp", 4, "!")
    assert doc.unsynced == 1
    acked = len(doc.statuses)
    await until(lambda: len(doc.statuses) > acked)
    assert doc.statuses[-1] is True and doc.unsynced == 0
    assert text_of(await doc_state(server, "hp")) == "hi 😀!"  # stored before the ack
    op = await ot.expect("op", v=2)
    assert op["user"] == "hana"

    await ot.send({"type": "insert", "seq": 2, "pos": 0, "text": "» "})
    await ot.expect("ack")
    await until(lambda: doc.plain() == "» hi 😀!")
    await client.close()
    await ot.close()


async def test_two_documents_on_one_socket(server: ServerProcess) -> None:
    client = await connect(server)
    a = await client.open("multi-a", token("hana"), 11)
    b = await client.open("multi-b", token("hana"), 12)
    await until(lambda: a.synced and b.synced and a.unsynced == 0 and b.unsynced == 0)
    client.insert("multi-a", 0, "to A")
    client.insert("multi-b", 0, "to B")
    await until(lambda: a.unsynced == 0 and b.unsynced == 0)
    assert text_of(await doc_state(server, "multi-a")) == "to A"
    assert text_of(await doc_state(server, "multi-b")) == "to B"

    ot = await RawClient.connect(server, f"token={token('otto')}&doc=multi-b")
    await ot.expect("snapshot")
    await ot.send({"type": "insert", "seq": 1, "pos": 4, "text": "!"})
    await ot.expect("ack")
    await until(lambda: b.plain() == "to B!")
    assert a.plain() == "to A"

    # Close one document; the other carries on over the same socket.
    await client.send(frame("multi-a", hp.CLOSE))
    client.insert("multi-b", 0, "still ")
    await until(lambda: b.unsynced == 0)
    assert text_of(await doc_state(server, "multi-b")) == "still to B!"
    await client.close()
    await ot.close()


@pytest.mark.parametrize(
    ("credential", "code"),
    [
        ("garbage", "ERR_UNAUTHORIZED"),
        (expired_token("late"), "ERR_TOKEN_EXPIRED"),
        (token("nosy", docs={"other": "write"}), "ERR_FORBIDDEN"),
    ],
)
async def test_refused_tokens_change_nothing(
    server: ServerProcess, credential: str, code: str
) -> None:
    client = await connect(server)
    doc = await client.open("guarded", credential, 21)
    await until(lambda: bool(doc.denied))
    assert doc.denied[0].startswith(code)
    # Its update goes nowhere, and it is told to authenticate (once): the server's
    # answer to this very update is awaited, not a while.
    client.insert("guarded", 0, "sneaky")
    await until(lambda: len(doc.denied) >= 2)
    assert doc.scope is None and doc.statuses == [] and not doc.synced
    assert len(doc.denied) == 2 and "Auth message" in doc.denied[1]
    assert text_of(await doc_state(server, "guarded")) == ""
    # The socket survives: another document authenticates on it.
    ok = await client.open("guarded-ok", token("hana"), 22)
    await until(lambda: ok.synced)
    assert client.closed is None
    await client.close()


async def test_read_only_clients_sync_but_cannot_write(server: ServerProcess) -> None:
    writer = await connect(server)
    w = await writer.open("ro", token("hana"), 31)
    await until(lambda: w.synced)
    writer.insert("ro", 0, "mine")
    await until(lambda: w.unsynced == 0)

    reader = await connect(server)
    r = await reader.open("ro", token("rita", docs={"ro": "read"}), 32)
    await until(lambda: r.plain() == "mine" and r.scope == "readonly")
    await until(lambda: r.unsynced == 0)  # a SyncStep2 with nothing new is acknowledged
    reader.insert("ro", 0, "nope ")
    await until(lambda: r.statuses[-1:] == [False])
    assert r.unsynced == 1
    # Its SyncStep2 now carries the refused change: not acknowledged either.
    await reader.send(hp.wrap("ro", yproto.sync_step2(r.doc.get_update())))
    await until(lambda: len(r.statuses) >= 3)
    assert r.statuses[-1] is False
    writer.insert("ro", 4, "!")
    await until(lambda: r.plain().endswith("mine!"))
    assert text_of(await doc_state(server, "ro")) == "mine!"
    await reader.close()
    await writer.close()


async def test_token_renewal_and_expiry(server: ServerProcess) -> None:
    client = await connect(server)
    # Expires in 2 s (within the server's 60 s warning): asked for a new token at once.
    short = await client.open("expiring", token("hana", ttl=2), 41)
    await until(lambda: short.synced)

    def token_requests() -> int:
        asks = hp.token_request("expiring")
        return sum(1 for data in client.frames if data == asks)

    await until(lambda: token_requests() >= 1)
    await client.send(auth_frame("expiring", token("hana", ttl=3600)))
    await until(
        lambda: len([f for f in client.frames if f == hp.authenticated("expiring", False)]) == 2
    )
    other = await client.open("expiring-2", token("hana", ttl=2), 42)
    await until(lambda: other.synced)
    await until(lambda: other.closed is not None, timeout=10)
    assert other.denied and other.denied[-1].startswith("ERR_TOKEN_EXPIRED")
    # The renewed document still takes writes.
    client.insert("expiring", 0, "renewed")
    await until(lambda: short.unsynced == 0)
    assert text_of(await doc_state(server, "expiring")) == "renewed"
    assert short.closed is None
    await client.close()


async def test_awareness_is_shared_with_yjs_clients_and_cleared(server: ServerProcess) -> None:
    y = YClient(51)
    await y.connect(f"{server.ws_url}/yjs/aw?token={token('yuki')}")
    await asyncio.wait_for(y.synced.wait(), 10)
    client = await connect(server)
    doc = await client.open("aw", token("hana"), 52)
    await until(lambda: doc.synced)
    await client.set_awareness("aw", 1, {"user": {"name": "Hana ✨"}})
    await until(lambda: y.awareness.get(52) == {"user": {"name": "Hana ✨"}})
    await y.set_awareness(1, {"user": {"name": "Yuki"}})
    await until(lambda: doc.awareness.get(51) == {"user": {"name": "Yuki"}})
    # A QueryAwareness is answered with every known state.
    doc.awareness.clear()
    await client.send(frame("aw", hp.QUERY_AWARENESS))
    await until(lambda: 51 in doc.awareness)
    await client.send(frame("aw", hp.CLOSE))
    await until(lambda: 52 not in y.awareness)
    await client.close()
    await y.disconnect()


GARBAGE_BODIES: dict[str, bytes] = {
    "unknown sync step": frame("body", hp.SYNC, b"\x09\x00"),
    "truncated sync": frame("body", hp.SYNC, b"\x02\x80"),
    "update that is not a Yjs update": hp.wrap("body", yproto.sync_update(b"\xde\xad" * 16)),
    "awareness that is not JSON": frame("body", hp.AWARENESS, b"\x08\x01\x05\x01\x03{{{"),
}

IGNORED: dict[str, bytes] = {
    "unknown type": frame("body", 42, b"\x01\x02"),
    "stateless": frame("body", hp.STATELESS, b"\x02hi"),
    "broadcast stateless": frame("body", hp.BROADCAST_STATELESS, b"\x02hi"),
    "sync status": frame("body", hp.SYNC_STATUS, b"\x01"),
    "pong": hp.PONG_FRAME,
    "a text frame": b"",  # sent as text below
}


@pytest.mark.parametrize("name", list(GARBAGE_BODIES))
async def test_a_malformed_body_closes_only_its_document(server: ServerProcess, name: str) -> None:
    client = await connect(server)
    bad = await client.open("body", token("mallory"), 61)
    good = await client.open("body-2", token("mallory"), 62)
    await until(lambda: bad.synced and good.synced)
    before = await doc_state(server, "body")
    await client.send(GARBAGE_BODIES[name])
    await until(lambda: bad.closed is not None)
    assert bad.closed is not None and bad.closed.startswith("malformed frame")
    assert await doc_state(server, "body") == before
    client.insert("body-2", 0, "alive")
    await until(lambda: good.unsynced == 0)
    assert client.closed is None
    await client.close()


@pytest.mark.parametrize("name", list(IGNORED))
async def test_unknown_and_server_only_messages_are_ignored(
    server: ServerProcess, name: str
) -> None:
    client = await connect(server)
    doc = await client.open("body", token("mallory"), 71)
    await until(lambda: doc.synced and doc.unsynced == 0)
    assert client.ws is not None
    if name == "a text frame":
        await client.ws.send('{"type": "op"}')
    else:
        await client.send(IGNORED[name])
    await client.send(hp.PING_FRAME)
    await until(lambda: hp.PONG_FRAME in client.frames)
    client.insert("body", 0, "fine")
    await until(lambda: doc.unsynced == 0)
    assert doc.closed is None and client.closed is None
    await client.close()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80", b"\x05ab", b"\x02\xff\xfe\x00", b"\x04body"],
    ids=["empty", "truncated varuint", "key past the end", "key not UTF-8", "no type"],
)
async def test_a_broken_envelope_closes_the_socket_4400(server: ServerProcess, data: bytes) -> None:
    async with websockets.connect(f"{server.ws_url}/hocuspocus") as ws:
        await ws.send(data)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


async def test_a_pycrdt_update_with_missing_dependencies_is_resynced(
    server: ServerProcess,
) -> None:
    client = await connect(server)
    doc = await client.open("deps", token("hana"), 81)
    await until(lambda: doc.synced and doc.unsynced == 0)
    # An update that builds on changes the server never saw: refused, then asked for.
    source: pycrdt.Doc[Any] = pycrdt.Doc(client_id=81)
    text = source.get("content", type=pycrdt.Text)
    text += "first"
    seen = source.get_state()
    text += " second"
    step1 = hp.wrap("deps", yproto.sync_step1(b""))[:-1]  # key, Sync, SyncStep1

    def asked() -> int:
        return sum(1 for data in client.frames if data.startswith(step1))

    before = asked()
    await client.send(hp.wrap("deps", yproto.sync_update(source.get_update(seen))))
    await until(lambda: False in doc.statuses and asked() > before)
    assert text_of(await doc_state(server, "deps")) == ""
    await client.close()
