"""Fixed seeds plus fresh ones: every CI run also explores seeds no run tried before.

The fixed range keeps a run comparable with the last; the fresh seeds, drawn
from the operating system's randomness each run (``TANDEM_FRESH_SEEDS``
overrides how many; 0 for none; the run's processes share them, see
``FRESH_SEEDS_BASE``), are printed so that a failure can be replayed
with the simulation's replay variable. A failing seed is named in the assertion
message too, so it survives pytest's output capture.
"""

from __future__ import annotations

import os
import random
import secrets
import sys
from collections.abc import Iterable

__all__ = ["FRESH_SEEDS_BASE", "with_fresh_seeds"]

#: Drawn once per pytest run (tests/conftest.py): every process of the run (the
#: pytest-xdist workers) draws the same fresh seeds from it, so that tests
#: parametrized by them are collected alike in each worker.
FRESH_SEEDS_BASE = "TANDEM_FRESH_SEEDS_BASE"


def with_fresh_seeds(fixed: Iterable[int], count: int, *, name: str, replay: str) -> list[int]:
    """``fixed`` followed by ``count`` fresh random seeds (printed, with how to replay one)."""
    count = int(os.environ.get("TANDEM_FRESH_SEEDS", count))
    base = os.environ.get(FRESH_SEEDS_BASE)
    draw = random.Random(f"{base}:{name}").randrange if base else secrets.randbelow
    fresh = [draw(2**40) + 2**32 for _ in range(count)]
    if fresh:
        print(
            f"\n{name}: fresh seeds this run {fresh} (replay one with {replay}=SEED)",
            file=sys.stderr,
        )
    return [*fixed, *fresh]
