"""``bench.op_path`` measures the real path: every op reaches every other client once."""

from __future__ import annotations

import pytest
from bench.op_path import run_shape

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("database", ["memory://", "sqlite"])
async def test_each_op_is_told_to_every_other_client(database: str) -> None:
    results = await run_shape(database, clients=4, ops=20, rounds=2)
    assert len(results) == 2
    for result in results:
        assert result["deliveries"] == 20 * 3
        assert result["cpu_us_per_op"] > 0 and result["wall_us_per_op"] > 0
