"""``session/leases.py`` ``LeaseKeeper`` on real PostgreSQL: two keepers are two nodes.

Short leases (2 s, renewed every 0.4 s) keep the tests quick; a paused node is
a keeper whose renew task is stopped (what SIGSTOP does to a process), with
its commits still going to the real store afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tandem.errors import FencedError
from tandem.metrics import Metrics
from tandem.ot.delta import Delta
from tandem.session.leases import LeaseKeeper
from tandem.session.ownership import LeaseTiming
from tandem.storage import OpRecord, PostgresStore, Store, open_leases

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("store_backend", ["postgres"])]

TIMING = LeaseTiming(ttl=2.0, renew_every=0.4, margin=0.2)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Node:
    name: str
    store: PostgresStore
    keeper: LeaseKeeper
    metrics: Metrics
    lost: list[str] = field(default_factory=list)

    def metric(self, line: str) -> bool:
        return line in self.metrics.render().decode()


@pytest.fixture
async def nodes(make_store: Callable[[], Store]) -> AsyncIterator[list[Node]]:
    made: list[Node] = []
    for name in ("node-a", "node-b"):
        store = make_store()
        await store.open()
        assert isinstance(store, PostgresStore)
        leases = open_leases(store)
        assert leases is not None
        metrics = Metrics(name)
        lost: list[str] = []
        keeper = LeaseKeeper(leases, name, TIMING, metrics, lost.append)
        made.append(Node(name, store, keeper, metrics, lost))
    for node in made:
        node.keeper.start()
    yield made
    for node in made:
        await node.keeper.stop()


def op(doc: str, version: int) -> OpRecord:
    return OpRecord(doc, version, Delta().insert("x"), "c1", version, "ann", 1000.0 + version)


async def test_the_owner_keeps_its_lease_by_renewing_it(nodes: list[Node]) -> None:
    a, b = nodes
    state, again = await asyncio.gather(a.keeper.acquire("d"), a.keeper.acquire("d"))
    assert state == again  # one request for both callers: no self-fencing
    assert state.owner == "node-a" and a.keeper.fence("d") == state.epoch
    await asyncio.sleep(1.5 * TIMING.ttl)  # past the first expiry: only renewals keep it
    assert a.keeper.fence("d") == state.epoch
    assert (await b.keeper.acquire("d")).owner == "node-a"
    assert b.keeper.fence("d") is None
    assert a.lost == []
    assert a.metric('tandem_owned_documents{node="node-a"} 1.0')
    assert a.metric('tandem_lease_owner_changes_total{change="acquired",node="node-a"} 1.0')
    await a.store.commit([op("d", 1)], fence={"d": state.epoch})


async def test_a_paused_owner_stops_at_its_deadline_and_its_commit_is_fenced(
    nodes: list[Node],
) -> None:
    a, b = nodes
    old = (await a.keeper.acquire("d")).epoch
    await a.keeper.stop()  # paused: no renewals from here on
    await asyncio.sleep(TIMING.ttl + 0.1)
    assert a.keeper.fence("d") is None  # its own deadline passed: it sequences nothing
    taken = await b.keeper.acquire("d")
    assert taken.owner == "node-b" and taken.epoch > old
    a.keeper.start()  # SIGCONT: it notices at once that the lease is gone
    for _ in range(50):
        if a.lost:
            break
        await asyncio.sleep(0.02)
    assert a.lost == ["d"]
    assert a.keeper.owned == []
    assert a.metric('tandem_owned_documents{node="node-a"} 0.0')
    assert a.metric('tandem_lease_owner_changes_total{change="lost",node="node-a"} 1.0')
    # A commit decided before the pause reaches the store only now: fenced, nothing written.
    with pytest.raises(FencedError):
        await a.store.commit([op("d", 1)], fence={"d": old})
    a.keeper.fenced("d", old)
    assert a.metric('tandem_fenced_commits_total{node="node-a"} 1.0')
    assert a.lost == ["d"]  # reported once
    assert await b.store.head("d") == 0
    await b.store.commit([op("d", 1)], fence={"d": taken.epoch})


async def test_a_takeover_that_waited_behind_a_commit_gets_a_live_lease(
    nodes: list[Node],
) -> None:
    """A transaction holds the lease row (``FOR SHARE``, as a fenced commit takes it)
    past the expiry; the other node's acquire waits for the row, then gets a lease it
    may use (had it been granted over on arrival, counted from the statement's start,
    the keeper asks again)."""
    import asyncpg  # type: ignore[import-untyped]

    a, b = nodes
    old = (await a.keeper.acquire("d")).epoch
    await a.keeper.stop()  # paused, with a commit's transaction open:
    conn = await asyncpg.connect(a.store.dsn, server_settings={"search_path": a.store.schema})
    try:
        commit = conn.transaction()
        await commit.start()
        await conn.fetch("SELECT epoch FROM document_leases WHERE doc = 'd' FOR SHARE")
        await asyncio.sleep(TIMING.ttl + 0.1)  # the lease expired: b asks for it
        taking = asyncio.ensure_future(b.keeper.acquire("d"))
        await asyncio.sleep(TIMING.ttl / 2)  # and waits for the row
        assert not taking.done()
        await commit.commit()  # the commit finishes
        taken = await taking
    finally:
        await conn.close()
    assert taken.owner == "node-b" and taken.epoch > old
    assert b.keeper.fence("d") == taken.epoch
    assert b.lost == []


async def test_an_acquire_behind_a_transaction_that_never_ends_fails_within_a_ttl(
    nodes: list[Node],
) -> None:
    """Something else (an operator's session) holds the lease row: the acquire gives up
    after a TTL with ``StorageError`` instead of hanging the keeper."""
    import time

    import asyncpg  # type: ignore[import-untyped]

    from tandem.errors import StorageError

    a, b = nodes
    await a.keeper.acquire("d")
    await a.keeper.stop()
    conn = await asyncpg.connect(a.store.dsn, server_settings={"search_path": a.store.schema})
    try:
        held = conn.transaction()
        await held.start()
        await conn.fetch("SELECT epoch FROM document_leases WHERE doc = 'd' FOR UPDATE")
        await asyncio.sleep(TIMING.ttl + 0.1)
        started = time.monotonic()
        with pytest.raises(StorageError, match="stayed locked"):
            await asyncio.wait_for(b.keeper.acquire("d"), 3 * TIMING.ttl)
        assert time.monotonic() - started < 2 * TIMING.ttl
        await held.rollback()
        assert (await b.keeper.acquire("d")).owner == "node-b"
    finally:
        await conn.close()


async def test_a_fenced_commit_of_a_held_lease_reports_the_loss_once(nodes: list[Node]) -> None:
    a, b = nodes
    old = (await a.keeper.acquire("d")).epoch
    # Another node took it (an operator's forced take-over looks the same to the owner).
    await a.store.pool.execute("UPDATE document_leases SET expires = '-infinity'")
    assert (await b.keeper.acquire("d")).owner == "node-b"
    with pytest.raises(FencedError):
        await a.store.commit([op("d", 1)], fence={"d": old})
    a.keeper.fenced("d", old)
    a.keeper.fenced("d", old)
    assert a.lost == ["d"] and a.keeper.fence("d") is None
    assert a.metric('tandem_lease_owner_changes_total{change="fenced",node="node-a"} 1.0')
    assert a.metric('tandem_fenced_commits_total{node="node-a"} 2.0')


async def test_release_and_close_hand_the_lease_over_at_once(nodes: list[Node]) -> None:
    a, b = nodes
    await a.keeper.acquire("d")
    await a.keeper.acquire("e")
    await a.keeper.release("d")
    assert (await b.keeper.acquire("d")).owner == "node-b"
    await a.keeper.close()
    assert (await b.keeper.acquire("e")).owner == "node-b"
    assert a.metric('tandem_lease_owner_changes_total{change="released",node="node-a"} 2.0')
    assert a.lost == []


async def test_failing_renewals_are_counted_and_the_lease_lapses_at_its_deadline(
    nodes: list[Node],
) -> None:
    a, _ = nodes
    await a.keeper.acquire("d")
    await a.store.close()  # every renew now fails
    await asyncio.sleep(TIMING.ttl + 0.2)
    assert a.keeper.fence("d") is None
    assert a.lost == ["d"]
    assert not a.metric('tandem_lease_renew_failures_total{node="node-a"} 0.0')
    assert a.metric('tandem_lease_owner_changes_total{change="lost",node="node-a"} 1.0')


async def test_every_lease_of_a_node_renews_in_one_statement(nodes: list[Node]) -> None:
    """Leases taken at different moments fall into step: after the first renewals,
    each round renews all of them in one ``renew_many``, not a statement each."""
    a, _ = nodes
    calls: list[int] = []
    real = a.keeper._leases.renew_many

    async def counted(held: Any, node: str, ttl: float) -> Any:
        calls.append(len(held))
        return await real(held, node, ttl)

    a.keeper._leases.renew_many = counted  # type: ignore[method-assign]
    docs = [f"d{i}" for i in range(40)]
    for doc in docs:
        await a.keeper.acquire(doc)
        await asyncio.sleep(TIMING.renew_every / len(docs))  # acquired over an interval
    await asyncio.sleep(4 * TIMING.renew_every)
    assert all(a.keeper.fence(doc) is not None for doc in docs)
    assert calls[-1] == len(docs) and calls[-2] == len(docs), calls
    # About 5 intervals since the first lease: a statement or two each, not 40.
    assert len(calls) <= 10, calls
