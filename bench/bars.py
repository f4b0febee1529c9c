"""Issue 26's bars, read off one ``python -m bench`` run: printed under its tables.

Each bar compares Tandem with its peers in the same repeats (runs are paired
by repeat number, never by position) and says how many repeats met it:

* **durable**: at every scenario, ``tandem-pg`` below ``sharedb-pg`` (and
  ``tandem-pg3`` below ``sharedb-pg3``) in p99 *and* CPU per delivery, in at
  least 2 of 3 repeats;
* **many documents**: at ``2000c-200d``, ``tandem-memory``'s median CPU per
  delivery at most 1.2× the best in-memory peer's (the relay is the floor, not
  a peer);
* **tails**: at ``200c-20t`` and ``1000c-10t``, each Tandem's max latency at
  most 1.5× the lowest max of the peers it is compared with (not the relay), in
  the same repeat;
* **10,000 editors**: at ``10000c-1000d``, p99 under 50 ms with nothing lost
  (``propagation.verdicts``).

Pure: no I/O; ``tests/unit/test_bench_bars.py`` checks it on made-up runs.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.servers import COUNTERPART

Runs = dict[str, list[dict[str, Any]]]

#: Peers that are servers someone would deploy (the relay only forwards bytes).
IN_MEMORY_PEERS = ["sharedb", "hocuspocus", "y-websocket", "pycrdt"]
DURABLE_PAIRS = [("tandem-pg", "sharedb-pg"), ("tandem-pg3", "sharedb-pg3")]
TAIL_SCENARIOS = ["200c-20t", "1000c-10t"]


def cpu_per_k(r: dict[str, Any]) -> float | None:
    cpu = r.get("serverCpu")
    return cpu / r["delivered"] * 1000 if cpu is not None and r.get("delivered") else None


def lower(ours: float | None, theirs: float | None) -> bool:
    return ours is not None and (theirs is None or ours < theirs)


def by_repeat(runs: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {r.get("repeat"): r for r in runs}


def durable(results: dict[str, Runs]) -> list[str]:
    out = []
    for ours, theirs in DURABLE_PAIRS:
        for scenario, runs in results.items():
            a, b = by_repeat(runs.get(ours, [])), by_repeat(runs.get(theirs, []))
            both = [k for k in a if k in b]
            if not both:
                continue
            won = 0
            for k in both:
                won += lower(a[k]["p99"], b[k]["p99"]) and lower(cpu_per_k(a[k]), cpu_per_k(b[k]))
            met = "met" if won * 3 >= 2 * len(both) else "NOT met"
            line = (
                f"durable, {scenario}: {ours} below {theirs} in p99 and CPU in {won} of "
                f"{len(both)} repeats ({met}: at least two thirds)"
            )
            # A server that fell behind has a p99 of what arrived only: say so.
            for name, mine in ((ours, a), (theirs, b)):
                lossy = sum(1 for k in both if mine[k]["lost"])
                if lossy:
                    line += f"; {name} lost deliveries in {lossy}"
            out.append(line)
    return out


def many_documents(results: dict[str, Runs], scenario: str = "2000c-200d") -> list[str]:
    runs = results.get(scenario, {})
    ours = [c for r in runs.get("tandem-memory", []) if (c := cpu_per_k(r)) is not None]
    peers = {}
    for name in IN_MEMORY_PEERS:
        cpus = [c for r in runs.get(name, []) if (c := cpu_per_k(r)) is not None]
        if cpus:
            peers[name] = statistics.median(cpus)
    if not ours or not peers:
        return []
    best = min(peers, key=lambda name: peers[name])
    ratio = statistics.median(ours) / peers[best]
    met = "met" if ratio <= 1.2 else "NOT met"
    return [
        f"many documents, {scenario}: tandem-memory CPU per delivery {ratio:.2f}x the best "
        f"in-memory peer's ({best}) ({met}: at most 1.2x)"
    ]


def tails(results: dict[str, Runs]) -> list[str]:
    out = []
    for scenario in TAIL_SCENARIOS:
        runs = results.get(scenario, {})
        for ours in [name for name in runs if name.startswith("tandem")]:
            peers = [
                name
                for name, t in COUNTERPART.items()
                if t == ours and name != "relay" and runs.get(name)
            ]
            if not peers:
                continue
            mine, met, ratios = by_repeat(runs[ours]), 0, []
            for k, r in mine.items():
                maxes = [
                    p["max"] for name in peers if (p := by_repeat(runs[name]).get(k)) and p["max"]
                ]
                if r.get("max") is None or not maxes:
                    continue
                ratios.append(r["max"] / min(maxes))
                met += ratios[-1] <= 1.5
            if ratios:
                shown = " / ".join(f"{x:.2f}" for x in ratios)
                out.append(
                    f"tails, {scenario}: {ours} max ÷ best peer's max in the same repeat {shown}; "
                    f"within 1.5x in {met} of {len(ratios)}"
                )
    return out


def bars(results: dict[str, Runs]) -> list[str]:
    """Every bar the runs can speak to (a bar whose servers did not run is left out)."""
    return durable(results) + many_documents(results) + tails(results)
