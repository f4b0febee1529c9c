"""A large document's snapshot content is encoded once per version and shared by its
joiners (``DocumentSession._snapshot_content``), and never outlives its version: a
join after a commit, or in another incarnation, sees that document, not the cached one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.unit.recording_peer import Peer

from tandem.metrics import Metrics
from tandem.ot.delta import Delta
from tandem.records import OpRecord
from tandem.session.document import CACHED_CONTENT_CHARS
from tandem.session.manager import DocumentManager
from tandem.settings import Settings
from tandem.storage.incarnations import Incarnation
from tandem.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio
DOC = "large"
TEXT = "tandem " * (CACHED_CONTENT_CHARS // 7 + 1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def manager() -> AsyncIterator[DocumentManager]:
    store = MemoryStore()
    await store.open()
    await store.append([OpRecord(DOC, 1, Delta().insert(TEXT), "c@ada", 1, "ada", 1.0)])
    manager = DocumentManager(store, Settings(node_id="n", data_dir=Path("unused")), Metrics("s"))
    await manager.start()
    yield manager
    await manager.close()
    await store.close()


async def joined(session: Any, client: str) -> tuple[Peer, dict[str, Any], int]:
    peer = Peer(client)
    size = await session.join(peer, "write", None)
    [reply] = peer.sent
    return peer, orjson.loads(reply), size


async def test_joins_at_one_version_share_one_encoding_and_a_commit_replaces_it(
    manager: DocumentManager,
) -> None:
    session = await manager.open(DOC)
    author, first, size = await joined(session, "a")
    assert first["content"] == [{"insert": TEXT}]
    assert size == len(author.sent[0])  # what the join cost, for the caller to charge
    _, second, _ = await joined(session, "b")
    assert second["content"] == first["content"]
    assert session._snapshot_content() is session._snapshot_content()  # not re-encoded
    await session.submit(session.member(author), Delta().retain(len(TEXT)).insert("!"), 1, 1, None)
    await manager.committer.drain()
    _, third, _ = await joined(session, "c")
    assert third["v"] == 2
    assert third["content"] == [{"insert": TEXT + "!"}]
    cached = session._snapshot_content()
    session.incarnation = Incarnation("f" * 32)  # a restore: same version, another history
    assert session._snapshot_content() is not cached
