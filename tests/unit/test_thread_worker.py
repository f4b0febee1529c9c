"""``ThreadWorker``: calls run in order on one thread; results and errors reach the loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tandem.storage.worker import ThreadWorker

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_calls_run_in_order_on_one_thread() -> None:
    worker = ThreadWorker("test-worker")
    seen: list[tuple[int, str]] = []

    def call(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * i

    try:
        results = await asyncio.gather(*(worker.run(lambda i=i: call(i)) for i in range(50)))
    finally:
        worker.stop()
    assert results == [i * i for i in range(50)]
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test-worker"}


async def test_an_exception_reaches_the_awaiting_task_and_the_thread_goes_on() -> None:
    worker = ThreadWorker("test-worker")

    def fail() -> None:
        raise ValueError("refused")

    try:
        with pytest.raises(ValueError, match="refused"):
            await worker.run(fail)
        assert await worker.run(lambda: "still serving") == "still serving"
    finally:
        worker.stop()


async def test_a_cancelled_wait_does_not_stop_the_call_or_the_thread() -> None:
    worker = ThreadWorker("test-worker")
    done = threading.Event()

    def slow() -> None:
        time.sleep(0.05)
        done.set()

    try:
        waiting = asyncio.ensure_future(worker.run(slow))
        await asyncio.sleep(0)
        waiting.cancel()
        assert await worker.run(lambda: 7) == 7  # queued after slow: it finished first
        assert done.is_set()
    finally:
        worker.stop()
