"""Two builds or settings of ``tandem serve``, alternated under one scenario.

``python -m bench`` compares Tandem with its peers; this compares Tandem with
itself — a change against the commit before it, or a setting against another —
the way docs/performance.md reports its "alternated pairs": each round runs
both variants, one after the other, in an order that flips every round (so a
drift of the machine's speed falls on both), each a fresh server driven by the
same load generator for ``--duration`` seconds. It prints every run (with what
its slowest delivery was: its op's seq, how far into the typing it was sent,
whether it reached a typist; and of the slowest 0.1 %, the share that reached
typists), then per variant the medians of CPU seconds per 1,000 deliveries,
p99, p99.9, max and author's send → ack (which a change to syncing trades on),
and in how many rounds the second variant's CPU, p99, p99.9 and max were lower.
Max latency is noisy: count rounds, not one run.

A variant is ``NAME=VAR:VALUE;VAR:VALUE``: environment variables for the
server, ``TANDEM_*`` settings or ``PYTHONPATH`` pointing at another checkout's
``src`` (a ``git worktree`` of the commit before, say):

    git worktree add .bench/before HEAD~1   # inside the clone, ignored by git
    python -m bench.pairs --a "before=PYTHONPATH:.bench/before/src" --b "after=" --rounds 5
    python -m bench.pairs --a "5ms=TANDEM_SYNC_DELAY:0.005" --b "20ms=TANDEM_SYNC_DELAY:0.02"
    python -m bench.pairs --server tandem-memory --scenario 10000c-1000d --scale 0.3 ...

``--server`` picks the store (``tandem``: SQLite, the default; ``tandem-memory``;
``tandem-pg``: PostgreSQL, a throwaway schema per run);
``--scale`` shrinks the scenario as ``python -m bench --scale`` does.

Every run contacts only 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import propagation, servers


@dataclass
class Variant:
    """One way of running ``tandem serve``, and what its runs measured."""

    name: str
    env: dict[str, str]
    #: Per run: CPU seconds per 1,000 deliveries (None if nothing was delivered), p99,
    #: p99.9 and max ms, and the median author's send -> ack, ms.
    cpu: list[float | None] = field(default_factory=list)
    p99: list[float | None] = field(default_factory=list)
    p999: list[float | None] = field(default_factory=list)
    max: list[float | None] = field(default_factory=list)
    ack: list[float | None] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    """``NAME=VAR:VALUE;VAR:VALUE`` (the part after ``=`` may be empty)."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VAR:VALUE;VAR:VALUE")
    env: dict[str, str] = {}
    for item in filter(None, rest.split(";")):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{item!r}: expected VAR:VALUE")
        if key == "PYTHONPATH":
            value = str(Path(value).resolve())
        env[key] = value
    return Variant(name, env)


def lower_in(a: list[float | None], b: list[float | None]) -> tuple[int, int]:
    """In how many rounds ``b``'s value was lower than ``a``'s, of those both measured."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    return sum(y < x for x, y in pairs), len(pairs)


def median(values: list[float | None]) -> float | None:
    measured = [value for value in values if value is not None]
    return statistics.median(measured) if measured else None


def run(
    variant: Variant, spec: dict[str, int], duration: float, server_name: str = "tandem"
) -> dict[str, Any]:
    """One fresh server of ``variant`` under ``spec``; records and returns the result."""
    saved = {key: os.environ.get(key) for key in variant.env}
    os.environ.update(variant.env)  # servers.start passes the environment on
    try:
        with servers.start(server_name, spec["docs"]) as server:
            result = propagation.loadgen(server, duration=duration, drain=2, **spec)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    variant.cpu.append(propagation.per_k(result))
    variant.p99.append(result.get("p99"))
    variant.p999.append(result.get("p999"))
    variant.max.append(result.get("max"))
    variant.ack.append(result.get("ackP50"))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=parse_variant, required=True, help="NAME=VAR:VALUE;…")
    parser.add_argument("--b", type=parse_variant, required=True, help="NAME=VAR:VALUE;…")
    parser.add_argument(
        "--server", default="tandem", choices=["tandem", "tandem-memory", "tandem-pg"]
    )
    parser.add_argument("--scenario", default="2000c-200d", choices=propagation.SCENARIOS)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the scenario")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of typing")
    args = parser.parse_args(argv)
    propagation.raise_file_limit()
    spec = propagation.scaled(propagation.SCENARIOS[args.scenario], args.scale)
    a, b = args.a, args.b
    fmt = propagation.fmt
    for number in range(args.rounds):
        for variant in (a, b) if number % 2 == 0 else (b, a):
            result = run(variant, spec, args.duration, args.server)
            print(
                f"round {number + 1} {variant.name:12} cpu/1k {fmt(variant.cpu[-1], 7, 4)}"
                f"  p50 {fmt(result.get('p50'), 6, 2)}  p99 {fmt(variant.p99[-1], 7, 2)}"
                f"  p99.9 {fmt(variant.p999[-1], 7, 2)}  max {fmt(variant.max[-1], 7, 2)} ms"
                f"  ack p50 {fmt(variant.ack[-1], 6, 2)} ms  lost {result.get('lost', 0)}"
                f"{propagation.slowest(result)}",
                flush=True,
            )
    for variant in (a, b):
        print(
            f"{variant.name:12} median cpu/1k {fmt(median(variant.cpu), 7, 4)}"
            f"  p99 {fmt(median(variant.p99), 7, 2)}  p99.9 {fmt(median(variant.p999), 7, 2)}"
            f"  max {fmt(median(variant.max), 7, 2)} ms"
            f"  ack p50 {fmt(median(variant.ack), 6, 2)} ms"
        )
    counts = ", ".join(
        "{} in {} of {}".format(label, *lower_in(getattr(a, key), getattr(b, key)))
        for label, key in (("CPU", "cpu"), ("p99", "p99"), ("p99.9", "p999"), ("max", "max"))
    )
    print(f"{b.name} lower than {a.name}: {counts} rounds")


if __name__ == "__main__":
    main()
