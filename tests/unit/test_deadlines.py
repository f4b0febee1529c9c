"""The shared deadline heap: order, cancellation, one timer, compaction."""

from __future__ import annotations

import asyncio

import pytest

from tandem.server.deadlines import Deadlines

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_deadlines_fire_in_time_order_and_cancelled_ones_never() -> None:
    heap = Deadlines()
    fired: list[str] = []
    done = asyncio.Event()

    def last() -> None:
        fired.append("c")
        done.set()

    heap.add(0.03, last)
    heap.add(0.01, lambda: fired.append("a"))
    heap.add(0.02, lambda: fired.append("b")).cancel()
    heap.add(0.0, lambda: fired.append("first"))
    await done.wait()
    assert fired == ["first", "a", "c"]


async def test_a_cancelled_deadline_lets_go_of_its_callback() -> None:
    heap = Deadlines()

    class Owner:
        def due(self) -> None:  # pragma: no cover - cancelled
            raise AssertionError

    deadline = heap.add(3600, Owner().due)
    deadline.cancel()
    deadline.cancel()  # twice is harmless
    assert deadline.callback is None and heap.cancelled == 1


async def test_many_cancelled_deadlines_are_compacted() -> None:
    heap = Deadlines()
    for deadline in [heap.add(3600, lambda: None) for _ in range(200)]:
        deadline.cancel()
    heap.add(3600, lambda: None)
    assert heap.cancelled == 0 and len(heap._heap) == 1


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    heap = Deadlines()
    done = asyncio.Event()

    def fail() -> None:
        raise ValueError("boom")

    heap.add(0.0, fail)
    heap.add(0.0, done.set)
    await done.wait()


async def test_a_deadline_with_a_subject_calls_the_function_with_it() -> None:
    heap = Deadlines()
    done = asyncio.Event()
    seen: list[object] = []

    class Owner:
        def due(self) -> None:
            seen.append(self)
            done.set()

    owner = Owner()
    deadline = heap.add(0.0, Owner.due, owner)
    assert deadline.subject is owner
    await done.wait()
    assert seen == [owner] and deadline.callback is None and deadline.subject is None
    cancelled = heap.add(3600, Owner.due, Owner())
    cancelled.cancel()  # lets go of the subject too
    assert cancelled.callback is None and cancelled.subject is None
