"""The revocation table (``tandem/storage/revocations.py``), against every store."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tandem.storage import Store, open_revocations

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_add_active_prune(store: Store) -> None:
    table = open_revocations(store)
    await table.add("b", '{"n": 2}', 20.0, 100.0)
    await table.add("a", '{"n": 1}', 10.0, None)
    await table.add("a", '{"n": "again"}', 10.0, None)  # idempotent by id
    assert await table.active(50.0) == ['{"n": 1}', '{"n": 2}']
    assert await table.active(100.0) == ['{"n": 1}']
    await table.prune(100.0)
    assert await table.active(0.0) == ['{"n": 1}']


async def test_revocations_survive_reopening(make_store: Callable[[], Store]) -> None:
    first = make_store()
    await first.open()
    await open_revocations(first).add("a", '{"n": 1}', 10.0, None)
    await first.close()
    second = make_store()
    await second.open()
    assert await open_revocations(second).active(0.0) == ['{"n": 1}']
