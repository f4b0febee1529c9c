"""Stopping background tasks: the one way the async shell cancels a task it owns.

Async shell only (it imports asyncio); the pure core never has tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has finished unwinding.

    The task's own cancellation is swallowed; the caller's is not: if the caller is
    cancelled while waiting, that ``CancelledError`` still propagates.
    """
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
