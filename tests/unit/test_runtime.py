"""``tandem serve``'s process tuning: the switch interval and the collector policy."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from tandem.runtime import FULL_COLLECTION_EVERY, SWITCH_INTERVAL, tune_process


@pytest.fixture
def restored() -> Iterator[None]:
    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)


def test_tune_process_freezes_what_exists_and_spaces_full_collections(restored: None) -> None:
    survivor = [object() for _ in range(10)]  # alive when the process is tuned
    young, middle, _ = gc.get_threshold()
    tune_process()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    assert gc.get_threshold() == (young, middle, FULL_COLLECTION_EVERY)
    assert gc.get_freeze_count() >= len(survivor)
    # Frozen objects are out of the collector's sight: a full collection skips them.
    assert not any(o is survivor for o in gc.get_objects())


def test_cyclic_garbage_made_after_tuning_is_still_collected(restored: None) -> None:
    tune_process()

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2
