"""The replica applied only when needed is the replica applied op by op.

A real ``DocumentManager``/``DocumentSession`` on a ``MemoryStore`` (small
``snapshot_every``) takes random OT ops (plain, formatted with one or two
attributes, deletes, formatting of ranges), Yjs clients joining through the
server's ``YjsLink`` (SyncStep1 → SyncStep2), editing and leaving, Yjs updates
arriving while no OT op is applied yet, and snapshots, in any interleaving.
After every step, and at the end:

* the live replica, caught up, holds exactly the items of a reference replica
  that applied every committed op from the log the moment it committed (the
  eager replica of before), compared item by item (``canonical``);
* the replica rebuilt from the store (a restart; another node) holds the same
  items, and every op stored without its Yjs update was an op without
  attributes applied to a replica that never held a formatting item;
* every Yjs client, resynced, has the server's text (nothing duplicated).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text
from tests.integration.ystructs import canonical
from tests.property.strategies import scripted_edit
from tests.property.yjs_link import FrameLink

from tandem.merge import yproto
from tandem.merge.replica import SERVER_CLIENT_ID, Replica, carries_formats, replay_record
from tandem.merge.updates import clock_ends
from tandem.metrics import Metrics
from tandem.session.manager import DocumentManager
from tandem.session.stored_replica import build_replica
from tandem.settings import Settings
from tandem.storage.memory import MemoryStore

DOC = "lazy"
STYLES: list[dict[str, Any]] = [
    {"bold": True},
    {"italic": True},
    {"bold": True, "italic": True},
    {"bold": True, "italic": True, "underline": True},
]

action = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 1000), st.sampled_from([None, 0, 1, 2, 3])),
    st.tuples(st.just("delete"), st.integers(0, 1000), st.integers(1, 3)),
    st.tuples(st.just("format"), st.integers(0, 1000), st.sampled_from([0, 1, 2, 3])),
    st.tuples(st.just("join"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("yjs"), st.integers(0, 2), st.integers(0, 1000)),
    st.tuples(st.just("leave"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("snapshot"), st.just(0), st.just(0)),
)


class Recorder:
    """An OT ``Peer`` keeping nothing: the test reads the store, not the broadcasts."""

    def __init__(self, client: str) -> None:
        self.client, self.user, self.name = client, "u1", "u1"

    def send(self, message: str) -> None:
        del message


class YjsClient:
    def __init__(self, index: int) -> None:
        self.doc: Doc[Any] = Doc(client_id=1000 + index)
        self.text = self.doc.get("content", type=Text)
        self.link: FrameLink | None = None

    def take(self) -> None:
        """Apply what the server sent (SyncStep2s and Updates)."""
        assert self.link is not None
        for message in self.link.frames:
            if message.kind == yproto.SYNC and message.sub != yproto.SYNC_STEP1:
                self.doc.apply_update(message.payload)
        self.link.frames.clear()


async def _run(actions: list[tuple[str, int, int]], seed: int) -> None:
    rng = random.Random(seed)
    store = MemoryStore()
    await store.open()
    config = Settings(node_id="lazy", data_dir=Path("unused"), snapshot_every=7)
    manager = DocumentManager(store, config, Metrics("lazy"))
    await manager.start()
    try:
        session = await manager.open(DOC)
        tandem = SimpleNamespace(documents=manager, metrics=manager.metrics, settings=config)
        author = Recorder("c1")
        await session.join(author, "write", None)
        member = session.member(author)
        clients = [YjsClient(index) for index in range(3)]
        reference = Replica(client_id=session.incarnation.yjs_client)
        seq = 0

        async def settle() -> None:
            await manager.committer.drain()
            await asyncio.sleep(0)
            for record in await store.get_ops(DOC, reference.version, session.committed_version):
                replay_record(reference, record)  # the eager replica: every op as it commits

        async def sync(client: YjsClient) -> None:
            assert client.link is not None
            await client.link.handle(yproto.sync_step1(client.doc.get_state()))
            client.take()

        for kind, a, b in actions:
            text = session.sequencer.document.text()
            if kind in ("insert", "delete", "format"):
                op = scripted_edit(kind, a, b, len(text), f"<{seq}>", STYLES)
                if op is None:
                    continue
                seq += 1
                await session.submit(member, op.chop(), session.sequencer.version, seq)
            elif kind == "join" and clients[a].link is None:
                client = clients[a]
                client.link = FrameLink()
                await client.link.join(tandem, DOC, "write")
                await sync(client)
            elif kind == "yjs" and clients[a].link is not None:
                client = clients[a]
                client.take()
                before = client.doc.get_state()
                length = len(str(client.text))
                position = b % (length + 1)
                with client.doc.transaction():
                    client.text.insert(position, f"[y{seq}]")
                seq += 1
                update = client.doc.get_update(before)
                assert client.link is not None
                await client.link.handle(yproto.sync_update(update))
            elif kind == "leave" and clients[a].link is not None:
                client = clients[a]
                assert client.link is not None
                client.take()
                client.link.leave()
                client.link = None
            elif kind == "snapshot":
                snapshot = session.snapshot()
                if snapshot is not None:
                    await store.save_snapshot(snapshot)
            if rng.random() < 0.5:
                await settle()

        await settle()
        live = await session.replicas.ready()
        assert live.version == session.committed_version == reference.version
        assert canonical(live.state()) == canonical(reference.state())
        assert live.content() == session.committed_document.to_delta()

        # Restart or another node: the same items from the store.
        loaded = await store.load(DOC)
        rebuilt = build_replica(loaded, session.incarnation)
        assert canonical(rebuilt.state()) == canonical(live.state())
        check = Replica(client_id=session.incarnation.yjs_client)
        named = check.client_id == SERVER_CLIENT_ID
        for record in await store.get_ops(DOC, 0, session.committed_version):
            if record.crdt is None:
                assert named and check.format_free and not carries_formats(record.op), record
            else:
                named = named or check.client_id in clock_ends(record.crdt)
            replay_record(check, record)
        assert canonical(check.state()) == canonical(live.state())

        # Every Yjs client, back, converges without duplicates.
        for client in clients:
            if client.link is None:
                client.link = FrameLink()
                await client.link.join(tandem, DOC, "write")
            client.take()
            await client.link.handle(yproto.sync_update(client.doc.get_update()))
            await sync(client)
            await manager.committer.drain()
            client.take()
        await settle()
        final = session.committed_document.text()
        for client in clients:
            client.take()
            assert str(client.text) == final
        for client in clients:
            assert client.link is not None
            client.link.leave()
    finally:
        await manager.close()
        await store.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(action, min_size=1, max_size=40), st.integers(0, 2**16))
def test_the_lazy_replica_is_the_eager_one(actions: list[tuple[str, int, int]], seed: int) -> None:
    asyncio.run(_run(actions, seed))
