"""Yjs clients on ``/yjs/{doc}`` next to OT clients on ``/collab``, against real servers.

Covers the bridge both ways (text, formatting, astral characters), the echo
that acknowledges a stored Yjs write, read-only refusal, auth, awareness,
and item identity across a restart: a Yjs client that edited offline while
the server restarted merges without duplicating anything.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import websockets
from pycrdt import Doc, Text

from tandem.merge import yproto
from tandem.ot.delta import Delta

from .harness import RawClient, ServerProcess, doc_state, token, until
from .yclient import YClient

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def _frame(ws: websockets.ClientConnection) -> bytes:
    frame = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(frame, bytes)
    return frame


def yurl(server: ServerProcess, doc: str, who: str = "yuki", access: str = "write") -> str:
    return f"{server.ws_url}/yjs/{doc}?token={token(who, docs={'*': access})}"


async def test_yjs_and_ot_clients_edit_one_document(server: ServerProcess) -> None:
    ot = await RawClient.connect(server, f"token={token('otto')}&doc=mix")
    await ot.expect("snapshot", v=0)
    await ot.send({"type": "op", "v": 0, "seq": 1, "op": [{"insert": "hi 😀 there"}]})
    await ot.expect("ack", v=1)

    y = YClient(4242)
    await y.connect(yurl(server, "mix"))
    await asyncio.wait_for(y.synced.wait(), 10)
    assert y.plain() == "hi 😀 there"

    # Yjs → OT: an insert after the emoji, with formatting, and a format.
    y.insert(5, "🎉!", {"bold": True})
    op = await ot.expect("op", v=2)
    assert Delta.from_json(op["op"]) == Delta().retain(5).insert("🎉!", {"bold": True})
    assert op["user"] == "yuki"
    y.format(0, 2, {"italic": True})
    op = await ot.expect("op", v=3)
    assert Delta.from_json(op["op"]) == Delta().retain(2, {"italic": True})

    # OT → Yjs, including a removal of formatting.
    await ot.send(
        {
            "type": "op",
            "v": 3,
            "seq": 2,
            "op": [{"retain": 1, "attributes": {"italic": None}}, {"insert": "é"}],
        }
    )
    await ot.expect("ack", v=4)
    await until(lambda: y.plain() == "héi 😀 🎉!there")
    state = await doc_state(server, "mix")
    assert Delta.from_json(state["content"]) == y.content()
    await y.disconnect()
    await ot.close()


async def test_a_yjs_write_is_echoed_once_stored(server: ServerProcess) -> None:
    y = YClient(7)
    await y.connect(yurl(server, "echo"))
    await asyncio.wait_for(y.synced.wait(), 10)
    before = len(y.frames)
    y.insert(0, "stored")
    await until(lambda: any(f.sub == 2 for f in y.frames[before:]))
    assert (await doc_state(server, "echo"))["content"] == [{"insert": "stored"}]
    await y.disconnect()


async def test_no_update_reaches_a_yjs_client_before_its_sync_step2(
    server: ServerProcess,
) -> None:
    """Updates committed while a client has not synced yet are in its SyncStep2, not before.

    An Update sent ahead of the catch-up may build on changes the client
    lacks (a delete it has not seen, or items past a gap in a client's
    clocks, which Yrs shows at a wrong place); a client editing that view
    inserted inside other clients' words (issue #5, the mixed-session split).
    """
    ot = await RawClient.connect(server, f"token={token('otto')}&doc=order")
    await ot.expect("snapshot", v=0)
    async with websockets.connect(yurl(server, "order"), max_size=None) as ws:
        first = yproto.parse(await _frame(ws))
        assert (first.kind, first.sub) == (yproto.SYNC, yproto.SYNC_STEP1)
        await ot.send({"type": "insert", "seq": 1, "pos": 0, "text": "early"})
        await ot.expect("ack", v=1)  # durable: it would have been sent as an Update
        await ws.send(yproto.sync_step1(Doc().get_state()))
        while True:
            message = yproto.parse(await _frame(ws))
            if message.kind != yproto.SYNC:
                continue
            assert message.sub == yproto.SYNC_STEP2, "an Update came before the SyncStep2"
            break
        doc: Doc[Any] = Doc()
        doc.apply_update(message.payload)
        assert str(doc.get("content", type=Text)) == "early"
        # Synced: Updates flow from now on.
        await ot.send({"type": "insert", "seq": 2, "pos": 5, "text": "!"})
        await ot.expect("ack", v=2)
        while True:
            message = yproto.parse(await _frame(ws))
            if message.kind == yproto.SYNC and message.sub == yproto.SYNC_UPDATE:
                break
        doc.apply_update(message.payload)
        assert str(doc.get("content", type=Text)) == "early!"
    await ot.close()


async def test_read_only_yjs_clients_sync_but_cannot_write(server: ServerProcess) -> None:
    writer = YClient(1001)
    await writer.connect(yurl(server, "ro"))
    await asyncio.wait_for(writer.synced.wait(), 10)
    writer.insert(0, "mine")
    reader = YClient(1002)
    await reader.connect(yurl(server, "ro", "rita", "read"))
    await until(lambda: reader.plain() == "mine")
    reader.insert(0, "nope ")
    await until(lambda: any(f.kind == 2 for f in reader.frames))  # permission denied
    writer.insert(4, "!")
    await until(lambda: reader.plain().endswith("mine!"))
    assert (await doc_state(server, "ro"))["content"] == [{"insert": "mine!"}]
    await reader.disconnect()
    await writer.disconnect()


async def test_a_bad_token_closes_4401_and_no_access_4403(server: ServerProcess) -> None:
    y = YClient(5)
    await y.connect(f"{server.ws_url}/yjs/x?token=garbage")
    await until(lambda: y.closed is not None)
    assert y.closed is not None and y.closed[0] == 4401
    y2 = YClient(6)
    await y2.connect(f"{server.ws_url}/yjs/x?token={token('z', docs={'other': 'write'})}")
    await until(lambda: y2.closed is not None)
    assert y2.closed is not None and y2.closed[0] == 4403


async def test_awareness_is_relayed_and_cleared_on_close(server: ServerProcess) -> None:
    a, b = YClient(11), YClient(12)
    await a.connect(yurl(server, "aw"))
    await b.connect(yurl(server, "aw"))
    await asyncio.wait_for(b.synced.wait(), 10)
    await a.set_awareness(1, {"user": {"name": "Ann ✨"}})
    await until(lambda: b.awareness.get(11) == {"user": {"name": "Ann ✨"}})
    c = YClient(13)
    await c.connect(yurl(server, "aw"))
    await until(lambda: 11 in c.awareness)  # a joiner gets current states
    await a.disconnect()
    await until(lambda: 11 not in b.awareness)
    await b.disconnect()
    await c.disconnect()


async def test_offline_yjs_edits_merge_without_duplicates_after_a_restart(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"TANDEM_SNAPSHOT_EVERY": "3"})
    server.start()
    try:
        y = YClient(31337)
        await y.connect(yurl(server, "week"))
        await asyncio.wait_for(y.synced.wait(), 10)
        ot = await RawClient.connect(server, f"token={token('otto')}&doc=week")
        await ot.expect("snapshot")
        for i, word in enumerate(["alpha ", "beta ", "gamma ", "delta "]):
            await ot.send({"type": "insert", "seq": i, "pos": 0, "text": word})
            await ot.expect("ack")
        # Insert only once every word has reached the Yjs client: otherwise "[y]" and a
        # word still in flight are concurrent inserts at 0 and commit order decides.
        await until(lambda: y.plain() == "delta gamma beta alpha ")
        y.insert(0, "[y]")
        await until(lambda: y.plain().startswith("[y]") and "alpha" in y.plain())
        await ot.close()
        await y.disconnect()
        y.insert(len(y.plain()), " offline 😀")  # edited while away
        server.stop()
        server.start()
        ot = await RawClient.connect(server, f"token={token('otto')}&doc=week")
        snap = await ot.expect("snapshot")
        await ot.send({"type": "insert", "v": snap["v"], "seq": 99, "pos": 0, "text": "new "})
        await ot.expect("ack")
        await y.connect(yurl(server, "week"))
        expected = "new [y]delta gamma beta alpha  offline 😀"
        await until(lambda: y.plain() == expected)
        for _ in range(100):
            state = await doc_state(server, "week")
            if "".join(p["insert"] for p in state["content"]) == expected:
                break
            await asyncio.sleep(0.05)
        assert "".join(p["insert"] for p in state["content"]) == expected
        await y.disconnect()
        await ot.close()
    finally:
        server.stop()


async def test_ot_presence_appears_to_yjs_clients_as_awareness(server: ServerProcess) -> None:
    ot = await RawClient.connect(server, f"token={token('otto')}&doc=pres")
    await ot.expect("snapshot", v=0)
    await ot.send({"type": "op", "v": 0, "seq": 1, "op": [{"insert": "hé😀llo"}]})
    await ot.expect("ack", v=1)
    await ot.send(
        {
            "type": "presence",
            "v": 1,
            "cursor": {"index": 3, "length": 2},
            "state": {"color": "#123456"},
        }
    )
    y = YClient(2024)
    await y.connect(yurl(server, "pres"))
    await asyncio.wait_for(y.synced.wait(), 10)

    def bridged() -> dict[str, Any] | None:
        for state in y.awareness.values():
            if isinstance(state, dict) and "tandem" in state:
                return state
        return None

    await until(lambda: bridged() is not None)  # a joiner gets OT presence too
    state = bridged()
    assert state is not None
    assert state["user"] == {"name": "Otto", "color": "#123456"}
    assert state["tandem"]["index"] == 3 and state["tandem"]["length"] == 2
    # The relative positions resolve, in the Yjs client's own doc, to the same
    # characters: 'l' (code point 3) and 'l' (code point 5).
    anchor, head = state["cursor"]["anchor"], state["cursor"]["head"]
    # The replica writes with its incarnation's client id (protocol.md, "Incarnations").
    [server_id] = y.server_ids()
    assert anchor["item"] == {"client": server_id, "clock": 4}  # h é 😀(2 units) → 'l' at 4
    assert head["item"] == {"client": server_id, "clock": 6}
    # Moving the caret sends a newer state; leaving removes it.
    await ot.send({"type": "presence", "v": 1, "cursor": {"index": 6, "length": 0}})
    await until(lambda: (bridged() or {}).get("tandem", {}).get("index") == 6)
    end = (bridged() or {})["cursor"]["anchor"]
    assert end == {"type": None, "tname": "content", "item": None, "assoc": 0}
    await ot.close()
    await until(lambda: bridged() is None)
    await y.disconnect()


async def test_yjs_awareness_appears_to_ot_clients_as_presence(server: ServerProcess) -> None:
    ot = await RawClient.connect(server, f"token={token('otto')}&doc=aware")
    await ot.expect("snapshot", v=0)
    await ot.send({"type": "op", "v": 0, "seq": 1, "op": [{"insert": "a😀bc"}]})
    await ot.expect("ack", v=1)
    y = YClient(777)
    await y.connect(yurl(server, "aware"))
    await asyncio.wait_for(y.synced.wait(), 10)
    y.insert(4, "é!")  # "a😀bcé!" — its own items, clocks 0, 1 under client 777
    await ot.expect("op", v=2)
    # y-quill style: anchor at 'b' (server item, clock 3: a=0, 😀=1-2), head at '!'.
    [server_id] = y.server_ids()
    cursor = {
        "anchor": {
            "type": None,
            "tname": None,
            "item": {"client": server_id, "clock": 3},
            "assoc": 0,
        },
        "head": {"type": None, "tname": None, "item": {"client": 777, "clock": 1}, "assoc": 0},
    }
    await y.set_awareness(1, {"user": {"name": "Yuki", "color": "#abcdef"}, "cursor": cursor})
    message = await ot.expect("presence", user="yuki")
    assert message["cursor"] == {"index": 2, "length": 3}
    assert message["state"]["yjs"]["user"] == {"name": "Yuki", "color": "#abcdef"}
    # A cursor that cannot be resolved is null; the state still arrives.
    await y.set_awareness(2, {"user": {"name": "Yuki"}, "cursor": {"anchor": 5, "head": None}})
    message = await ot.expect("presence", user="yuki")
    assert message["cursor"] is None and message["state"]["yjs"]["user"] == {"name": "Yuki"}
    await y.disconnect()
    await ot.expect("presence", user="yuki", left=True)
    await ot.close()
