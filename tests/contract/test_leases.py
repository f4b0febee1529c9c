"""The document lease contract (``storage/leases.py``) on real PostgreSQL.

Two "nodes" are two ``PostgresStore`` objects (two pools) over one schema, as
two ``tandem serve`` processes would be. The one-process stores (SQLite,
memory) have no leases and refuse a fence; that is checked here too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tandem.errors import FencedError
from tandem.ot.delta import Delta
from tandem.storage import OpRecord, PostgresStore, Store, open_leases
from tandem.storage.document_admin import open_document_admin
from tandem.storage.leases import Leases

pytestmark = pytest.mark.anyio

MakeStore = Callable[[], Store]
postgres_only = pytest.mark.parametrize("store_backend", ["postgres"])


def op(doc: str, version: int, text: str = "x") -> OpRecord:
    return OpRecord(doc, version, Delta().insert(text), "c1", version, "ann", 1000.0 + version)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def two_nodes(make_store: MakeStore) -> tuple[PostgresStore, Leases, PostgresStore, Leases]:
    a, b = make_store(), make_store()
    await a.open()
    await b.open()
    assert isinstance(a, PostgresStore) and isinstance(b, PostgresStore)
    leases_a, leases_b = open_leases(a), open_leases(b)
    assert leases_a is not None and leases_b is not None
    return a, leases_a, b, leases_b


@postgres_only
async def test_every_acquisition_raises_the_epoch(make_store: MakeStore) -> None:
    _, a, _, b = await two_nodes(make_store)
    assert await a.holder("d") is None
    first = await a.acquire("d", "node-a", 30)
    assert first.owner == "node-a" and first.epoch > 0
    assert 29 < first.remaining <= 30
    held = await b.acquire("d", "node-b", 30)
    assert (held.owner, held.epoch) == ("node-a", first.epoch)  # live: refused, unchanged
    assert await a.release("d", "node-a", first.epoch)
    taken = await b.acquire("d", "node-b", 30)  # at once, no TTL wait
    assert taken.owner == "node-b" and taken.epoch > first.epoch
    again = await a.acquire("d", "node-a", 30)
    assert (again.owner, again.epoch) == ("node-b", taken.epoch)
    # A node may take its own live lease again (a restarted process): a new epoch.
    mine = await b.acquire("d", "node-b", 30)
    assert mine.owner == "node-b" and mine.epoch > taken.epoch
    assert not await a.release("d", "node-a", first.epoch)  # not a's any more: no change
    holder = await a.holder("d")
    assert holder is not None and (holder.owner, holder.epoch) == ("node-b", mine.epoch)


@postgres_only
async def test_concurrent_acquisitions_grant_one_owner(make_store: MakeStore) -> None:
    _, a, _, b = await two_nodes(make_store)
    nodes = [f"node-{i}" for i in range(8)]
    states = await asyncio.gather(
        *((a if i % 2 else b).acquire("hot", node, 30) for i, node in enumerate(nodes))
    )
    assert len({(state.owner, state.epoch) for state in states}) == 1
    assert sum(state.owner == node for state, node in zip(states, nodes, strict=True)) == 1


@postgres_only
async def test_a_stale_epochs_commit_writes_nothing(make_store: MakeStore) -> None:
    store_a, a, store_b, b = await two_nodes(make_store)
    old = (await a.acquire("d", "node-a", 30)).epoch
    other = (await a.acquire("other", "node-a", 30)).epoch
    assert await store_a.commit([op("d", 1)], fence={"d": old}) is None
    await a.release("d", "node-a", old)
    new = (await b.acquire("d", "node-b", 30)).epoch
    assert new > old
    with pytest.raises(FencedError) as fenced:
        await store_a.commit([op("d", 2, "stale")], fence={"d": old})
    assert fenced.value.docs == ("d",)
    # One stale document fences the whole batch: the live one is not written either.
    with pytest.raises(FencedError) as both:
        await store_a.commit([op("other", 1), op("d", 2)], fence={"other": other, "d": old})
    assert both.value.docs == ("d",)
    assert await store_b.head("d") == 1
    assert await store_b.head("other") == 0
    await store_b.commit([op("d", 2, "owner's")], fence={"d": new})
    assert [r.op for r in await store_a.get_ops("d", 1)] == [op("d", 2, "owner's").op]


@postgres_only
async def test_a_deleted_documents_epochs_never_come_back(make_store: MakeStore) -> None:
    store_a, a, _, b = await two_nodes(make_store)
    old = (await a.acquire("d", "node-a", 30)).epoch
    await store_a.commit([op("d", 1)], fence={"d": old})
    await open_document_admin(store_a).remove("d", None)  # erase: no row names it any more
    assert await a.holder("d") is None
    with pytest.raises(FencedError):
        await store_a.commit([op("d", 1, "again")], fence={"d": old})
    assert (await b.acquire("d", "node-b", 30)).epoch > old


@postgres_only
async def test_a_fence_without_a_lease_row_or_for_a_missing_document_is_refused(
    make_store: MakeStore,
) -> None:
    store_a, a, _, _ = await two_nodes(make_store)
    with pytest.raises(FencedError):
        await store_a.commit([op("never-leased", 1)], fence={"never-leased": 1})
    epoch = (await a.acquire("d", "node-a", 30)).epoch
    with pytest.raises(ValueError, match="every document"):
        await store_a.commit([op("d", 1), op("e", 1)], fence={"d": epoch})
    assert await store_a.head("d") == 0


@postgres_only
async def test_expiry_is_on_the_databases_clock(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_a, a, _, b = await two_nodes(make_store)
    # The node's clock says the year 2100; the lease still lasts 0.5 s of the database's time.
    monkeypatch.setattr(time, "time", lambda: 4_102_444_800.0)
    state = await a.acquire("d", "node-a", 0.5)
    assert state.owner == "node-a"
    left = await store_a.pool.fetchval(
        "SELECT extract(epoch FROM expires - now())::float8 FROM document_leases WHERE doc = 'd'"
    )
    assert 0 < left <= 0.5
    assert (await b.acquire("d", "node-b", 30)).owner == "node-a"
    await asyncio.sleep(0.6)
    assert await a.renew("d", "node-a", state.epoch, 30) is None  # never revived
    taken = await b.acquire("d", "node-b", 30)
    assert taken.owner == "node-b" and taken.epoch > state.epoch


@postgres_only
async def test_renew_extends_only_a_live_lease_of_its_epoch(make_store: MakeStore) -> None:
    _, a, _, b = await two_nodes(make_store)
    epoch = (await a.acquire("d", "node-a", 1)).epoch
    renewed = await a.renew("d", "node-a", epoch, 30)
    assert renewed is not None and renewed.epoch == epoch and 29 < renewed.remaining <= 30
    assert await a.renew("d", "node-a", epoch + 1, 30) is None  # not its epoch
    assert await b.renew("d", "node-b", epoch, 30) is None  # not its lease
    assert await a.release("d", "node-a", epoch)
    released = await a.holder("d")
    assert released is not None and released.remaining == float("-inf")
    assert await a.renew("d", "node-a", epoch, 30) is None  # released: gone
    with pytest.raises(ValueError, match="positive"):
        await a.acquire("d", "node-a", 0)


@postgres_only
async def test_renew_many_extends_exactly_the_live_leases_of_their_epochs(
    make_store: MakeStore,
) -> None:
    _, a, _, b = await two_nodes(make_store)
    live = (await a.acquire("live", "node-a", 1)).epoch
    wrong = (await a.acquire("wrong", "node-a", 1)).epoch
    theirs = (await b.acquire("theirs", "node-b", 30)).epoch
    short = (await a.acquire("short", "node-a", 0.2)).epoch
    released = (await a.acquire("released", "node-a", 30)).epoch
    assert await a.release("released", "node-a", released)
    await asyncio.sleep(0.3)  # "short" expired: never revived
    held = [("live", live), ("wrong", wrong + 1000), ("theirs", theirs)]
    held += [("short", short), ("released", released), ("nowhere", 1)]
    renewed = await a.renew_many(held, "node-a", 30)
    assert list(renewed) == ["live"]
    assert renewed["live"].epoch == live and 29 < renewed["live"].remaining <= 30
    assert await a.renew_many([], "node-a", 30) == {}


@pytest.mark.parametrize("store_backend", ["memory", "sqlite"])
async def test_one_process_stores_have_no_leases_and_refuse_a_fence(store: Store) -> None:
    assert open_leases(store) is None
    with pytest.raises(ValueError, match="no leases"):
        await store.commit([op("d", 1)], fence={"d": 1})
    assert await store.head("d") == 0
    await store.commit([op("d", 1)])
    assert await store.head("d") == 1


@postgres_only
async def test_an_acquisition_waits_for_a_fenced_commit_in_flight(make_store: MakeStore) -> None:
    """A commit whose epoch check passed is visible to the next owner as soon as it holds.

    The commit share-locks the lease row, so the taker's ``UPDATE`` waits for it:
    either the old owner's commit is fenced, or it is in the store before the
    acquisition returns (and the new owner, loading then, builds on it).
    """
    store_a, a, store_b, b = await two_nodes(make_store)
    for attempt in range(40):
        doc = f"d{attempt}"
        epoch = (await a.acquire(doc, "node-a", 30)).epoch
        await store_a.pool.execute("UPDATE document_leases SET expires = now() WHERE doc = $1", doc)

        async def old_owner(doc: str = doc, epoch: int = epoch) -> bool:
            try:
                await store_a.commit([op(doc, 1)], fence={doc: epoch})
            except FencedError:
                return False
            return True

        async def new_owner(doc: str = doc) -> int:
            assert (await b.acquire(doc, "node-b", 30)).owner == "node-b"
            return await store_b.head(doc)

        committed, head_seen = await asyncio.gather(old_owner(), new_owner())
        assert head_seen == (1 if committed else 0)
