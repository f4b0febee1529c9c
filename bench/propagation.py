"""Propagation latency of Tandem under load: ``python -m bench.propagation``.

Starts ``tandem serve`` (SQLite, durable group commits) on a free port, drives
it with the Node load generator (``bench/load/loadgen.mjs``) and prints, per
scenario, p50/p95/p99 submit→delivery latency, lost deliveries, server CPU
seconds and peak RSS. Only 127.0.0.1 is contacted; every run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
LOADGEN = ROOT / "bench" / "load" / "loadgen.mjs"

SCENARIOS = {
    "10c": dict(clients=10, typists=10, rate=5, docs=1),
    "200c-20t": dict(clients=200, typists=20, rate=5, docs=1),
    "1000c-10t": dict(clients=1000, typists=10, rate=5, docs=1),
    "2000c-200d": dict(clients=2000, typists=1, rate=2, docs=200),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_loadgen() -> None:
    if not (LOADGEN.parent / "node_modules" / "ws").is_dir():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=LOADGEN.parent, check=True)


class Server:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
        self.port = free_port()
        secret = "bench-secret-0123456789abcdef0123456789"
        self.env = {**os.environ, "TANDEM_JWT_SECRET": secret, "TANDEM_MESSAGE_BURST": "1000000",
                    "TANDEM_MAX_CONNECTIONS_PER_USER": "0", "TANDEM_MAX_CONNECTIONS_PER_IP": "0",
                    **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tandem", "serve", "--port", str(self.port), "--data",
             str(self.dir), "--log-level", "warning"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        self.token = subprocess.run(
            [sys.executable, "-m", "tandem", "token", "--user", "bench", "--ttl", "7200"],
            env=self.env, capture_output=True, text=True, check=True,
        ).stdout.strip()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_loadgen(url: str, pid: int, token: str, duration: float, **scenario: Any) -> dict[str, Any]:
    cmd = ["node", str(LOADGEN), "--url", url, "--token", token, "--pid", str(pid),
           "--duration", str(duration)]
    for key, value in scenario.items():
        cmd += [f"--{key}", str(value)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def row(name: str, r: dict[str, Any]) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:8.1f}"
    cpu = r.get("serverCpu")
    per_k = (cpu / r["delivered"] * 1000) if cpu and r["delivered"] else None
    return (f"{name:<12} {r['protocol']:<8} {r['connected']:>5} {ms(r['p50'])} {ms(r['p95'])} "
            f"{ms(r['p99'])} {r['delivered']:>8} {r['lost']:>6} "
            f"{(cpu or 0):7.2f} {('-' if per_k is None else f'{per_k:6.3f}'):>7} "
            f"{(r.get('serverRss') or 0) / 2**20:7.1f} {r['generatorCpu']:6.1f}")


HEADER = (f"{'scenario':<12} {'server':<8} {'conn':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'delivered':>8} {'lost':>6} {'cpu s':>7} {'cpu/1k':>7} {'rss MiB':>7} {'gen s':>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenarios", default="10c,200c-20t", help=",".join(SCENARIOS))
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    ensure_loadgen()
    print(HEADER)
    for name in args.scenarios.split(","):
        p99s = []
        for _ in range(args.repeat):
            server = Server()
            try:
                result = run_loadgen(f"ws://127.0.0.1:{server.port}/collab", server.process.pid,
                                     server.token, args.duration, **SCENARIOS[name])
            finally:
                server.close()
            print(row(name, result), flush=True)
            if result["p99"] is not None:
                p99s.append(result["p99"])
        if len(p99s) > 1:
            print(f"{name}: median p99 over {len(p99s)} runs = {statistics.median(p99s):.1f} ms")


if __name__ == "__main__":
    main()
