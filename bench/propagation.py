"""Propagation under a crowd, Tandem against its peers and the floor: ``python -m bench``.

For every scenario and repeat, each server (Tandem, a trivial relay, ShareDB,
Hocuspocus, the y-websocket server, pycrdt-websocket) is started fresh on a free
127.0.0.1 port and driven by the same Node load generator
(``bench/load/loadgen.mjs``), one server at a time, in a rotated order. The table
gives, per server, the median over repeats of submit→delivery latency, lost
deliveries, server CPU seconds per 1,000 deliveries, peak RSS and the generator's
own CPU, and Tandem's p99 as a ratio of each server's. Tandem runs as
``tandem serve`` with its default durable SQLite store (group commits, fsync per
transaction); the peers keep their documents in memory.

``--idle`` instead holds N idle connections (default 10,000 over 100 documents) for
a while and reports the server's memory per connection.

Every run contacts only 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
LOADGEN = BENCH / "load" / "loadgen.mjs"
PEERS = BENCH / "peers"

#: name -> (clients, typists per document, ops/s per typist, documents)
SCENARIOS: dict[str, dict[str, int]] = {
    "200c-20t": dict(clients=200, typists=20, rate=5, docs=1),
    "1000c-10t": dict(clients=1000, typists=10, rate=5, docs=1),
    "2000c-200d": dict(clients=2000, typists=1, rate=2, docs=200),
    "10c": dict(clients=10, typists=10, rate=5, docs=1),
}
STANDARD = ["200c-20t", "1000c-10t", "2000c-200d"]
SERVERS = ["tandem", "relay", "sharedb", "hocuspocus", "y-websocket", "pycrdt"]
#: The npm package each Node peer needs (under bench/peers/node_modules).
NODE_PEERS = {
    "relay": "ws",
    "sharedb": "sharedb",
    "hocuspocus": "@hocuspocus/server",
    "y-websocket": "@y/websocket-server",
}
SECRET = "bench-secret-0123456789abcdef0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_file_limit() -> None:
    """Thousands of sockets need file descriptors; children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def npm_install(folder: Path) -> None:
    if not (folder / "node_modules").is_dir() and shutil.which("npm"):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, check=False
        )


def installed(name: str) -> bool:
    if name == "tandem":
        return True
    if name == "pycrdt":
        try:
            return importlib.util.find_spec("pycrdt.websocket") is not None
        except ModuleNotFoundError:
            return False
    package = NODE_PEERS[name]
    return (PEERS / "node_modules" / package / "package.json").is_file()


@dataclass
class Server:
    """One server process under test, on a free loopback port."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    token: str
    workdir: Path | None

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def tandem_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "TANDEM_JWT_SECRET": SECRET,
        "TANDEM_MESSAGE_BURST": "1000000",
        "TANDEM_MAX_CONNECTIONS_PER_USER": "0",
        "TANDEM_MAX_CONNECTIONS_PER_IP": "0",
        **(extra or {}),
    }


@contextlib.contextmanager
def start(name: str, docs: int) -> Iterator[Server]:
    port = free_port()
    workdir: Path | None = None
    token = ""
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if name == "tandem":
        workdir = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
        env = tandem_env()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tandem",
                "serve",
                "--port",
                str(port),
                "--data",
                str(workdir),
                "--log-level",
                "warning",
            ],
            env=env,
            **quiet,
        )  # type: ignore[call-overload]
        token = subprocess.run(
            [sys.executable, "-m", "tandem", "token", "--user", "bench", "--ttl", "7200"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    elif name == "pycrdt":
        process = subprocess.Popen(
            [sys.executable, str(PEERS / "pycrdt_server.py"), str(port)], **quiet
        )  # type: ignore[call-overload]
    else:
        process = subprocess.Popen(
            ["node", str(PEERS / f"{name}.mjs"), str(port), str(docs)], **quiet
        )  # type: ignore[call-overload]
    server = Server(name, process, f"ws://127.0.0.1:{port}", token, workdir)
    try:
        wait_listening(port, process)
        yield server
    finally:
        server.close()


def loadgen(server: Server, **options: Any) -> dict[str, Any]:
    cmd = [
        "node",
        str(LOADGEN),
        "--protocol",
        server.name,
        "--url",
        server.url,
        "--pid",
        str(server.process.pid),
    ]
    if server.token:
        cmd += ["--token", server.token]
    for key, value in options.items():
        cmd += [f"--{key}", "true" if value is True else str(value)]
    budget = float(options.get("duration", 0)) + float(options.get("hold", 0)) + 240
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


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(x: float | None, width: int = 8, digits: int = 1) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{digits}f}"


HEADER = (
    f"{'server':<12} {'conn':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
    f"{'p99 each run':<24} {'deliv/run':>9} {'lost':>6} {'cpu s/1k':>8} "
    f"{'rss MiB':>7} {'gen cpu':>7} {'T p99 ÷':>8} {'T wins':>6}"
)


def table(scenario: str, runs: dict[str, list[dict[str, Any]]]) -> str:
    spec = SCENARIOS[scenario]
    lines = [
        f"\n{scenario}: {spec['clients']} clients, {spec['docs']} doc(s), "
        f"{spec['typists']} typist(s)/doc × {spec['rate']} ops/s",
        HEADER,
    ]
    ours = runs.get("tandem", [])
    ours_p99 = med([r["p99"] for r in ours])
    for name in SERVERS:
        results = runs.get(name)
        if not results:
            continue
        p99s = [r["p99"] for r in results]
        each = " ".join("-" if p is None else f"{p:.0f}" for p in p99s)
        theirs = med(p99s)
        ratio = None if ours_p99 is None or not theirs else ours_p99 / theirs
        wins = ""
        if name != "tandem" and ours:
            # Same repeat, same machine: Tandem's p99 against this server's.
            pairs = list(zip([r["p99"] for r in ours], p99s, strict=False))
            won = sum(1 for a, b in pairs if a is not None and (b is None or a < b))
            wins = f"{won}/{len(pairs)}"
        rss = med([r.get("serverRss") and r["serverRss"] / 2**20 for r in results])
        lines.append(
            f"{name:<12} {min(r['connected'] for r in results):>5} "
            f"{fmt(med([r['p50'] for r in results]))} {fmt(med([r['p95'] for r in results]))} "
            f"{fmt(theirs)} {each:<24} {statistics.median(r['delivered'] for r in results):>9.0f} "
            f"{sum(r['lost'] for r in results):>6} {fmt(med([per_k(r) for r in results]), 8, 3)} "
            f"{fmt(rss, 7)} {fmt(med([r['generatorCpu'] for r in results]), 7)} "
            f"{fmt(ratio, 8, 2)} {wins:>6}"
        )
    ack_p50, ack_p99 = med([r.get("ackP50") for r in ours]), med([r.get("ackP99") for r in ours])
    if ack_p50 is not None:
        # Only Tandem acknowledges an edit to its author (once it is fsync'd).
        lines.append(f"tandem acks (author's send -> ack): p50 {ack_p50:.1f} p99 {ack_p99:.1f} ms")
    return "\n".join(lines)


def markdown(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """The comparison as Markdown tables (medians over repeats), for docs/performance.md."""
    out = []
    for scenario, runs in results.items():
        spec = SCENARIOS[scenario]
        ours = [r["p99"] for r in runs.get("tandem", [])]
        ours_p99 = med(list(ours))
        out += [
            f"\n**{scenario}**: {spec['clients']} clients, {spec['docs']} document(s), "
            f"{spec['typists']} typist(s) per document × {spec['rate']} ops/s\n",
            "| server | connected | p50 ms | p99 ms (median) | p99 ms, each run | lost | "
            "CPU s / 1,000 deliveries | peak RSS MiB | generator CPU s | Tandem p99 ÷ this | "
            "Tandem lower |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name in SERVERS:
            rs = runs.get(name)
            if not rs:
                continue
            p99s = [r["p99"] for r in rs]
            theirs = med(list(p99s))
            ratio = "" if not theirs or ours_p99 is None else f"{ours_p99 / theirs:.2f}"
            won = sum(
                1
                for a, b in zip(ours, p99s, strict=False)
                if a is not None and (b is None or a < b)
            )
            p50 = med([r["p50"] for r in rs])
            rss = med([r.get("serverRss") and r["serverRss"] / 2**20 for r in rs])
            cpu = med([per_k(r) for r in rs])
            cells = [
                name,
                str(min(r["connected"] for r in rs)),
                fmt(p50, 0),
                fmt(theirs, 0),
                " / ".join(fmt(p, 0, 0) for p in p99s),
                str(sum(r["lost"] for r in rs)),
                fmt(cpu, 0, 3),
                fmt(rss, 0, 0),
                fmt(med([r["generatorCpu"] for r in rs]), 0),
                "" if name == "tandem" else ratio,
                "" if name == "tandem" else f"{won}/{len(rs)}",
            ]
            out.append("| " + " | ".join(c.strip() for c in cells) + " |")
    return "\n".join(out)


def compare(args: argparse.Namespace) -> None:
    if args.from_json:
        print(markdown(json.loads(Path(args.from_json).read_text())))
        return
    servers = [s for s in args.servers.split(",") if s]
    missing = [s for s in servers if not installed(s)]
    for name in missing:
        print(f"(skipping {name}: not installed — see bench/peers/README.md)", file=sys.stderr)
    servers = [s for s in servers if s not in missing]
    scenarios = args.scenarios.split(",")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in scenarios}
    for repeat in range(args.repeat):
        for scenario in scenarios:
            spec = SCENARIOS[scenario]
            shift = repeat % len(servers)
            for name in servers[shift:] + servers[:shift]:
                try:
                    with start(name, spec["docs"]) as server:
                        r = loadgen(server, duration=args.duration, drain=args.drain, **spec)
                except Exception as exc:  # noqa: BLE001 - report and go on with the others
                    print(f"{scenario} {name}: failed: {exc}", file=sys.stderr)
                    continue
                r["repeat"] = repeat
                results[scenario].setdefault(name, []).append(r)
                print(
                    f"[{repeat + 1}/{args.repeat}] {scenario:<11} {name:<12} "
                    f"p50 {fmt(r['p50'])} p99 {fmt(r['p99'])} ms  delivered "
                    f"{r['delivered']}/{r['expected']}  cpu {fmt(r['serverCpu'], 5, 2)} s  "
                    f"gen {fmt(r['generatorCpu'], 5, 2)} s"
                    + (
                        f"  ack p50 {fmt(r['ackP50'])} p99 {fmt(r['ackP99'])} ms"
                        if r.get("ackP50")
                        else ""
                    ),
                    file=sys.stderr,
                    flush=True,
                )
    print(
        "T p99 ÷ = Tandem's median p99 divided by this server's (below 1: Tandem is faster); "
        "T wins = repeats in which Tandem's p99 was lower."
    )
    for scenario in scenarios:
        print(table(scenario, results[scenario]))
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
