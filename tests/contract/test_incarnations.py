"""The incarnation table (``tandem/storage/incarnations.py``), against every store,
and that deleting, copying and renaming a document (``storage/document_admin.py``)
start a new incarnation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tandem.ot.delta import Delta
from tandem.records import OpRecord
from tandem.storage import Store, open_incarnations
from tandem.storage.document_admin import Tombstone, open_document_admin
from tandem.storage.incarnations import Incarnation, IncarnationStore, new_incarnation

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def table(store: Store) -> IncarnationStore:
    incarnations = open_incarnations(store)
    assert incarnations is not None
    return incarnations


async def test_create_keeps_the_first_row(store: Store) -> None:
    incarnations = table(store)
    assert await incarnations.get("d") is None
    first = new_incarnation(12, frozenset({1, 77}))
    assert await incarnations.create("d", first) == first
    assert await incarnations.create("d", new_incarnation(0, frozenset())) == first  # lost race
    assert await incarnations.get("d") == first
    assert first.yjs_client >= 1 << 31 and first.yjs_client not in first.retired
    assert len(first.id) == 32 and first.id != new_incarnation(0, frozenset()).id


async def test_renew_deletes_the_matching_rows(store: Store) -> None:
    incarnations = table(store)
    for doc in ("notes/a", "notes/b", "other"):
        await incarnations.create(doc, new_incarnation(0, frozenset()))
    assert await incarnations.renew("notes/*") == 2
    assert await incarnations.get("notes/a") is None and await incarnations.get("notes/b") is None
    assert await incarnations.get("other") is not None
    assert await incarnations.renew() == 1
    assert await incarnations.get("other") is None


async def test_incarnations_survive_reopening(make_store: Callable[[], Store]) -> None:
    first = make_store()
    await first.open()
    row = await table(first).create("d", Incarnation("ab" * 16, 1, 0, frozenset()))
    await first.close()
    second = make_store()
    await second.open()
    assert await table(second).get("d") == row


async def test_delete_copy_and_rename_start_new_incarnations(store: Store) -> None:
    incarnations, admin = table(store), open_document_admin(store)
    await store.append([OpRecord("src", 1, Delta().insert("x"), "c", 1, "u", 1.0)])
    for doc in ("src", "copy", "gone"):
        await incarnations.create(doc, new_incarnation(0, frozenset()))
    await admin.copy("src", "copy")  # "copy" had a row (opened while empty): a new history now
    assert await incarnations.get("copy") is None
    assert await incarnations.get("src") is not None
    await admin.rename("src", "moved")
    assert await incarnations.get("src") is None and await incarnations.get("moved") is None
    await admin.remove("gone", Tombstone("gone", 2.0, 0, "admin"))
    assert await incarnations.get("gone") is None
    assert (await admin.rows("gone"))["document_incarnations"] == 0
