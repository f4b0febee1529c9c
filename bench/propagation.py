"""Propagation under a crowd, Tandem against its peers and the floor: ``python -m bench``.

For every scenario and repeat, each server (``bench/servers.py``: Tandem on SQLite,
on ``memory://``, on PostgreSQL with one node and with three over Redis; a trivial
relay; ShareDB in memory, and on PostgreSQL with one node and three over Redis;
Hocuspocus; the y-websocket server; pycrdt-websocket) is started fresh on free
127.0.0.1 ports and driven by the same Node load generator
(``bench/load/loadgen.mjs``), one server at a time, in a rotated order. The table
gives, per server, the medians over repeats of submit→delivery latency (p50, p99,
p99.9, max), lost deliveries, server CPU seconds per 1,000 deliveries, peak RSS and
the generator's own CPU; and each peer's p99 and CPU against the Tandem of the same
durability (durable with durable, in memory with in memory), as a ratio of medians
and as the number of repeats in which Tandem's was lower.

The standard scenarios: 200 clients with 20 typists in one document, 1,000 with
10, 2,000 over 200 documents, and 10,000 over 1,000 documents with one typist per
document at 1 op/s (its bar: p99 under 50 ms with nothing lost). ``--scale``
shrinks the clients and documents for a smoke run.

``--idle`` instead holds N idle connections (default 10,000 over 100 documents) for
a while and reports the server's memory per connection.

Every run contacts only 127.0.0.1 (and PostgreSQL and Redis there, for the servers
that use them) and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bars import bars
from bench.servers import COUNTERPART, PEERS, SERVERS, Server, installed, nodes, start

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
LOADGEN = BENCH / "load" / "loadgen.mjs"
#: How the generator is started. ``--single-threaded-gc``: V8 collects on the
#: generator's own thread, so it never takes more than its one core; its background
#: GC threads took the server's core at moments (docs/performance.md, "The generator's
#: collector, on the server's core").
LOADGEN_CMD = ["node", "--single-threaded-gc", str(LOADGEN)]

#: name -> clients, typists per document, ops/s per typist, documents (and, where the
#: default of 1,000/s is too fast for the servers' handshakes, connections/s).
SCENARIOS: dict[str, dict[str, int]] = {
    "200c-20t": dict(clients=200, typists=20, rate=5, docs=1),
    "1000c-10t": dict(clients=1000, typists=10, rate=5, docs=1),
    "2000c-200d": dict(clients=2000, typists=1, rate=2, docs=200),
    "10000c-1000d": {"clients": 10_000, "typists": 1, "rate": 1, "docs": 1000, "connect-rate": 500},
    "10c": dict(clients=10, typists=10, rate=5, docs=1),
}
STANDARD = ["200c-20t", "1000c-10t", "2000c-200d", "10000c-1000d"]
#: Scenarios with a bar to meet: p99 below this many ms, and nothing lost.
P99_TARGET_MS = {"10000c-1000d": 50.0}
#: Several nodes: deliveries late by seconds (commit conflicts) are late, not lost.
CLUSTER_DRAIN = 20.0


def raise_file_limit() -> None:
    """Thousands of sockets need file descriptors; children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def file_limit_fits(clients: int) -> bool:
    """Whether one process (the generator, a one-node server) may hold ``clients`` sockets."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft == resource.RLIM_INFINITY or soft >= clients + 1000


def npm_install(folder: Path) -> None:
    if not (folder / "node_modules").is_dir() and shutil.which("npm"):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, check=False
        )


def protocol(name: str) -> str:
    """The generator's adapter for a server: Tandem's and ShareDB's variants speak theirs."""
    return name.split("-")[0] if name.startswith(("tandem", "sharedb")) else name


def loadgen(server: Server, **options: Any) -> dict[str, Any]:
    cmd = [*LOADGEN_CMD, "--protocol", protocol(server.name), "--url", server.url]
    cmd += ["--pid", server.pids]
    if server.token:
        cmd += ["--token", server.token]
    for key, value in options.items():
        cmd += [f"--{key}", "true" if value is True else str(value)]
    budget = sum(float(options.get(k, 0)) for k in ("duration", "hold", "drain")) + 240
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip()[-2000:])
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["server"] = server.name
    return result


# -- the table ----------------------------------------------------------------------------


def per_k(r: dict[str, Any]) -> float | None:
    cpu = r.get("serverCpu")
    return cpu / r["delivered"] * 1000 if cpu is not None and r.get("delivered") else None


def slowest(result: dict[str, Any]) -> str:
    """What the run's slowest deliveries were (the generator's ``tail``), in a few words."""
    tail = result.get("tail")
    if not tail:
        return ""
    to = "a typist" if tail["maxToTypist"] else "a reader"
    return (
        f"  max: seq {tail['maxSeq']} sent at +{tail['maxSentAt']:.0f} ms, to {to};"
        f" slowest 0.1%: {tail['slowestTypistShare']:.0%} to typists,"
        f" {tail['slowestFirstOpsShare']:.0%} first ops"
        + (
            f"; to readers only: p99 {tail['readerP99']:.1f} p99.9 {tail['readerP999']:.1f}"
            f" max {tail['readerMax']:.1f} ms"
            if tail.get("readerMax") is not None
            else ""
        )
    )


def conditions(result: dict[str, Any]) -> str:
    """When the run started (UTC) and how much CPU the host took from the machine meanwhile."""
    if result.get("started") is None:
        return ""
    at = time.strftime("%H:%M:%S", time.gmtime(result["started"]))
    steal = result.get("steal")
    return f"  at {at} UTC" + (f", host steal {steal:.0%}" if steal is not None else "")


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(x: float | None, width: int = 8, digits: int = 1) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{digits}f}"


def counterpart(name: str, runs: dict[str, list[dict[str, Any]]]) -> str | None:
    """The Tandem a peer is compared with: the same durability, else plain ``tandem``."""
    if name.startswith("tandem"):
        return None
    theirs = COUNTERPART.get(name, "tandem")
    if runs.get(theirs):
        return theirs
    return "tandem" if runs.get("tandem") else None


def lower_in(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], key: Any) -> tuple[int, int]:
    """In how many repeats (both measured) ``key(ours)`` was below ``key(theirs)``."""
    by_repeat = {r.get("repeat"): key(r) for r in theirs}
    pairs = [(key(r), by_repeat.get(r.get("repeat"))) for r in ours]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    return sum(a < b for a, b in pairs), len(pairs)


@dataclass
class Row:
    """One server's runs of one scenario, summarised (medians over the repeats)."""

    name: str
    connected: int
    p50: float | None
    p95: float | None
    p99: float | None
    p999: float | None
    max: float | None
    each: str  # p99/max per repeat
    delivered: float
    lost: int
    cpu: float | None  # CPU seconds per 1,000 deliveries
    rss: float | None  # MiB
    generator: float | None
    versus: str = ""  # the Tandem compared with
    p99_ratio: float | None = None  # that Tandem's median p99 ÷ this one's
    cpu_ratio: float | None = None
    p99_wins: str = ""  # repeats in which that Tandem's p99 was lower
    cpu_wins: str = ""


def rows(runs: dict[str, list[dict[str, Any]]]) -> list[Row]:
    out = []
    for name in SERVERS:
        results = runs.get(name)
        if not results:
            continue
        row = Row(
            name=name,
            connected=min(r["connected"] for r in results),
            p50=med([r["p50"] for r in results]),
            p95=med([r["p95"] for r in results]),
            p99=med([r["p99"] for r in results]),
            p999=med([r.get("p999") for r in results]),
            max=med([r.get("max") for r in results]),
            each=" ".join(f"{fmt(r['p99'], 0, 0)}/{fmt(r.get('max'), 0, 0)}" for r in results),
            delivered=statistics.median(r["delivered"] for r in results),
            lost=sum(r["lost"] for r in results),
            cpu=med([per_k(r) for r in results]),
            rss=med([r.get("serverRss") and r["serverRss"] / 2**20 for r in results]),
            generator=med([r["generatorCpu"] for r in results]),
        )
        ours_name = counterpart(name, runs)
        if ours_name is not None:
            ours = runs[ours_name]
            row.versus = ours_name
            ours_p99, ours_cpu = med([r["p99"] for r in ours]), med([per_k(r) for r in ours])
            if ours_p99 is not None and row.p99:
                row.p99_ratio = ours_p99 / row.p99
            if ours_cpu is not None and row.cpu:
                row.cpu_ratio = ours_cpu / row.cpu
            row.p99_wins = "{}/{}".format(*lower_in(ours, results, lambda r: r["p99"]))
            row.cpu_wins = "{}/{}".format(*lower_in(ours, results, per_k))
        out.append(row)
    return out


def describe(scenario: str, runs: dict[str, list[dict[str, Any]]]) -> str:
    """The scenario as run (a ``--scale``d run says its own numbers of clients and documents)."""
    spec = {**SCENARIOS[scenario]}
    ran = [r for results in runs.values() for r in results]
    if ran:
        spec.update(clients=ran[0]["clients"], docs=ran[0]["docs"])
    if spec["clients"] != SCENARIOS[scenario]["clients"]:
        scenario += " scaled down"
    return (
        f"{scenario}: {spec['clients']:,} clients, {spec['docs']:,} document(s), "
        f"{spec['typists']} typist(s) per document × {spec['rate']} ops/s"
    )


def verdicts(scenario: str, runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each Tandem's runs against the scenario's bar (p99 and nothing lost), if it has one."""
    target = P99_TARGET_MS.get(scenario)
    if target is None:
        return []
    out = []
    for name in SERVERS:
        results = runs.get(name, []) if name.startswith("tandem") else []
        if results:
            met = sum(
                1 for r in results if r["p99"] is not None and r["p99"] < target and not r["lost"]
            )
            out.append(f"{name}: p99 < {target:.0f} ms with 0 lost in {met} of {len(results)} runs")
    return out


HEADER = (
    f"{'server':<13} {'conn':>5} {'p50':>6} {'p99':>6} {'p99.9':>6} {'max':>6} "
    f"{'p99/max each run':<20} {'deliv/run':>9} {'lost':>5} {'cpu s/1k':>8} "
    f"{'rss MiB':>7} {'gen cpu':>7} {'vs':<13} {'p99 ÷':>6} {'cpu ÷':>6} {'p99 <':>5} "
    f"{'cpu <':>5}"
)


def table(scenario: str, runs: dict[str, list[dict[str, Any]]]) -> str:
    lines = [f"\n{describe(scenario, runs)} (latencies in ms)", HEADER]
    for row in rows(runs):
        lines.append(
            f"{row.name:<13} {row.connected:>5} {fmt(row.p50, 6)} {fmt(row.p99, 6)} "
            f"{fmt(row.p999, 6)} {fmt(row.max, 6)} {row.each:<20} {row.delivered:>9.0f} "
            f"{row.lost:>5} {fmt(row.cpu, 8, 3)} {fmt(row.rss, 7)} {fmt(row.generator, 7)} "
            f"{row.versus:<13} {fmt(row.p99_ratio, 6, 2)} {fmt(row.cpu_ratio, 6, 2)} "
            f"{row.p99_wins:>5} {row.cpu_wins:>5}"
        )
    for name in SERVERS:
        ours = runs.get(name, []) if name.startswith("tandem") else []
        ack_p50 = med([r.get("ackP50") for r in ours])
        ack_p99 = med([r.get("ackP99") for r in ours])
        if ack_p50 is not None and ack_p99 is not None:
            # Only Tandem acknowledges an edit to its author (once it is committed).
            lines.append(f"{name} acks (author's send -> ack): p50 {ack_p50:.1f} p99 {ack_p99:.1f}")
    lines += verdicts(scenario, runs)
    return "\n".join(lines)


LEGEND = (
    "vs = the Tandem this server is compared with (durable with durable, in memory with in "
    "memory); p99 ÷ / cpu ÷ = that Tandem's median p99 / CPU per delivery divided by this "
    "server's (below 1: Tandem is better); p99 < / cpu < = repeats in which that Tandem's was "
    "lower in the same repeat."
)


def markdown(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """The comparison as Markdown tables (medians over repeats), for docs/performance.md."""
    out = []
    for scenario, runs in results.items():
        out += [
            f"\n**{describe(scenario, runs)}**\n",
            "| server | connected | p50 ms | p99 ms | p99.9 ms | max ms | p99 / max ms, each run "
            "| lost | CPU s / 1,000 deliveries | peak RSS MiB | generator CPU s | vs | "
            "p99 ÷ | CPU ÷ | p99 lower | CPU lower |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows(runs):
            cells = [
                row.name,
                str(row.connected),
                fmt(row.p50, 0),
                fmt(row.p99, 0),
                fmt(row.p999, 0),
                fmt(row.max, 0),
                row.each.replace(" ", " · "),
                str(row.lost),
                fmt(row.cpu, 0, 3),
                fmt(row.rss, 0, 0),
                fmt(row.generator, 0),
                row.versus,
                fmt(row.p99_ratio, 0, 2) if row.versus else "",
                fmt(row.cpu_ratio, 0, 2) if row.versus else "",
                row.p99_wins,
                row.cpu_wins,
            ]
            out.append("| " + " | ".join(c.strip() for c in cells) + " |")
        lines = verdicts(scenario, runs)
        out += [""] + [f"- {line}" for line in lines] if lines else []
    issue_bars = bars(results)
    if issue_bars:
        out += ["\n**Issue 26's bars** (same repeats):\n"] + [f"- {line}" for line in issue_bars]
    return "\n".join(out)


def scaled(spec: dict[str, int], scale: float) -> dict[str, int]:
    """A scenario shrunk for a smoke run: fewer clients and documents, the same shape."""
    if scale == 1:
        return spec
    docs = max(1, round(spec["docs"] * scale))
    clients = max(docs * (spec["typists"] + 1), round(spec["clients"] * scale))
    return {**spec, "clients": clients, "docs": docs}


def cpu_times(stat: str) -> tuple[int, int] | None:
    """The machine's (steal, total) CPU time in ticks, from the text of ``/proc/stat``.

    Steal is time a virtual machine's CPUs were ready to run but the host ran
    something else: a repeat slowed by the host has it, one slowed by the
    machine's own work has not. ``guest`` time is already counted in ``user``.
    """
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(x) for x in fields[1:9]]  # user ... steal
            return (ticks[7], sum(ticks)) if len(ticks) == 8 else None
    return None


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU time the host took between two ``cpu_times``."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def read_cpu_times() -> tuple[int, int] | None:
    try:
        return cpu_times(Path("/proc/stat").read_text())
    except OSError:  # not Linux
        return None


def run_one(name: str, scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = scaled(SCENARIOS[scenario], args.scale)
    drain = max(args.drain, CLUSTER_DRAIN) if nodes(name) > 1 else args.drain
    with start(name, spec["docs"]) as server:
        started, before = time.time(), read_cpu_times()
        result = loadgen(server, duration=args.duration, drain=drain, **spec)
        result["started"] = started
        result["steal"] = steal_share(before, read_cpu_times())
        return result


def compare(args: argparse.Namespace) -> None:
    if args.from_json:
        print(markdown(json.loads(Path(args.from_json).read_text())))
        return
    servers = [s for s in args.servers.split(",") if s]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        sys.exit(f"unknown server(s) {', '.join(unknown)}; one of {', '.join(SERVERS)}")
    missing = [s for s in servers if not installed(s)]
    for name in missing:
        print(f"(skipping {name}: not installed — see bench/peers/README.md)", file=sys.stderr)
    servers = [s for s in servers if s not in missing]
    scenarios = args.scenarios.split(",")
    for scenario in scenarios:
        if scenario not in SCENARIOS:
            sys.exit(f"unknown scenario {scenario}; one of {', '.join(SCENARIOS)}")
        if not file_limit_fits(SCENARIOS[scenario]["clients"]):
            sys.exit(
                f"{scenario} needs {SCENARIOS[scenario]['clients'] + 1000} file descriptors per "
                f"process; the hard limit is {resource.getrlimit(resource.RLIMIT_NOFILE)[1]} "
                "(raise it, e.g. `ulimit -Hn 65536` as root, or in /etc/security/limits.conf)"
            )
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in scenarios}
    for repeat in range(args.repeat):
        for scenario in scenarios:
            shift = repeat % len(servers)
            for name in servers[shift:] + servers[:shift]:
                try:
                    r = run_one(name, scenario, args)
                except Exception as exc:  # noqa: BLE001 - report and go on with the others
                    print(f"{scenario} {name}: failed: {exc}", file=sys.stderr)
                    continue
                r["repeat"] = repeat
                results[scenario].setdefault(name, []).append(r)
                print(
                    f"[{repeat + 1}/{args.repeat}] {scenario:<12} {name:<13} "
                    f"p50 {fmt(r['p50'])} p99 {fmt(r['p99'])} p99.9 {fmt(r.get('p999'))} "
                    f"max {fmt(r.get('max'))} ms  delivered {r['delivered']}/{r['expected']}  "
                    f"cpu {fmt(r['serverCpu'], 5, 2)} s  gen {fmt(r['generatorCpu'], 5, 2)} s"
                    + (
                        f"  ack p50 {fmt(r['ackP50'])} p99 {fmt(r['ackP99'])} ms"
                        if r.get("ackP50")
                        else ""
                    )
                    + slowest(r)
                    + conditions(r),
                    file=sys.stderr,
                    flush=True,
                )
    print(LEGEND)
    for scenario in scenarios:
        print(table(scenario, results[scenario]))
    issue_bars = bars(results)
    if issue_bars:
        print("\nIssue 26's bars (same repeats):\n" + "\n".join(issue_bars))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def idle(args: argparse.Namespace) -> None:
    print(
        f"{'server':<12} {'conns':>6} {'held':>6} {'docs':>5} {'connect s':>9} "
        f"{'rss before MiB':>14} {'rss held MiB':>12} {'KiB/conn':>8} {'errors':>6}"
    )
    for name in [s for s in args.servers.split(",") if s and installed(s)]:
        with start(name, args.docs) as server:
            time.sleep(1.0)
            r = loadgen(
                server,
                idle=True,
                clients=args.connections,
                docs=args.docs,
                hold=args.hold,
                **{"connect-rate": args.connect_rate},
            )
        per = r["bytesPerConnection"]
        print(
            f"{name:<12} {r['connected']:>6} {r['held']:>6} {args.docs:>5} "
            f"{r['connectSeconds']:>9.1f} {r['rssBefore'] / 2**20:>14.1f} "
            f"{r['rssHeld'] / 2**20:>12.1f} {fmt(per and per / 1024, 8)} {r['errors']:>6}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenarios", default=",".join(STANDARD), help=",".join(SCENARIOS))
    parser.add_argument("--servers", default=",".join(SERVERS), help=",".join(SERVERS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of typing per run")
    parser.add_argument(
        "--drain",
        type=float,
        default=3.0,
        help="seconds to wait for late deliveries before counting them lost",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 200c-20t only, one repeat, 2 s"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="smoke runs: clients and documents × this (0.05: 10000c-1000d as 500 over 50)",
    )
    parser.add_argument("--json", help="also write every run's raw result to this file")
    parser.add_argument("--from-json", help="print a --json file's results as Markdown tables")
    parser.add_argument("--idle", action="store_true", help="idle connections: memory per conn")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--docs", type=int, default=100, help="documents the idle conns join")
    parser.add_argument("--connect-rate", type=int, default=500, help="idle: connections/s")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds to hold idle conns")
    args = parser.parse_args(argv)
    raise_file_limit()
    npm_install(LOADGEN.parent)
    npm_install(PEERS)
    if args.idle:
        if args.servers == parser.get_default("servers"):
            args.servers = "tandem"
        idle(args)
        return
    if args.quick:
        args.scenarios, args.repeat, args.duration, args.drain = "200c-20t", 1, 2.0, 2.0
    compare(args)


if __name__ == "__main__":
    main()
