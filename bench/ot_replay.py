"""How fast the OT core replays real editing traces, next to pycrdt as a baseline.

For each trace (``automerge-paper`` by default, every one with ``--all``):

(a) every patch ``[pos, delete, text]`` becomes a delta and goes through
    ``Document.apply``: ops/s and seconds, and the final text must equal
    ``endContent``;
(b) the same deltas composed in batches of 100, each batch then applied;
(c) the ASCII version of the trace replayed into a ``pycrdt.Text`` (it indexes by
    UTF-8 bytes, so ASCII keeps offsets equal to code points), one transaction
    per patch as a server would do: ops/s, and Tandem/pycrdt;

and once per run:

(d) a one-keystroke op transformed against a window of 100 concurrent
    one-keystroke ops, one transform at a time as the sequencer does: the
    median µs for the whole window and per transform.

Every figure is the median of ``--repeat`` runs (3 by default).

    python -m bench.ot_replay                          # automerge-paper
    python -m bench.ot_replay --trace seph-blog1
    python -m bench.ot_replay --all --repeat 5

Traces come from ``bench/traces`` in this repository (override the folder with
TANDEM_TRACES, e.g. a checkout of josephg/editing-traces' ``sequential_traces``
for the full set). They are by Joseph Gentle and the automerge-perf authors
(CC BY 4.0; see ``bench/traces/README.md``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tandem.ot import Delta, Document, compose, transform

DEFAULT_TRACE = "automerge-paper"
BATCH = 100
WINDOW = 100


def traces_dir() -> Path:
    override = os.environ.get("TANDEM_TRACES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "traces"


@dataclass
class Trace:
    name: str
    start: str
    end: str
    patches: list[tuple[int, int, str]]


def load(path: Path) -> Trace:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        data = json.load(file)
    patches = [
        (int(pos), int(deleted), str(text))
        for txn in data["txns"]
        for pos, deleted, text in txn["patches"]
    ]
    name = path.name.removesuffix(".json.gz")
    return Trace(name, data["startContent"], data["endContent"], patches)


def ascii_version(folder: Path, trace: Trace) -> Trace | None:
    """The trace as pycrdt can replay it with code-point offsets: ASCII only.

    An ASCII trace is its own; otherwise ``ascii_only/NAME.json.gz`` when the
    folder has one (josephg/editing-traces does), else None.
    """
    texts = [trace.start, trace.end, *(text for _, _, text in trace.patches)]
    if all(text.isascii() for text in texts):
        return trace
    path = folder / "ascii_only" / f"{trace.name}.json.gz"
    return load(path) if path.exists() else None


@dataclass
class Timing:
    wall: float  # median seconds, wall clock
    cpu: float  # median seconds of this process's CPU time (steadier on a busy machine)


def timed(run: Callable[[], object], repeat: int) -> tuple[Timing, object]:
    """Median wall and CPU seconds over ``repeat`` runs, and the last run's result."""
    walls, cpus = [], []
    result: object = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return Timing(statistics.median(walls), statistics.median(cpus)), result


def line(label: str, count: int, timing: Timing) -> str:
    return (
        f"  {label:<26}{timing.wall:8.3f} s wall {count / timing.wall:>10,.0f} ops/s"
        f"   {timing.cpu:8.3f} s CPU {count / timing.cpu:>10,.0f} ops/s"
    )


# -- (a) (b) Tandem --------------------------------------------------------------------


def replay_apply(trace: Trace) -> Document:
    document = Document(trace.start)
    for pos, deleted, text in trace.patches:
        document = document.apply(Delta().retain(pos).delete(deleted).insert(text))
    return document


def replay_composed(trace: Trace) -> Document:
    document = Document(trace.start)
    patches = trace.patches
    for begin in range(0, len(patches), BATCH):
        batch = Delta()
        for pos, deleted, text in patches[begin : begin + BATCH]:
            batch = compose(batch, Delta().retain(pos).delete(deleted).insert(text))
        document = document.apply(batch)
    return document


# -- (c) pycrdt -------------------------------------------------------------------------


def replay_pycrdt(trace: Trace) -> str:
    from pycrdt import Doc, Text

    doc: Doc[Text] = Doc()
    text = doc.get("text", type=Text)
    if trace.start:
        text += trace.start
    for pos, deleted, inserted in trace.patches:
        if deleted:
            del text[pos : pos + deleted]
        if inserted:
            text.insert(pos, inserted)
    return str(text)


# -- (d) transform against a window ----------------------------------------------------------


def transform_window(repeat: int) -> tuple[float, float]:
    """Median µs to transform one keystroke against 100 concurrent ones, and per transform."""
    rng = random.Random(7)
    length = 5_000
    window = []
    for _ in range(WINDOW):
        pos = rng.randrange(length)
        if rng.random() < 0.8:
            window.append(Delta().retain(pos).insert("x"))
            length += 1
        else:
            window.append(Delta().retain(pos).delete(1))
            length -= 1
    probes = [Delta().retain(rng.randrange(4_000)).insert("y") for _ in range(50)]
    samples = []
    for _ in range(max(repeat, 3) * 20):
        for probe in probes:
            started = time.perf_counter()
            op = probe
            for committed in window:
                op = transform(op, committed, "right")
            samples.append(time.perf_counter() - started)
    whole = statistics.median(samples) * 1e6
    return whole, whole / WINDOW


# -- main ------------------------------------------------------------------------------


def bench_trace(name: str, repeat: int, pycrdt: bool) -> None:
    folder = traces_dir()
    trace = load(folder / f"{name}.json.gz")
    count = len(trace.patches)
    print(f"\n{name}: {count:,} patches, final text {len(trace.end):,} characters")

    timing, document = timed(lambda: replay_apply(trace), repeat)
    assert isinstance(document, Document)
    if document.text() != trace.end:
        sys.exit(f"{name}: apply replay does not reproduce endContent")
    print(line("(a) apply each patch", count, timing))

    timing, document = timed(lambda: replay_composed(trace), repeat)
    assert isinstance(document, Document)
    if document.text() != trace.end:
        sys.exit(f"{name}: composed replay does not reproduce endContent")
    print(line(f"(b) compose x{BATCH}, apply", count, timing))

    if not pycrdt:
        return
    ascii_trace = ascii_version(folder, trace)
    if ascii_trace is None:
        print("  (c) pycrdt: no ascii_only version of this trace; skipped")
        return
    ascii_count = len(ascii_trace.patches)
    tandem, document = timed(lambda: replay_apply(ascii_trace), repeat)
    assert isinstance(document, Document) and document.text() == ascii_trace.end
    print(line("(a) same, ascii trace", ascii_count, tandem))
    baseline, text = timed(lambda: replay_pycrdt(ascii_trace), repeat)
    if text != ascii_trace.end:
        sys.exit(f"{name}: pycrdt replay does not reproduce endContent")
    print(line("(c) pycrdt.Text, ascii", ascii_count, baseline))
    print(
        f"      Tandem/pycrdt speed (ops/s ratio): {baseline.wall / tandem.wall:.2f}x wall, "
        f"{baseline.cpu / tandem.cpu:.2f}x CPU"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", default=DEFAULT_TRACE, help="trace name, without .json.gz")
    parser.add_argument("--all", action="store_true", help="every trace in the folder")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--no-pycrdt", action="store_true", help="skip the pycrdt baseline")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    if args.all:
        names = sorted(p.name.removesuffix(".json.gz") for p in traces_dir().glob("*.json.gz"))
    else:
        names = [args.trace]
    print(f"Python {sys.version.split()[0]}, median of {args.repeat} runs")
    for name in names:
        bench_trace(name, args.repeat, pycrdt=not args.no_pycrdt)

    whole, each = transform_window(args.repeat)
    print(
        f"\n(d) transform 1 keystroke against a window of {WINDOW} concurrent keystrokes: "
        f"{whole:.1f} µs per window, {each:.2f} µs per transform (median)"
    )


if __name__ == "__main__":
    main()
