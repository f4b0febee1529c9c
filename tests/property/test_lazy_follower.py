"""A follower that relays other owners' ops and applies them lazily is the eager one.

Three real ``DocumentManager``/``DocumentSession``s on one ``MemoryStore``: the
owner sequences random ops (inserts with and without attributes, deletes,
formatting) of its member; every committed op reaches two followers as the
owner publishes it (``encode_op``), in order, sometimes one dropped (the next
one then waits and the gap is read from the store, as on the bus). One
follower is told another node owns the document (a lease stand-in: the only
thing a lease decides here is ``owns``), so it relays ops lazily; the other has
no leases, so it applies each op as it arrives, as every node did before.
Between ops, in any interleaving: members join either follower by snapshot or
by catch-up, read the document (REST), show presence, and the lazy follower
takes the document over (it owns it from then on, reads the store and
sequences an op of its own). Checked after every step and at the end:

* the frames every follower member heard are the same, in the same order, on
  both followers (ops, acks, joins' replies, presence);
* the lazy follower's document, history, client seqs, merge checkpoints and
  CRDT replica equal the eager follower's (and the owner's) once read;
* the lazy path was taken (ops waited, unapplied).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.property.strategies import document_and_op, scripted_edit

from tandem.metrics import Metrics
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.presence import Cursor
from tandem.protocol import encode, op_message
from tandem.records import OpRecord
from tandem.session.manager import DocumentManager
from tandem.session.payloads import RemoteOp, decode_remote, encode_op
from tandem.settings import Settings
from tandem.storage.memory import MemoryStore

DOC = "follow"
STYLES: list[dict[str, Any] | None] = [None, {"bold": True}, {"italic": True, "bold": True}]

action = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 1000), st.integers(0, 2)),
    st.tuples(st.just("delete"), st.integers(0, 1000), st.integers(1, 3)),
    st.tuples(st.just("format"), st.integers(0, 1000), st.integers(1, 2)),
    st.tuples(st.just("drop"), st.just(0), st.just(0)),
    st.tuples(st.just("join"), st.integers(0, 1), st.integers(0, 50)),
    st.tuples(st.just("read"), st.just(0), st.just(0)),
    st.tuples(st.just("presence"), st.integers(0, 1000), st.just(0)),
    st.tuples(st.just("takeover"), st.just(0), st.just(0)),
)


class Peer:
    """A client connection: keeps every frame it was sent."""

    def __init__(self, client: str, user: str = "u") -> None:
        self.client, self.user, self.name = client, user, user
        self.frames: list[str] = []

    def send(self, message: str) -> None:
        self.frames.append(message)


class Lease:
    """Which node owns the document, as far as a follower's session asks (``owns``)."""

    def __init__(self) -> None:
        self.mine = False

    def owns(self, doc: str) -> bool:
        return self.mine

    def fenced(self, doc: str) -> None:
        self.mine = False


async def _manager(store: MemoryStore, node: str) -> DocumentManager:
    config = Settings(
        node_id=node,
        data_dir=Path("unused"),
        snapshot_every=5,
        merge_checkpoint_every=3,
    )
    manager = DocumentManager(store, config, Metrics(node))
    await manager.start()
    return manager


async def _run(actions: list[tuple[str, int, int]]) -> None:
    store = MemoryStore()
    await store.open()
    owner_node, lazy_node, eager_node = (
        await _manager(store, "a"),
        await _manager(store, "b"),
        await _manager(store, "c"),
    )
    lease = Lease()
    try:
        owner = await owner_node.open(DOC)
        lazy = await lazy_node.open(DOC)
        eager = await eager_node.open(DOC)
        lazy_node.owners = lease  # type: ignore[assignment]
        typist = Peer("typist")
        await owner.join(typist, "write", None)
        author = owner.member(typist)
        # The same clients on each follower: their frames must be the same.
        watchers: dict[str, list[Peer]] = {"lazy": [], "eager": []}

        async def add_watcher(version: int | None) -> None:
            name = f"w{len(watchers['lazy'])}"
            for which, session in (("lazy", lazy), ("eager", eager)):
                peer = Peer(name)
                await session.join(peer, "write", version)
                watchers[which].append(peer)

        await add_watcher(None)
        published = 0  # versions the followers were sent
        seq = 0
        took_over = False
        new_author = author
        waited = 0  # the most relayed ops the lazy follower held unapplied

        async def publish(drop: bool = False) -> None:
            """The writer's committed ops, to every other node, as its bus would."""
            nonlocal published, waited
            writer, node, hearing = (
                (lazy, "b", [eager]) if took_over else (owner, "a", [lazy, eager])
            )
            await owner_node.committer.drain()
            await lazy_node.committer.drain()
            for record in await store.get_ops(DOC, published, writer.committed_version):
                payload = encode_op(node, record)
                remote = decode_remote(DOC, "x", payload)
                assert isinstance(remote, RemoteOp)
                assert remote.frame() == encode(op_message(record))
                published = record.version
                if drop:
                    drop = False
                    continue  # lost on the bus: the next op waits, the store fills the gap
                for session in hearing:
                    session.on_bus(payload)
                waited = max(waited, len(lazy.replication.relayed))
            await settle()

        async def settle() -> None:
            for _ in range(5):
                await asyncio.sleep(0)  # a gap's store read

        def check_same_frames() -> None:
            for mine, theirs in zip(watchers["lazy"], watchers["eager"], strict=True):
                assert mine.frames == theirs.frames

        for kind, a, b in actions:
            writer = lazy if took_over else owner
            text = writer.committed_document.text()
            if kind in ("insert", "delete", "format"):
                op = scripted_edit(kind, a, b, len(text), f"<{seq}>", STYLES)
                if op is None:
                    continue
                seq += 1
                if took_over:
                    await lazy.submit(new_author, op.chop(), lazy.committed_version, seq)
                else:
                    await owner.submit(author, op.chop(), owner.committed_version, seq)
                await publish()
            elif kind == "drop" and not took_over:
                seq += 1
                await owner.submit(author, Delta().insert(f"[{seq}]"), owner.committed_version, seq)
                await publish(drop=True)
            elif kind == "join":
                version = None if a == 0 else min(b, lazy.committed_version)
                await add_watcher(version)
            elif kind == "read":
                assert lazy.committed_document == eager.committed_document
                assert lazy.committed_version == eager.committed_version
            elif kind == "presence" and not took_over:
                for which, session in (("lazy", lazy), ("eager", eager)):
                    member = session.member(watchers[which][-1])
                    length = len(session.committed_document)
                    session.presence.update(
                        member, Cursor(a % (length + 1), 0), None, session.committed_version, 0.0
                    )
            elif kind == "takeover" and not took_over:
                # As ``Owners._read_up``: the store's ops after what this node has, then
                # sequencing here. The eager follower reads the store too (a gap).
                lease.mine = took_over = True
                for session in (lazy, eager):
                    session.replication.caught_up(
                        await store.get_ops(DOC, session.committed_version)
                    )
                published = lazy.committed_version
                new_peer = Peer("new-owner")
                await lazy.join(new_peer, "write", None)
                new_author = lazy.member(new_peer)
            check_same_frames()

        await publish()
        for session in (lazy, eager):
            session.replication.catch_up()  # a dropped last op: read from the store
        await settle()
        assert lazy.committed_version == eager.committed_version
        assert lazy.committed_version >= owner.committed_version
        # Everything the lazy follower holds, read, equals what applying each op made.
        assert lazy.committed_document == eager.committed_document
        assert lazy.sequencer.version == eager.sequencer.version
        assert lazy.sequencer.document == eager.sequencer.document
        assert [(r.version, r.op, r.seq) for r in lazy.sequencer.entries_since(0)] == [
            (r.version, r.op, r.seq) for r in eager.sequencer.entries_since(0)
        ]
        assert lazy.last_seqs == eager.last_seqs
        assert list(lazy.offline._checkpoints) == list(eager.offline._checkpoints)
        assert (await lazy.replicas.ready()).content() == (await eager.replicas.ready()).content()
        assert lazy.presence.snapshot() == eager.presence.snapshot()
        if not took_over:
            assert lazy.committed_document == owner.committed_document
        # Every version is stored once, the new owner's on top of the old one's.
        stored = await store.get_ops(DOC, 0)
        assert [r.version for r in stored] == list(range(1, lazy.committed_version + 1))
        check_same_frames()
        if [k for k, _, _ in actions].count("insert") >= 3 and not any(
            k in ("drop", "presence", "takeover") for k, _, _ in actions
        ):
            assert waited > 0, "the lazy path was never taken"
    finally:
        lazy_node.owners = None  # the stand-in has no leases to give back
        for manager in (owner_node, lazy_node, eager_node):
            await manager.close()
        await store.close()


@settings(max_examples=80, deadline=None)
@given(st.lists(action, min_size=1, max_size=40))
def test_the_lazy_follower_is_the_eager_one(actions: list[tuple[str, int, int]]) -> None:
    asyncio.run(_run(actions))


@settings(max_examples=300, deadline=None)
@given(document_and_op(), st.sampled_from([None, 3]), st.sampled_from(["k@u", "k2@u@x"]))
def test_a_relayed_frame_is_the_frame_of_the_decoded_op(
    document_op: tuple[Document, Delta], seq: int | None, key: str
) -> None:
    """The frame built from the payload's JSON is the text the decoded record makes."""
    _, op = document_op
    record = OpRecord(DOC, 4, op, key, seq, "u", 1.5, b"\x01" if seq else None)
    remote = decode_remote(DOC, "b", encode_op("a", record))
    assert isinstance(remote, RemoteOp)
    assert remote.frame() == encode(op_message(record))
    assert remote.record() == record
