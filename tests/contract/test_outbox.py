"""The webhook outbox contract (``tandem/storage/outbox.py``), against every store.

The outbox lives beside the store's data: a second store object over the same
storage (a restarted process) sees what the first queued.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tandem.storage import Delivery, Store, open_outbox

pytestmark = pytest.mark.anyio

MakeStore = Callable[[], Store]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def delivery(
    id: str, doc: str, start: int, end: int, due: float = 100.0, url: str = "u"
) -> Delivery:
    return Delivery(id, url, doc, start, end, 0, due, 50.0)


async def test_enqueue_is_compare_and_set_on_the_cursor(store: Store) -> None:
    outbox = open_outbox(store)
    assert await outbox.enqueue(delivery("a", "d", 0, 3), None)
    assert not await outbox.enqueue(delivery("b", "d", 0, 4), None)  # a cursor exists now
    assert not await outbox.enqueue(delivery("c", "d", 2, 4), 2)  # not at 2
    assert await outbox.enqueue(delivery("d", "d", 3, 5), 3)
    assert await outbox.cursors("u") == {"d": 5}
    assert await outbox.cursors("other") == {}
    assert await outbox.pending() == 2


async def test_claim_leases_the_oldest_range_per_document_and_url(store: Store) -> None:
    outbox = open_outbox(store)
    await outbox.enqueue(delivery("a1", "a", 0, 2, due=10), None)
    await outbox.enqueue(delivery("a2", "a", 2, 4, due=5), 2)  # due first, but after a1
    await outbox.enqueue(delivery("b1", "b", 0, 1, due=20), None)
    await outbox.enqueue(delivery("c1", "c", 0, 1, due=500), None)  # not due
    claimed = await outbox.claim(now=100.0, lease=30.0, limit=10)
    assert sorted(d.id for d in claimed) == ["a1", "b1"]
    assert await outbox.claim(now=101.0, lease=30.0, limit=10) == []  # leased
    assert await outbox.next_due() == 5.0  # a2, held back behind a1
    again = await outbox.claim(now=130.0, lease=30.0, limit=1)
    assert [d.id for d in again] == ["a1"]  # the lease ran out: taken again, oldest due first


async def test_retry_and_finish(store: Store) -> None:
    outbox = open_outbox(store)
    await outbox.enqueue(delivery("a1", "a", 0, 2), None)
    await outbox.enqueue(delivery("a2", "a", 2, 3), 2)
    [first] = await outbox.claim(now=100.0, lease=30.0, limit=10)
    await outbox.retry(first.id, 1, 200.0)
    assert await outbox.claim(now=150.0, lease=30.0, limit=10) == []
    [retried] = await outbox.claim(now=200.0, lease=30.0, limit=10)
    assert (retried.id, retried.attempts) == ("a1", 1)
    await outbox.finish("a1")
    [second] = await outbox.claim(now=200.0, lease=30.0, limit=10)
    assert second.id == "a2"  # the next range of the document goes out once a1 is done
    await outbox.finish("a2")
    assert await outbox.pending() == 0
    assert await outbox.next_due() is None


async def test_subscribe_keeps_the_first_time(store: Store) -> None:
    outbox = open_outbox(store)
    assert await outbox.subscribe("u", 10.0) == 10.0
    assert await outbox.subscribe("u", 99.0) == 10.0


async def test_forget_document(store: Store) -> None:
    outbox = open_outbox(store)
    await outbox.enqueue(delivery("a1", "a", 0, 2), None)
    await outbox.enqueue(delivery("b1", "b", 0, 2), None)
    await outbox.forget_document("a")
    assert await outbox.cursors("u") == {"b": 2}
    assert [d.id for d in await outbox.claim(now=100.0, lease=1.0, limit=10)] == ["b1"]


async def test_the_outbox_survives_reopening(make_store: MakeStore) -> None:
    first = make_store()
    await first.open()
    await open_outbox(first).enqueue(delivery("a1", "a", 0, 2), None)
    await first.close()
    second = make_store()
    await second.open()
    outbox = open_outbox(second)
    assert await outbox.cursors("u") == {"a": 2}
    assert [d.id for d in await outbox.claim(now=100.0, lease=1.0, limit=10)] == ["a1"]
