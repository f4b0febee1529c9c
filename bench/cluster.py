"""Propagation latency on one node vs three nodes: ``python -m bench.cluster``.

The same load — by default 200 clients in one document, 20 typists at 5 ops/s;
``--clients 2000 --docs 200 --typists 1`` for many documents (``--typists`` is
per document) — against one ``tandem serve`` and against three nodes sharing
PostgreSQL and Redis (clients spread round-robin over the nodes), interleaved
in the same run. With three
nodes each document has one owner (the node its first client joined) and the
others forward to it. Prints p50/p99 submit→delivery latency, lost
deliveries, server CPU (summed over the nodes), commit conflicts between nodes
and fenced commits, the machine's one-minute load average when the run ended
(the machine may be shared: a number means little without it), then the
median p99 of each and their ratio. ``--busy``
keeps one core busy with a spinning process throughout. Needs PostgreSQL and
Redis on 127.0.0.1; each run uses its own schema and channel prefix and stops
by itself.
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

from bench.propagation import LOADGEN, LOADGEN_CMD, npm_install
from bench.servers import POSTGRES, REDIS, SECRET, free_port, tandem_env


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


def metric(port: int, name: str) -> float:
    """The sum of every sample of the metric ``name`` on the node at ``port`` (nan: no answer)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    except httpx.HTTPError:
        return float("nan")
    pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$"
    return sum(float(m) for m in re.findall(pattern, text, re.M))


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


def run(count: int, duration: float, clients: int, typists: int, docs: int) -> dict[str, Any]:
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
                *LOADGEN_CMD,
                "--url",
                urls,
                "--pid",
                pids,
                "--token",
                token,
                "--clients",
                str(clients),
                "--typists",
                str(typists),
                "--docs",
                str(docs),
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
        result["conflicts"] = sum(
            metric(port, "tandem_commit_conflicts_total") for _, port in nodes
        )
        result["fenced"] = sum(metric(port, "tandem_fenced_commits_total") for _, port in nodes)
        result["owned"] = [metric(port, "tandem_owned_documents") for _, port in nodes]
        return result
    finally:
        for process, _ in nodes:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
        drop_schema(tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--typists", type=int, default=20, help="typists per document")
    parser.add_argument("--docs", type=int, default=1)
    parser.add_argument("--busy", action="store_true", help="keep one core busy meanwhile")
    args = parser.parse_args()
    npm_install(LOADGEN.parent)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    print(
        f"{args.clients} clients, {args.typists} typist(s) per document, {args.docs} document(s)"
        f"{', one core busy' if args.busy else ''}"
    )
    print(
        f"{'nodes':>5} {'p50 ms':>8} {'p99 ms':>8} {'delivered':>9} {'lost':>5} "
        f"{'cpu s':>6} {'conflicts':>9} {'fenced':>6} {'load':>5}  owned"
    )
    p99s: dict[int, list[float]] = {1: [], 3: []}
    try:
        for _ in range(args.repeat):
            for count in (1, 3):
                r = run(count, args.duration, args.clients, args.typists, args.docs)
                if r.get("p99") is None:
                    print(f"{count:>5} nothing measured: {r}", flush=True)
                    continue
                p99s[count].append(r["p99"])
                print(
                    f"{count:>5} {r['p50']:8.1f} {r['p99']:8.1f} {r['delivered']:>9} "
                    f"{r['lost']:>5} {r.get('serverCpu') or 0:6.2f} {r['conflicts']:>9.0f} "
                    f"{r['fenced']:>6.0f} {os.getloadavg()[0]:5.1f}  {r['owned']}",
                    flush=True,
                )
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    one, three = statistics.median(p99s[1]), statistics.median(p99s[3])
    print(f"median p99: 1 node {one:.1f} ms, 3 nodes {three:.1f} ms (ratio {three / one:.2f})")


if __name__ == "__main__":
    main()
