"""``bench.pairs``: how variants are named, and how rounds are counted."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from bench.pairs import lower_in, median, parse_variant
from bench.propagation import slowest


def test_a_variant_is_a_name_and_environment_variables() -> None:
    variant = parse_variant("slow=TANDEM_SYNC_DELAY:0.02;TANDEM_GC:off")
    assert variant.name == "slow"
    assert variant.env == {"TANDEM_SYNC_DELAY": "0.02", "TANDEM_GC": "off"}
    assert parse_variant("plain=").env == {}
    # Another checkout's source, made absolute: the same folder whatever the server's cwd.
    assert parse_variant("old=PYTHONPATH:../old/src").env["PYTHONPATH"] == str(
        Path("../old/src").resolve()
    )


@pytest.mark.parametrize("text", ["noname", "=A:1", "x=NOVALUE", "x=:1"])
def test_a_malformed_variant_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_variant(text)


def test_rounds_count_only_where_both_were_measured() -> None:
    assert lower_in([1.0, 2.0, 3.0], [0.5, 2.5, 2.0]) == (2, 3)
    assert lower_in([1.0, None, 3.0], [0.5, 0.1, None]) == (1, 1)
    assert median([None, 3.0, 1.0, 2.0]) == 2.0
    assert median([None]) is None


def test_a_run_says_what_its_slowest_deliveries_were() -> None:
    tail = {
        "maxSeq": 2,
        "maxSentAt": 405.4,
        "maxToTypist": True,
        "slowestTypistShare": 0.9,
        "slowestFirstOpsShare": 0.25,
    }
    line = slowest({"tail": tail})
    assert "seq 2 sent at +405 ms, to a typist" in line
    assert "90% to typists, 25% first ops" in line
    assert "to a reader" in slowest({"tail": {**tail, "maxToTypist": False}})
    assert "readers only" not in line
    readers = {**tail, "readerP99": 5.04, "readerP999": 9.0, "readerMax": 12.34}
    assert "to readers only: p99 5.0 p99.9 9.0 max 12.3 ms" in slowest({"tail": readers})
    assert slowest({}) == "" and slowest({"tail": None}) == ""
