"""Deleting, erasing, copying and renaming stored documents (``storage/document_admin.py``),
against every store: after an erasure no table holds a row naming the document.
"""

from __future__ import annotations

import pytest

from tandem.errors import ConflictError
from tandem.ot.delta import Delta
from tandem.storage import Delivery, OpRecord, Snapshot, Store, open_outbox
from tandem.storage.document_admin import Tombstone, open_document_admin

pytestmark = pytest.mark.anyio


def op(doc: str, version: int, text: str) -> OpRecord:
    return OpRecord(doc, version, Delta().insert(text), "c1", version, "ann", 1000.0 + version)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def seed(store: Store, doc: str) -> None:
    await store.append([op(doc, 1, "a"), op(doc, 2, "b")])
    await store.save_snapshot(Snapshot(doc, 2, Delta().insert("ba")))
    await open_outbox(store).enqueue(Delivery("d1", "http://x/h", doc, 0, 2, 0, 1.0, 1.0), None)


async def test_erase_leaves_no_row(store: Store) -> None:
    admin = open_document_admin(store)
    await seed(store, "gone")
    await seed(store, "kept")
    assert (await admin.rows("gone"))["ops"] == 2
    await admin.remove("gone", Tombstone("gone", 5.0, 2, "root"))  # delete: a marker stays
    rows = await admin.rows("gone")
    assert rows.pop("document_tombstones") == 1 and set(rows.values()) == {0}
    assert await admin.tombstones() == [Tombstone("gone", 5.0, 2, "root")]
    await admin.remove("gone", None)  # erase: nothing at all
    assert set((await admin.rows("gone")).values()) == {0}
    assert await store.head("gone") == 0
    assert await store.head("kept") == 2  # another document untouched
    assert [d.doc for d in await store.list_documents()] == ["kept"]
    await store.append([op("gone", 1, "fresh")])  # recreated afresh from version 1
    assert [r.op.to_json() for r in (await store.load("gone")).ops] == [[{"insert": "fresh"}]]


async def test_copy_and_rename(store: Store) -> None:
    admin = open_document_admin(store)
    await seed(store, "src")
    await admin.copy("src", "dup")
    original, copied = await store.load("src"), await store.load("dup")
    assert copied.version == original.version == 2
    assert [r.op for r in copied.ops] == [r.op for r in original.ops]
    with pytest.raises(ConflictError):
        await admin.copy("src", "dup")  # the target exists
    await admin.rename("dup", "moved")
    assert await store.head("dup") == 0 and await store.head("moved") == 2
    assert (await admin.rows("dup"))["ops"] == 0
    await store.append([op("moved", 3, "c")])  # the renamed document goes on
    assert await store.find_seq("moved", "c1", 3) == 3
