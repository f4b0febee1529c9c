"""``ThreadWorker``: one thread that runs blocking calls in order for the event loop.

What ``SQLiteStore`` needs from a thread is narrow: run each call in
submission order on the one thread that owns a connection, and complete an
``asyncio.Future`` with the result. ``loop.run_in_executor`` does that through
a ``concurrent.futures.Future`` (a lock and a condition), the executor's
idle-thread semaphore, and a second future chained to the first; profiled at
2,000 clients over 200 documents, that machinery was ~8% of the event loop's
time, for one append per op. Here a call is a tuple on a ``SimpleQueue`` and
its result one ``call_soon_threadsafe``.

If the awaiting task is cancelled, the call still runs to the end (it may
have committed); its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

__all__ = ["ThreadWorker"]

T = TypeVar("T")

_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class ThreadWorker:
    """A daemon thread running submitted calls one at a time, in order."""

    def __init__(self, name: str) -> None:
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``fn``; the returned future (of the running loop) gets its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, future, fn))
        return future

    def stop(self) -> None:
        """Let the thread end once the calls already queued have run."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            loop, future, fn = call
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                _complete(loop, future, _set_exception, exc)
            else:
                _complete(loop, future, _set_result, result)


def _complete(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    setter: Callable[[asyncio.Future[Any], Any], None],
    value: Any,
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
        loop.call_soon_threadsafe(setter, future, value)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
