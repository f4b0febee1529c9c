"""Where a ``tandem serve`` spends its CPU under one scenario: ``python -m bench.profile_path``.

Starts a server of ``bench/servers.py`` (``tandem-memory`` unless told), drives it
with the load generator under a scenario of ``python -m bench`` (``2000c-200d``
unless told) and, only while the clients type and drain, samples it with
``py-spy record --format raw`` (the ``bench`` extra installs py-spy; it needs
ptrace rights on the server process). Each sample is one stack of the thread
that was running; it is charged to a part of the path:

* **by leaf** (self time, the parts add up to 100 %): the innermost frame's
  ``file:function``, through ``PARTS`` below — or, for a frame of no part (the
  standard library's helpers, a dataclass's generated ``__init__``), the first
  frame above it that has one;
* **inclusive**, for the inner parts only (``INNER``): the share of samples with
  any frame of that part on the stack (a commit that encodes is counted in both
  "commit" and "encoding"). The outer layers (the loop, the transport, the
  gateway) are on nearly every stack, so their inclusive share says nothing.

It prints both, the top functions by self time, and CPU per 1,000 deliveries of
the profiled run. By default py-spy samples without pausing the server
(``--nonblocking``), which keeps its timing but, in py-spy's words, "may lead
to inaccurate results": a stack read while it changes is lost or wrong, and a
thread waiting in a system call holds still, so the syscalls can be favoured.
``--blocking`` pauses the server per sample for exact stacks. Compare shares,
not absolute CPU, with ``python -m bench``. ``--raw FILE`` keeps py-spy's
collapsed stacks (for flame graphs: ``flamegraph.pl FILE``).

``--perf`` instead samples with ``perf record`` (on-CPU time only, any one-node
server): the share of the CPU in the kernel, the interpreter (CPython, or
Node's V8), uvloop, pycrdt, orjson, libc, and the top symbols. It is the
measure to trust for "how much is the kernel's": py-spy's samples include time
a thread is runnable but waiting for a CPU, which on a loaded machine lands
where it was preempted (often right after a write woke the reader).

``--syscalls`` instead counts the server's system calls with ``strace -c`` over
the same phase, per delivery and per op, for any one-node server (a peer too):
how many writes and reads each server makes for the same deliveries. strace
slows the server several-fold: compare counts, not latencies.

Contacts only 127.0.0.1; stops by itself.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench import propagation, servers

#: Part of the path -> what a frame's ``file:function`` contains (first match wins).
PARTS: list[tuple[str, tuple[str, ...]]] = [
    (
        "encoding and parsing",
        (
            "tandem/protocol.py",
            "tandem/session/payloads.py",
            "tandem/storage/codec.py",
            "json/",
            "orjson",
        ),
    ),
    ("commit (group committer, store)", ("tandem/session/commit.py", "tandem/storage/")),
    ("replica (Yjs mirror)", ("tandem/merge/", "tandem/session/yjs.py", "pycrdt/")),
    ("OT and sequencing", ("tandem/ot/", "tandem/sequencer.py", "tandem/records.py")),
    (
        "fan-out (delivery core, per-member queue, per-tick flush)",
        ("tandem/session/delivery.py", "collab.py:Connection.send", "collab.py:Connection.flush"),
    ),
    (
        "socket I/O and framing",
        (
            "tandem/server/collab_transport.py",
            "tandem/server/collab_asgi.py",
            "tandem/frames.py",
            "tandem/server/uvicorn_glue.py",
            "uvicorn",
            "websockets/",
            "h11/",
            "httptools",
        ),
    ),
    ("document session (async shell)", ("tandem/session/",)),
    ("gateway (collab, admission, limits)", ("tandem/server/", "tandem/limits.py", "tandem/auth")),
    ("metrics", ("tandem/metrics.py", "prometheus_client/")),
    # uvloop runs the loop in C: its time (epoll, socket reads, dispatching callbacks)
    # shows as the Python frame that entered it, asyncio.run's Runner.run.
    (
        "event loop and hand-offs (uvloop, tasks, futures, events)",
        ("asyncio/", "uvloop/", "concurrent/", "threading.py", "selectors.py"),
    ),
    ("logging", ("logging/",)),
    ("tandem, other", ("tandem/",)),
]
#: The parts whose inclusive share is reported.
INNER = {name for name, _ in PARTS[:5]}
#: Frames of these are charged to the first frame above them that has a part.
GENERIC = ("typing.py", "dataclasses.py", "enum.py", "functools.py", "abc.py", "<")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")


def generic(file: str) -> bool:
    return not file or any(g in file for g in GENERIC)


def part(file: str, func: str) -> str | None:
    where = f"{file}:{func}"
    for name, needles in PARTS:
        if any(needle in where for needle in needles):
            return name
    return None


def parse(raw: str) -> list[tuple[list[tuple[str, str]], int]]:
    """py-spy's raw (collapsed) output: ``frame;frame;... count``, root first."""
    stacks = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for text in stack.split(";"):
            m = FRAME.match(text)
            frames.append((m["func"], m["file"]) if m else (text, ""))
        stacks.append((frames, int(count)))
    return stacks


def charge(
    stacks: list[tuple[list[tuple[str, str]], int]],
) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """Samples per part by leaf, per part inclusive, per leaf function; and the total."""
    by_leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        total += count
        leaf = next(
            (found for func, file in reversed(frames) if (found := part(file, func))), "other"
        )
        innermost = next(
            ((func, file) for func, file in reversed(frames) if not generic(file)), None
        )
        if innermost is not None:
            functions[f"{innermost[0]} ({Path(innermost[1]).name})"] += count
        by_leaf[leaf] += count
        for name in {part(file, func) for func, file in frames} & INNER:
            inclusive[str(name)] += count
    return by_leaf, inclusive, functions, total


def sampler(args: argparse.Namespace, pid: int, out: Path) -> list[str]:
    """The command that watches the server from "typing" to "drained" (stopped by SIGINT)."""
    if args.syscalls:
        return ["strace", "-c", "-f", "-p", str(pid), "-o", str(out)]
    if args.perf:
        return ["perf", "record", "-F", str(args.rate), "-p", str(pid), "-o", f"{out}.data"]
    cmd = [args.py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", str(args.rate)]
    return cmd + ["--output", str(out)] + ([] if args.blocking else ["--nonblocking"])


def profile(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    spec = propagation.scaled(propagation.SCENARIOS[args.scenario], args.scale)
    out = Path(tempfile.mkdtemp(prefix="tandem-profile-")) / "raw.txt"
    with servers.start(args.server, spec["docs"]) as server:
        cmd = [*propagation.LOADGEN_CMD, "--protocol", propagation.protocol(args.server)]
        cmd += ["--url", server.url, "--pid", server.pids, "--duration", str(args.duration)]
        cmd += ["--drain", "3", "--announce"] + (["--token", server.token] if server.token else [])
        for key, value in spec.items():
            cmd += [f"--{key}", str(value)]
        gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watcher: subprocess.Popen[bytes] | None = None
        assert gen.stderr is not None and gen.stdout is not None
        errors: list[str] = []
        for line in gen.stderr:
            if line.strip() == "typing":
                watcher = subprocess.Popen(
                    sampler(args, server.process.pid, out),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            elif line.strip() == "drained":
                break
            else:
                errors.append(line)
        # py-spy, strace and perf write their file when interrupted, as on Ctrl-C.
        if watcher is not None:
            watcher.send_signal(2)
            _, watcher_err = watcher.communicate(timeout=60)
            if args.perf:
                report = subprocess.run(
                    ["perf", "report", "-i", f"{out}.data", "--sort", "dso,sym", "--stdio"],
                    capture_output=True,
                    text=True,
                )
                out.write_text(report.stdout)
            if not out.is_file():
                raise RuntimeError(
                    f"{watcher.args!r} wrote nothing: {watcher_err.decode()[-1000:]}"
                )
        stdout, rest = gen.communicate(timeout=120)
        errors.append(rest)
        if gen.returncode != 0:
            raise RuntimeError("".join(errors)[-2000:])
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    raw = out.read_text()
    if args.raw:
        Path(args.raw).write_text(raw)
    shutil.rmtree(out.parent, ignore_errors=True)
    return raw, result


PERF_ROW = re.compile(r"^\s*([\d.]+)%\s+(\S+(?: tid \d+)?)\s+\[([.k])\]\s+(.*)$")
#: Where on-CPU time went, by the shared object perf found it in (first match wins).
OBJECTS: list[tuple[str, tuple[str, ...]]] = [
    ("kernel (system calls, TCP loopback, scheduling)", ("[kernel",)),
    ("CPython interpreter", ("python3", "libpython")),
    ("uvloop and libuv", ("uvloop", "loop.cpython")),
    ("pycrdt (the replica's Yrs)", ("pycrdt", "_pycrdt")),
    ("orjson", ("orjson",)),
    ("httptools, websockets' C speedups", ("httptools", "speedups")),
    ("libc", ("libc.so", "libc-")),
    ("Node.js (V8, its JIT code)", ("node", "[JIT]", "libstdc++")),
]


def perf_objects(report: str) -> tuple[dict[str, float], list[tuple[float, str, str]]]:
    """On-CPU share per kind of shared object, and the top symbols, from ``perf report``."""
    shares: dict[str, float] = {}
    symbols = []
    for line in report.splitlines():
        m = PERF_ROW.match(line)
        if not m:
            continue
        share, dso, symbol = float(m[1]), m[2], m[4].strip()
        kind = "[kernel" if m[3] == "k" else dso
        name = next((n for n, needles in OBJECTS if any(x in kind for x in needles)), "other")
        shares[name] = shares.get(name, 0.0) + share
        symbols.append((share, dso, symbol))
    return shares, symbols


def perf_report(report: str, result: dict[str, Any] | None) -> str:
    shares, symbols = perf_objects(report)
    lines = []
    if result is not None:
        lines.append(
            f"{result['delivered']} deliveries, {result['lost']} lost, server CPU "
            f"{propagation.fmt(propagation.per_k(result), 0, 3)} s per 1,000 deliveries "
            "(on-CPU samples only)"
        )
    lines.append(f"\n{'where the CPU was':<52} {'share':>7}")
    for name, share in sorted(shares.items(), key=lambda item: -item[1]):
        lines.append(f"{name:<52} {share:>6.1f}%")
    lines.append(f"\n{'symbol (object)':<70} {'share':>6}")
    for share, dso, symbol in sorted(symbols, reverse=True)[:20]:
        lines.append(f"{f'{symbol} ({dso})'[:70]:<70} {share:>5.1f}%")
    return "\n".join(lines)


SYSCALL_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def syscalls(summary: str) -> Counter[str]:
    """Calls per system call from ``strace -c``'s summary (without its total line)."""
    calls: Counter[str] = Counter()
    for line in summary.splitlines():
        m = SYSCALL_ROW.match(line)
        if m and m[2] != "total":
            calls[m[2]] += int(m[1])
    return calls


def syscall_report(summary: str, result: dict[str, Any]) -> str:
    calls = syscalls(summary)
    delivered = result["delivered"] or 1
    lines = [
        f"{result['delivered']} deliveries, {result['ops']} ops, {result['lost']} lost; "
        f"{sum(calls.values())} system calls while typing and draining (under strace)",
        f"\n{'system call':<20} {'calls':>9} {'per delivery':>12} {'per op':>8}",
    ]
    for name, count in calls.most_common(12):
        lines.append(
            f"{name:<20} {count:>9} {count / delivered:>12.3f} {count / (result['ops'] or 1):>8.2f}"
        )
    return "\n".join(lines)


def report(raw: str, result: dict[str, Any] | None) -> str:
    by_leaf, inclusive, functions, total = charge(parse(raw))
    if not total:
        return "no samples"
    lines = []
    if result is not None:
        lines.append(
            f"{result['delivered']} deliveries, {result['lost']} lost, p99 "
            f"{propagation.fmt(result['p99'], 0)} ms, server CPU "
            f"{propagation.fmt(propagation.per_k(result), 0, 3)} s per 1,000 deliveries "
            f"(under the profiler); {total} samples"
        )
    lines.append(f"\n{'part of the path':<60} {'by leaf':>8} {'inclusive':>9}")
    names = [name for name, _ in PARTS] + ["other"]
    for name in sorted(names, key=lambda n: -by_leaf[n]):
        if by_leaf[name] or inclusive[name]:
            share = f"{100 * inclusive[name] / total:>8.1f}%" if name in INNER else f"{'-':>9}"
            lines.append(f"{name:<60} {100 * by_leaf[name] / total:>7.1f}% {share}")
    lines.append(f"\n{'function (self time)':<70} {'share':>6}")
    for func, count in functions.most_common(20):
        lines.append(f"{func[:70]:<70} {100 * count / total:>5.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_path",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--server",
        default="tandem-memory",
        choices=[name for name in servers.SERVERS if servers.nodes(name) == 1],
        help="a Tandem for py-spy; any one-node server with --syscalls",
    )
    parser.add_argument(
        "--syscalls",
        action="store_true",
        help="count the server's system calls per delivery with strace -c instead",
    )
    parser.add_argument("--scenario", default="2000c-200d", choices=propagation.SCENARIOS)
    parser.add_argument("--scale", type=float, default=1.0, help="clients and documents × this")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of typing")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument(
        "--perf",
        action="store_true",
        help="on-CPU samples with perf record: kernel, interpreter, uvloop, pycrdt... shares",
    )
    parser.add_argument(
        "--blocking",
        action="store_true",
        help="let py-spy pause the server for each sample (exact stacks, slower server)",
    )
    parser.add_argument("--raw", help="keep py-spy's collapsed stacks in this file")
    parser.add_argument("--from-raw", help="only report on a --raw file of an earlier run")
    parser.add_argument(
        "--py-spy", default=shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    )
    args = parser.parse_args(argv)
    if args.from_raw:
        text = Path(args.from_raw).read_text()
        print(perf_report(text, None) if args.perf else report(text, None))
        return
    if not (args.syscalls or args.perf) and not args.server.startswith("tandem"):
        parser.error("py-spy profiles Python: a tandem server, or --syscalls / --perf for any")
    tool, install = (
        ("strace", "Debian: apt-get install strace")
        if args.syscalls
        else ("perf", "Debian: apt-get install linux-perf")
        if args.perf
        else (args.py_spy, 'the bench extra: .venv/bin/pip install -e ".[bench]"')
    )
    if not shutil.which(tool):
        parser.error(f"{tool} is not installed ({install})")
    propagation.raise_file_limit()
    raw, result = profile(args)
    if args.syscalls:
        print(syscall_report(raw, result))
    elif args.perf:
        print(perf_report(raw, result))
    else:
        print(report(raw, result))


if __name__ == "__main__":
    main()
