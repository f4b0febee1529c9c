"""``bench.bars``: issue 26's bars, read off made-up runs."""

from __future__ import annotations

from typing import Any

from bench.bars import bars, durable, many_documents, tails


def run(repeat: int, p99: float, cpu: float, mx: float = 50.0, lost: int = 0) -> dict[str, Any]:
    return {
        "repeat": repeat,
        "p99": p99,
        "max": mx,
        "serverCpu": cpu,
        "delivered": 1000,
        "lost": lost,
    }


def test_durable_tandem_must_win_p99_and_cpu_together_in_two_thirds_of_repeats() -> None:
    runs = {
        "tandem-pg": [run(0, 10, 1.0), run(1, 10, 3.0), run(2, 10, 1.0)],
        # Listed out of order: repeat 1 is the one where tandem-pg's CPU was higher.
        "sharedb-pg": [run(1, 20, 2.0), run(2, 20, 2.0, lost=5), run(0, 20, 2.0)],
    }
    assert durable({"200c-20t": runs}) == [
        "durable, 200c-20t: tandem-pg below sharedb-pg in p99 and CPU in 2 of 3 repeats "
        "(met: at least two thirds); sharedb-pg lost deliveries in 1"
    ]
    runs["tandem-pg"][2] = run(2, 30, 1.0)
    assert "in 1 of 3 repeats (NOT met" in durable({"200c-20t": runs})[0]


def test_many_documents_compares_with_the_best_peer_not_the_relay() -> None:
    runs = {
        "tandem-memory": [run(0, 5, 0.06), run(1, 5, 0.05)],
        "relay": [run(0, 1, 0.01)],
        "y-websocket": [run(0, 5, 0.04), run(1, 5, 0.05)],
        "sharedb": [run(0, 5, 0.05)],
    }
    assert many_documents({"2000c-200d": runs}) == [
        "many documents, 2000c-200d: tandem-memory CPU per delivery 1.22x the best in-memory "
        "peer's (y-websocket) (NOT met: at most 1.2x)"
    ]
    assert many_documents({"200c-20t": runs}) == []


def test_tails_take_the_lowest_peer_max_of_the_same_repeat_not_the_relays() -> None:
    runs = {
        "tandem-memory": [run(0, 5, 1, mx=30), run(1, 5, 1, mx=90)],
        "hocuspocus": [run(0, 5, 1, mx=40), run(1, 5, 1, mx=50)],
        "y-websocket": [run(1, 5, 1, mx=45), run(0, 5, 1, mx=10)],
        "relay": [run(0, 5, 1, mx=1), run(1, 5, 1, mx=1)],  # the floor, not a peer
    }
    assert tails({"1000c-10t": runs}) == [
        "tails, 1000c-10t: tandem-memory max ÷ best peer's max in the same repeat 3.00 / 2.00; "
        "within 1.5x in 0 of 2"
    ]
    assert bars({"10c": runs}) == []
