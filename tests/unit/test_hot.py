"""tandem.hot: the hottest documents, by whole windows, bounded to the top N."""

from __future__ import annotations

import pytest

from tandem.hot import HotDocuments


def test_reports_the_last_complete_window_hottest_first() -> None:
    hot = HotDocuments(window=10, top=2, now=0)
    hot.count(["a"] * 50 + ["b"] * 200 + ["c"] * 10, now=1)
    assert hot.top(now=9.9) == []  # the first window is not complete yet
    assert hot.top(now=10) == [("b", 20.0), ("a", 5.0)]  # c is not in the top 2
    hot.count(["c"] * 300, now=12)
    assert hot.top(now=19) == [("b", 20.0), ("a", 5.0)]  # still the complete window
    assert hot.top(now=21) == [("c", 30.0)]


def test_an_idle_stretch_longer_than_a_window_reports_nothing() -> None:
    hot = HotDocuments(window=10, top=5, now=0)
    hot.count(["a"] * 10, now=5)
    assert hot.top(now=35) == []
    hot.count(["b"], now=36)
    assert hot.top(now=40) == [("b", 0.1)]


def test_windows_stay_aligned_and_memory_is_per_window() -> None:
    hot = HotDocuments(window=10, top=1, now=0)
    for step in range(1000):
        hot.count([f"doc-{step}"], now=step * 0.1)
    assert len(hot._current) <= 100  # one window's documents, not every document seen
    assert hot._start == pytest.approx(90.0)


def test_refuses_a_meaningless_configuration() -> None:
    with pytest.raises(ValueError):
        HotDocuments(window=0)
    with pytest.raises(ValueError):
        HotDocuments(top=0)
