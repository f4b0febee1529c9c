"""Incarnations in one process (``session/incarnation.py``): which joins get a catch-up,
and how a new incarnation's Yjs replica is built and guarded.

The end-to-end restore (real server, SQLite and PostgreSQL, Python, JavaScript
and Yjs clients) is ``tests/integration/test_restore_rejoin.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pycrdt import Doc, Text
from tests.unit.recording_peer import Peer

from tandem.errors import StaleIncarnation
from tandem.merge import yproto
from tandem.merge.replica import SERVER_CLIENT_ID, TEXT_NAME
from tandem.metrics import Metrics
from tandem.ot.delta import Delta
from tandem.records import OpRecord
from tandem.session.incarnation import catch_up_allowed, check_yjs_frame
from tandem.session.manager import DocumentManager
from tandem.settings import Settings
from tandem.storage import open_incarnations
from tandem.storage.incarnations import LEGACY, Incarnation
from tandem.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio
DOC = "incarnate"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    await store.open()
    await store.append(
        [
            OpRecord(DOC, v, Delta().retain(v - 1).insert("abcde"[v - 1]), "c@ada", v, "ada", 1.0)
            for v in range(1, 6)
        ]
    )
    yield store
    await store.close()


async def opened(store: MemoryStore) -> tuple[DocumentManager, Any]:
    manager = DocumentManager(store, Settings(node_id="n", data_dir=Path("unused")), Metrics("i"))
    await manager.start()
    return manager, await manager.open(DOC)


async def answer(session: Any, version: int | None, incarnation: str | None) -> dict[str, Any]:
    peer = Peer(f"p{len(session.members)}")
    await session.join(peer, "write", version, incarnation=incarnation)
    return orjson.loads(peer.sent[0])


async def test_a_version_of_another_incarnation_gets_a_snapshot(store: MemoryStore) -> None:
    manager, session = await opened(store)
    try:
        current = session.incarnation.id
        assert len(current) == 32
        same = await answer(session, 3, current)
        assert same["type"] == "catchup" and same["i"] == current and same["from"] == 3
        other = await answer(session, 3, "0" * 32)
        assert other["type"] == "snapshot" and other["i"] == current and other["v"] == 5
        older_client = await answer(session, 3, None)  # sends no i: trusted, as before
        assert older_client["type"] == "catchup"
    finally:
        await manager.close()


async def test_a_renewed_document_is_a_new_incarnation_with_a_reseeded_replica(
    store: MemoryStore,
) -> None:
    manager, session = await opened(store)
    old = session.incarnation
    old_state = session.replicas.replica.state()
    await manager.close()
    incarnations = open_incarnations(store)
    assert incarnations is not None and await incarnations.renew(DOC) == 1

    manager, session = await opened(store)
    try:
        new = session.incarnation
        assert new.id != old.id and new.yjs_from == 5
        assert new.retired == {SERVER_CLIENT_ID, old.yjs_client}  # the replica it replaces
        replica = session.replicas.replica
        assert replica.client_id == new.yjs_client and replica.clients() == [new.yjs_client]
        assert str(replica.text) == "abcde"
        reply = await answer(session, 3, old.id)
        assert reply["type"] == "snapshot" and reply["i"] == new.id
        # Another node (or a restart) builds byte-identical items from the same row.
        other, again = await opened(store)
        assert again.incarnation == new
        assert again.replicas.replica.state() == replica.state()
        await other.close()

        # A Yjs client holding the old replica's items is stale; one synced now is not.
        stale = Doc(client_id=99)
        stale.apply_update(old_state)
        with pytest.raises(StaleIncarnation):
            check_yjs_frame(new, step1(stale.get_state()))
        stale.get(TEXT_NAME, type=Text).insert(0, "offline ")
        with pytest.raises(StaleIncarnation):
            check_yjs_frame(new, update(stale.get_update(replica.state_vector())))
        fresh = Doc(client_id=100)
        fresh.apply_update(replica.state())
        check_yjs_frame(new, step1(fresh.get_state()))
        fresh.get(TEXT_NAME, type=Text).insert(0, "new ")
        check_yjs_frame(new, update(fresh.get_update(replica.state_vector())))
    finally:
        await manager.close()


def step1(state_vector: bytes) -> yproto.Message:
    return yproto.parse(yproto.sync_step1(state_vector))


def update(payload: bytes) -> yproto.Message:
    return yproto.parse(yproto.sync_update(payload))


def test_catch_up_rules() -> None:
    current = Incarnation("a" * 32)
    assert catch_up_allowed(current, "a" * 32) and catch_up_allowed(current, None)
    assert not catch_up_allowed(current, "b" * 32)
    assert catch_up_allowed(LEGACY, "b" * 32)  # a store without incarnations: one history
