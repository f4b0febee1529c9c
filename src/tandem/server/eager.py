"""Run a coroutine here and now, up to its first suspension; a task carries on from there.

What Python 3.12's eager tasks do, for one coroutine, on any Python Tandem
supports: a ``/collab`` message's handler usually finishes without
suspending (an op is sequenced and queued for commit synchronously), and then
no task, no scheduling and no wake-up are paid for it. The caller learns
whether a task carries on, and keeps its messages in order with it.

Drives the coroutine by hand as ``asyncio.Task`` does: a suspension hands out
the future it waits for (``_asyncio_future_blocking``, asyncio's protocol
for future-likes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["run_eagerly"]


def run_eagerly(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coroutine`` up to its first suspension, here and now; a task carries on from
    there if there is one (what Python 3.12's eager tasks do). None: it finished.
    """
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_carry_on(coroutine, awaited))


async def _carry_on(coroutine: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive ``coroutine`` on, as a task's steps would, from its suspension on ``awaited``
    (a future, or None for a bare yield)."""
    while True:
        try:
            if awaited is None:
                await asyncio.sleep(0)
            else:
                awaited._asyncio_future_blocking = False
                await asyncio.wait((awaited,))
        except asyncio.CancelledError as cancelled:
            if awaited is not None:
                awaited.cancel()
            try:
                awaited = coroutine.throw(cancelled)
            except StopIteration:
                return
            continue
        try:
            awaited = coroutine.send(None)
        except StopIteration:
            return
