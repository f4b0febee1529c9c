"""How fast the OT core replays real editing traces, next to pycrdt as a baseline.

For each trace (``automerge-paper`` by default, every one with ``--all``):

(a) every patch ``[pos, delete, text]`` becomes a delta and goes through
    ``Document.apply``: ops/s and seconds, and the final text must equal
    ``endContent``;
(b) the same deltas composed in batches of 100, each batch then applied;
(s) the server's path: each patch's wire JSON (bytes) through ``orjson.loads``,
    ``Delta.from_json`` and ``Sequencer.submit`` (transform to the head, apply,
    the commit record), under the collector thresholds ``tandem serve`` sets
    (``tandem.runtime``);
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

``--pairs SRC`` instead compares (a) and (s) with the ``tandem`` package under
SRC (a checkout of the commit before a change, say), alternating fresh
processes round by round in an order that flips every round, and with
``--yjs`` also Yjs replaying the same trace (``bench/peers/yjs_replay.mjs``;
run ``npm ci`` in ``bench/peers`` first). It prints every round's CPU seconds,
the medians, and the ratios to the baseline from the same run:

    mkdir -p .bench/before && git archive HEAD~1 src | tar -x -C .bench/before
    python -m bench.ot_replay --pairs .bench/before/src --rounds 7 --yjs

Traces come from ``bench/traces`` in this repository (override the folder with
TANDEM_TRACES, e.g. a checkout of josephg/editing-traces' ``sequential_traces``
for the full set). They are by Joseph Gentle and the automerge-perf authors
(CC BY 4.0; see ``bench/traces/README.md``).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from tandem.ot import Delta, Document, compose, transform
from tandem.runtime import FULL_COLLECTION_EVERY
from tandem.sequencer import Commit, Sequencer

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


def wire_ops(trace: Trace) -> list[bytes]:
    """Each patch as a client sends it: the canonical delta's JSON, encoded."""
    return [
        orjson.dumps(Delta().retain(pos).delete(deleted).insert(text).to_json())
        for pos, deleted, text in trace.patches
    ]


def replay_sequencer(trace: Trace, wire: list[bytes]) -> Document:
    """Every patch from wire JSON through ``Sequencer.submit``, as the server commits it.

    The history window keeps the last ops alive as the server's does, so the
    cyclic collector's cost is part of it; it runs with the thresholds that
    ``tandem serve`` sets (full collections 100 times rarer than CPython's).
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], FULL_COLLECTION_EVERY)
    try:
        sequencer = Sequencer("bench", Document(trace.start), 0)
        for seq, data in enumerate(wire):
            decision = sequencer.submit(
                Delta.from_json(orjson.loads(data)),
                sequencer.version,
                client_id="bench@user",
                seq=seq,
                user="user",
                now=0.0,
            )
            assert isinstance(decision, Commit)
        return sequencer.document
    finally:
        gc.set_threshold(*thresholds)


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

    wire = wire_ops(trace)
    timing, document = timed(lambda: replay_sequencer(trace, wire), repeat)
    assert isinstance(document, Document)
    if document.text() != trace.end:
        sys.exit(f"{name}: sequencer replay does not reproduce endContent")
    print(line("(s) wire JSON, submit", count, timing))

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


# -- paired runs against another checkout, and Yjs -----------------------------------


def once(name: str) -> None:
    """One (a) and one (s) replay in this process: prints their CPU seconds as JSON."""
    trace = load(traces_dir() / f"{name}.json.gz")
    wire = wire_ops(trace)
    apply_cpu, document = timed(lambda: replay_apply(trace), 1)
    assert isinstance(document, Document) and document.text() == trace.end
    submit_cpu, document = timed(lambda: replay_sequencer(trace, wire), 1)
    assert isinstance(document, Document) and document.text() == trace.end
    print(json.dumps({"apply": apply_cpu.cpu, "submit": submit_cpu.cpu}))


def run_tandem(name: str, src: str | None) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "bench.ot_replay", "--trace", name, "--once"]
    output = subprocess.run(command, env=env, cwd=root, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(output.stdout)
    return result


def run_yjs(name: str) -> float:
    peers = Path(__file__).resolve().parent / "peers"
    trace = traces_dir().resolve() / f"{name}.json.gz"
    command = ["node", "yjs_replay.mjs", str(trace), "1"]
    output = subprocess.run(command, cwd=peers, check=True, capture_output=True, text=True)
    cpu: float = json.loads(output.stdout)["cpu"][0]
    return cpu


def pairs(name: str, src: str, rounds: int, yjs: bool) -> None:
    """Alternate this checkout with the one under ``src`` (and Yjs); medians and ratios."""
    src = str(Path(src).resolve())
    runs: dict[str, list[float]] = {
        "before (a)": [],
        "after (a)": [],
        "before (s)": [],
        "after (s)": [],
        "yjs": [],
    }
    print(f"{name}: (a) apply each patch, (s) wire JSON + submit; CPU s, one replay per process")
    for index in range(rounds):
        order = ["before", "after"] if index % 2 == 0 else ["after", "before"]
        if yjs:
            order.insert(index % 3, "yjs")
        for variant in order:
            if variant == "yjs":
                runs["yjs"].append(run_yjs(name))
                continue
            result = run_tandem(name, src if variant == "before" else None)
            runs[f"{variant} (a)"].append(result["apply"])
            runs[f"{variant} (s)"].append(result["submit"])
        shown = "  ".join(f"{key} {values[-1]:.3f}" for key, values in runs.items() if values)
        print(f"  round {index + 1}: {shown}")
    medians = {key: statistics.median(values) for key, values in runs.items() if values}
    print("medians: " + "  ".join(f"{key} {value:.3f}" for key, value in medians.items()))
    for path in ("(a)", "(s)"):
        before, after = runs[f"before {path}"], runs[f"after {path}"]
        lower = sum(b < a for a, b in zip(before, after, strict=True))
        print(
            f"  {path} after/before {medians[f'after {path}'] / medians[f'before {path}']:.3f}"
            f" (after lower in {lower} of {rounds} rounds)"
        )
        if yjs:
            print(
                f"  {path} before/yjs {medians[f'before {path}'] / medians['yjs']:.3f}"
                f"  after/yjs {medians[f'after {path}'] / medians['yjs']:.3f}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", default=DEFAULT_TRACE, help="trace name, without .json.gz")
    parser.add_argument("--all", action="store_true", help="every trace in the folder")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--no-pycrdt", action="store_true", help="skip the pycrdt baseline")
    parser.add_argument("--pairs", metavar="SRC", help="compare with the tandem under SRC")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --pairs (median)")
    parser.add_argument("--yjs", action="store_true", help="with --pairs: Yjs too")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rounds < 1:
        parser.error("--repeat and --rounds must be at least 1")
    if args.once:
        once(args.trace)
        return
    if args.pairs:
        pairs(args.trace, args.pairs, args.rounds, args.yjs)
        return

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
