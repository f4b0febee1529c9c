"""A refused Yjs update changes nothing, and a Yjs client from before it merges cleanly.

An update whose dependencies the server lacks is refused before it touches
the replica: the server asks for a resync (SyncStep1) and neither applies part
of it nor rebuilds the replica. A rebuild used to re-make ops whose stored
update had left memory from their deltas; a Yjs client holding the old items
could then merge its offline edit as duplicated text.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from pycrdt import Doc, Text

from tandem import Settings
from tandem.client import TandemClient
from tandem.merge import yproto
from tandem.server.app import Tandem
from tandem.session.stored_replica import build_replica

from .harness import until
from .test_mixed_sessions import serving
from .yclient import YClient
from .ystructs import canonical

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def _frame(ws: websockets.ClientConnection) -> bytes:
    frame = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(frame, bytes)
    return frame


SECRET = "refusal-test-secret-0123456789abcdef"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_refused_update_changes_nothing_and_old_clients_merge_cleanly(
    tmp_path: Path,
) -> None:
    tandem = Tandem(Settings(data_dir=tmp_path / "data", jwt_secret=SECRET, snapshot_every=3))
    async with serving(tandem) as host:
        jwt = tandem.authenticator.issue("otto", docs={"*": "write"}, now=time.time())
        ot = TandemClient(f"ws://{host}/collab", jwt)
        handle = await ot.join("week", timeout=10)
        for word in ["alpha ", "beta ", "gamma ", "delta "]:
            handle.insert(0, word)
            await handle.synced(10)
        yjwt = tandem.authenticator.issue("yuki", docs={"*": "write"}, now=time.time())
        yurl = f"ws://{host}/yjs/week?token={yjwt}"
        old = YClient(31337)
        await old.connect(yurl)
        await asyncio.wait_for(old.synced.wait(), 10)
        await until(lambda: old.plain() == "delta gamma beta alpha ")
        await old.disconnect()
        old.insert(len(old.plain()), "offline 😀")  # edited while away, on the old items

        session = tandem.documents.sessions["week"]
        await tandem.documents.committer.drain()
        replica = await session.replicas.ready()
        before = replica.state()

        # Another client's update that builds on changes the server never got.
        stranger: Doc[Any] = Doc(client_id=555)
        text = stranger.get("content", type=Text)
        text.insert(0, "abc")
        state = stranger.get_state()
        text.insert(1, "X")
        dependent = stranger.get_update(state)
        async with websockets.connect(yurl, max_size=None) as ws:
            await ws.send(yproto.sync_update(dependent))
            step1s = 0
            while step1s < 2:  # the opening SyncStep1, then the resync request
                message = yproto.parse(await _frame(ws))
                if (message.kind, message.sub) == (yproto.SYNC, yproto.SYNC_STEP1):
                    step1s += 1
        assert session.replicas.replica is replica, "a refused update rebuilt the replica"
        assert replica.state() == before, "a refused update changed the replica"

        handle.insert(0, "new ")
        await handle.synced(10)
        await old.connect(yurl)
        expected = "new delta gamma beta alpha offline 😀"
        await until(lambda: old.plain() == expected)
        await until(lambda: handle.text == expected)
        await tandem.documents.committer.drain()
        rebuilt = build_replica(await tandem.store.load("week"))
        assert rebuilt.plain == expected
        assert canonical(rebuilt.state()) == canonical(session.replicas.replica.state())
        await old.disconnect()
        await ot.close()
