"""TandemClient against a scripted in-process WebSocket server (no Tandem server needed).

The fake server sequences ops with the real ``Sequencer`` and answers in
batches (JSON arrays), so these tests pin the connection's handling of
batches, errors, fatal closes and clean shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from tandem.client import ClientClosed, TandemClient
from tandem.ot import Delta, Document
from tandem.sequencer import Commit, Sequencer

T = TypeVar("T")


class FakeServer:
    """Just enough of /collab: hello, join → snapshot, op → ack/op, all sent as batches."""

    def __init__(self) -> None:
        self.sequencer = Sequencer("doc", Document("Hi"), 0)
        self.sockets: dict[str, ServerConnection] = {}
        self.received: list[dict[str, Any]] = []
        self.reject_ops = 0
        self.close_with: int | None = None
        self.queries: list[dict[str, list[str]]] = []
        #: The Authorization header of every connection (None when absent).
        self.authorizations: list[str | None] = []

    async def handler(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path).query if ws.request else "")
        self.queries.append(query)
        self.authorizations.append(ws.request.headers.get("Authorization") if ws.request else None)
        if self.close_with is not None:
            await ws.close(self.close_with, "nope")
            return
        client = query["client"][0]
        self.sockets[client] = ws
        hello = {"type": "hello", "protocol": 1, "client": client, "user": "u", "name": "U"}
        await ws.send(orjson.dumps([hello, {"type": "token_expiring", "expires": 123}]).decode())
        async for frame in ws:
            message = orjson.loads(frame)
            self.received.append(message)
            await self.answer(client, ws, message)

    async def answer(self, client: str, ws: ServerConnection, message: dict[str, Any]) -> None:
        seq = self.sequencer
        if message["type"] == "join" and message.get("v") is not None:
            ops = [
                {
                    "v": e.version,
                    "op": e.op.to_json(),
                    "client": e.client_id,
                    "user": e.user,
                    "seq": e.seq,
                }
                for e in seq.entries_since(message["v"])
            ]
            catchup = {
                "type": "catchup",
                "doc": "doc",
                "from": message["v"],
                "v": seq.version,
                "ops": ops,
                "presence": [],
                "permission": "write",
            }
            await ws.send(orjson.dumps(catchup).decode())
        elif message["type"] == "join":
            snapshot = {
                "type": "snapshot",
                "doc": "doc",
                "v": seq.version,
                "content": seq.document.to_delta().to_json(),
                "presence": [],
                "permission": "write",
            }
            await ws.send(orjson.dumps([snapshot]).decode())
        elif message["type"] == "op":
            if self.reject_ops:
                self.reject_ops -= 1
                error = {
                    "type": "error",
                    "code": "ERR_INVALID_OP",
                    "message": "no",
                    "doc": "doc",
                    "seq": message["seq"],
                }
                await ws.send(orjson.dumps(error).decode())
                return
            decision = seq.submit(
                Delta.from_json(message["op"]),
                message["v"],
                client_id=client,
                seq=message["seq"],
                user="u",
                now=0.0,
            )
            assert isinstance(decision, Commit)
            entry = decision.entry
            ack = {"type": "ack", "doc": "doc", "seq": entry.seq, "v": entry.version}
            op = {
                "type": "op",
                "doc": "doc",
                "v": entry.version,
                "op": entry.op.to_json(),
                "client": client,
                "user": "u",
                "seq": entry.seq,
            }
            for other, socket in list(self.sockets.items()):
                await socket.send(orjson.dumps([ack] if other == client else [op]).decode())
        elif message["type"] == "ping":
            await ws.send(orjson.dumps({"type": "pong", "id": message["id"]}).decode())


def run(test: Callable[[FakeServer, str], Awaitable[T]]) -> T:
    async def main() -> T:
        fake = FakeServer()
        async with serve(fake.handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            return await asyncio.wait_for(test(fake, f"ws://127.0.0.1:{port}"), 20)

    return asyncio.run(main())


def test_edits_batches_and_clean_close() -> None:
    async def scenario(fake: FakeServer, url: str) -> None:
        a = TandemClient(url, "tok", client_id="alice")
        b = TandemClient(url + "/collab?x=1", "tok", client_id="bob")
        ha, hb = await a.join("doc", 5), await b.join("doc", 5)
        # The token travels in a header, never in the URL.
        assert "token" not in fake.queries[0] and fake.queries[0]["client"] == ["alice"]
        assert fake.authorizations[:2] == ["Bearer tok", "Bearer tok"]
        assert fake.queries[1]["x"] == ["1"]
        assert a.expires == 123
        changes = hb.changes()
        ha.insert(2, "!")
        ha.insert(3, "😀")  # buffered behind the first
        await ha.synced(5)
        first = await changes.__anext__()
        second = await changes.__anext__()
        assert (
            first.remote
            and first.client == "alice"
            and first.delta == Delta().retain(2).insert("!")
        )
        assert second.delta == Delta().retain(3).insert("😀")
        assert hb.text == ha.text == "Hi!😀" and hb.version == ha.version == 2
        await a.ping(5)
        changes.close()
        await a.close()
        await b.close()
        with pytest.raises(ClientClosed):
            await a.join("other")
        assert [t for t in asyncio.all_tasks() if t.get_name().startswith("tandem-client")] == []

    run(scenario)


def test_a_failed_op_is_undone_and_the_document_rejoined() -> None:
    async def scenario(fake: FakeServer, url: str) -> None:
        client = TandemClient(url, "tok")
        try:
            handle = await client.join("doc", 5)
            undone = asyncio.Event()
            handle.on_change(lambda change: undone.set() if change.remote else None)
            fake.reject_ops = 1
            handle.insert(0, "x")
            await asyncio.wait_for(undone.wait(), 5)
            assert handle.text == "Hi" and not handle.pending
            assert handle.errors[-1].code == "ERR_INVALID_OP"
            handle.insert(0, "y")
            await handle.synced(5)
            assert fake.sequencer.document.text() == "yHi"
            joins = [m for m in fake.received if m["type"] == "join"]
            # The re-join names its version and its document there (docs/protocol.md, join).
            assert joins[-1] == {
                "type": "join",
                "doc": "doc",
                "ref": "join:doc",
                "v": 0,
                "h": Document("Hi").fingerprint(),
            }
        finally:
            await client.close()

    run(scenario)


def test_reconnect_resends_the_inflight_op_with_the_same_seq() -> None:
    async def scenario(fake: FakeServer, url: str) -> None:
        client = TandemClient(url, "tok", client_id="me", initial_backoff=0.01)
        try:
            handle = await client.join("doc", 5)
            fake.sockets["me"].close_timeout = 0
            fake_ws = fake.sockets.pop("me")  # the ack will not reach us
            handle.insert(0, "a")
            while not any(m["type"] == "op" for m in fake.received):
                await asyncio.sleep(0.01)
            await fake_ws.close()
            handle.insert(0, "b")  # typed while disconnected
            await handle.synced(5)
            ops = [m for m in fake.received if m["type"] == "op"]
            assert [m["seq"] for m in ops] == [1, 2]
            assert fake.sequencer.document.text() == "baHi" == handle.text
            assert client.connections == 2
        finally:
            await client.close()

    run(scenario)


def test_the_token_goes_in_the_query_only_when_asked() -> None:
    async def scenario(fake: FakeServer, url: str) -> None:
        client = TandemClient(url, "tok", client_id="q", token_in_query=True)
        try:
            await client.connect(5)
            assert fake.queries[0]["token"] == ["tok"] and fake.authorizations == [None]
        finally:
            await client.close()

    run(scenario)


def test_an_auth_close_with_a_fixed_token_is_fatal() -> None:
    async def scenario(fake: FakeServer, url: str) -> None:
        fake.close_with = 4401
        client = TandemClient(url, "bad")
        with pytest.raises(ClientClosed, match="4401"):
            await client.connect(5)
        await client.close()

    run(scenario)


def test_a_token_function_is_asked_again_on_every_attempt() -> None:
    async def scenario(fake: FakeServer, url: str) -> None:
        tokens = iter(["expired", "fresh"])
        fake.close_with = 4401

        async def token() -> str:
            value = next(tokens)
            if value == "fresh":
                fake.close_with = None
            return value

        client = TandemClient(url, token, initial_backoff=0.01)
        try:
            await client.connect(5)
            assert fake.authorizations == ["Bearer expired", "Bearer fresh"]
        finally:
            await client.close()

    run(scenario)
