"""The hottest documents of one node: ops per second, top N, bounded.

Pure: time is passed in (``now=``), nothing here reads a clock or does I/O.
Ops are counted per document over fixed windows of ``window`` seconds; what is
reported is the last *complete* window's top ``top`` documents by rate, so a
scrape never sees a half-filled window and several scrapers see the same
answer. Memory is one counter per document committed to in the current
window; the exported label set is at most ``top`` documents at any time.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

__all__ = ["HotDocuments"]


class HotDocuments:
    """Ops per document over fixed windows; the top N of the last complete one."""

    def __init__(self, *, window: float = 10.0, top: int = 10, now: float = 0.0) -> None:
        if window <= 0 or top < 1:
            raise ValueError("window must be > 0 and top >= 1")
        self.window = window
        self.top_n = top
        self._start = now
        self._current: dict[str, int] = {}
        self._previous: dict[str, int] = {}

    def count(self, docs: Iterable[str], now: float) -> None:
        """One committed op for each document in ``docs`` (repeats count again)."""
        self._roll(now)
        current = self._current
        for doc in docs:
            current[doc] = current.get(doc, 0) + 1

    def top(self, now: float) -> list[tuple[str, float]]:
        """``(doc, ops per second)`` of the last complete window, hottest first."""
        self._roll(now)
        hottest = heapq.nlargest(self.top_n, self._previous.items(), key=lambda item: item[1])
        return [(doc, ops / self.window) for doc, ops in hottest]

    def _roll(self, now: float) -> None:
        elapsed = now - self._start
        if elapsed < self.window:
            return
        # The window that just ended becomes "previous", unless more than a whole
        # window passed since with nothing counted: then the last complete one was empty.
        self._previous = self._current if elapsed < 2 * self.window else {}
        self._current = {}
        self._start = now - elapsed % self.window
