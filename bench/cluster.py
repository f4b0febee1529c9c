"""Propagation latency on one node vs three nodes: ``python -m bench.cluster``.

The same load — 200 clients in one document, 20 typists at 5 ops/s — against
one ``tandem serve`` and against three nodes sharing PostgreSQL and Redis
(clients spread round-robin over the nodes), in the same run. Prints
p50/p99 submit→delivery latency, lost deliveries, server CPU (summed over the
nodes) and commit conflicts between nodes. Needs PostgreSQL and Redis on
127.0.0.1; each run uses its own schema and channel prefix and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.servers import SECRET, free_port, tandem_env

ROOT = Path(__file__).resolve().parents[1]
LOADGEN = ROOT / "bench" / "load" / "loadgen.mjs"
POSTGRES = os.environ.get("TANDEM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("TANDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def start_nodes(count: int, tag: str, workdir: Path) -> list[tuple[subprocess.Popen[bytes], int]]:
    env = tandem_env({"TANDEM_DATABASE_URL": f"{POSTGRES}?schema=b_{tag}"})
    if count > 1:
        env["TANDEM_REDIS_URL"] = f"{REDIS}?prefix=b{tag}:"
    nodes = []
    for i in range(count):
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tandem",
                "serve",
                "--port",
                str(port),
                "--data",
                str(workdir / f"n{i}"),
                "--node-id",
                f"n{i}",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        nodes.append((process, port))
    for _, port in nodes:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
    return nodes


def conflicts(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(m) for m in re.findall(r"^tandem_commit_conflicts_total\{[^}]*\} (\S+)$", text, re.M)
    )


def drop_schema(tag: str) -> None:
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "b_{tag}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def run(count: int, duration: float) -> dict[str, Any]:
    import jwt

    tag = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="tandem-cluster-"))
    nodes = start_nodes(count, tag, workdir)
    try:
        now = int(time.time())
        token = jwt.encode(
            {"sub": "bench", "iat": now, "exp": now + 3600, "docs": {"*": "write"}},
            SECRET,
            algorithm="HS256",
        )
        urls = ",".join(f"ws://127.0.0.1:{port}" for _, port in nodes)
        pids = ",".join(str(process.pid) for process, _ in nodes)
        out = subprocess.run(
            [
                "node",
                str(LOADGEN),
                "--url",
                urls,
                "--pid",
                pids,
                "--token",
                token,
                "--clients",
                "200",
                "--typists",
                "20",
                "--rate",
                "5",
                "--duration",
                str(duration),
            ],
            capture_output=True,
            text=True,
            timeout=duration + 180,
            check=True,
        )
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        result["nodes"] = count
        result["conflicts"] = sum(conflicts(port) for _, port in nodes)
        return result
    finally:
        for process, _ in nodes:
            process.terminate()
            process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
        drop_schema(tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not (LOADGEN.parent / "node_modules").is_dir():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"], cwd=LOADGEN.parent, check=True
        )
    print(
        f"{'nodes':>5} {'p50 ms':>8} {'p99 ms':>8} {'delivered':>9} {'lost':>5} "
        f"{'cpu s':>6} {'conflicts':>9}"
    )
    p99s: dict[int, list[float]] = {1: [], 3: []}
    for _ in range(args.repeat):
        for count in (1, 3):
            r = run(count, args.duration)
            p99s[count].append(r["p99"])
            print(
                f"{count:>5} {r['p50']:8.1f} {r['p99']:8.1f} {r['delivered']:>9} {r['lost']:>5} "
                f"{r.get('serverCpu') or 0:6.2f} {int(r['conflicts']):>9}",
                flush=True,
            )
    one, three = statistics.median(p99s[1]), statistics.median(p99s[3])
    print(f"median p99: 1 node {one:.1f} ms, 3 nodes {three:.1f} ms (ratio {three / one:.2f})")


if __name__ == "__main__":
    main()
