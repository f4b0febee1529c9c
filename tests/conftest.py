"""Shared pytest configuration: the --slow flag, the --phase flag and hypothesis profiles.

``--phase`` splits the suite for ``scripts/test.sh`` (README, "Development"): tests
marked ``alone`` measure time (latency within 2x, start-up and exit deadlines,
memory peaks under attack) and must not share the CPU with the rest of the
suite; ``--phase=shared`` runs every other test (several at once, pytest-xdist),
``--phase=alone`` only those. Without ``--phase`` every test runs.
"""

from __future__ import annotations

import os
import secrets

import pytest
from hypothesis import HealthCheck, settings
from tests.property.seeds import FRESH_SEEDS_BASE

settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "slow", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="run long tests and big hypothesis runs")
    parser.addoption(
        "--phase",
        choices=("shared", "alone"),
        help="shared: only tests not marked alone; alone: only those (default: all tests)",
    )


def pytest_configure(config: pytest.Config) -> None:
    slow = config.getoption("--slow")
    # pytest-xdist's workers start after this and inherit it: they draw the same fresh seeds.
    os.environ.setdefault(FRESH_SEEDS_BASE, str(secrets.randbits(64)))
    settings.load_profile("slow" if slow else os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    phase = config.getoption("--phase")
    if phase is not None:
        wanted = phase == "alone"
        keep = [item for item in items if ("alone" in item.keywords) == wanted]
        if len(keep) < len(items):
            config.hook.pytest_deselected(
                items=[item for item in items if ("alone" in item.keywords) != wanted]
            )
            items[:] = keep
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="long test: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
