"""CPU per bus message through Redis, in process: ``python -m bench.bus``.

Three ``RedisBus`` nodes in one process (one deployment: a shared channel
prefix); one publishes ``--messages`` messages of ``--size`` bytes on one
channel, the two others subscribe to it, and the run ends when both have every
message. Measured: this process's CPU seconds (all three nodes: publishing,
reading, dispatching) per 1,000 messages published, and wall time. Publishing
comes in three shapes, each a separate run: ``sequential`` (one ``await
publish`` after another, as a node's publish loop does with what it has
queued), ``paced`` (the same with one publish per event-loop turn: what a busy
node's many small publishes look like) and ``burst`` (``--burst`` tasks
publishing at once, as answers to forwarded submits do).

To compare two builds, give each a ``src`` directory (a ``git worktree`` of the
commit before, say); rounds alternate them, flipping the order every round, and
print every run and the medians and their ratio:

    git worktree add .bench/before HEAD~1   # inside the clone, ignored by git
    python -m bench.bus --variant before=.bench/before/src --variant after=src

Needs Redis on 127.0.0.1 (``TANDEM_TEST_REDIS_URL``); uses a random prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

REDIS = os.environ.get("TANDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SHAPES = ("sequential", "paced", "burst")


async def run(shape: str, messages: int, size: int, burst: int) -> dict[str, float]:
    from tandem.bus.redis import RedisBus

    prefix = f"bench-bus-{uuid.uuid4().hex[:8]}:"
    nodes = [RedisBus(REDIS, prefix=prefix) for _ in range(3)]
    for node in nodes:
        await node.open()
    received = [0, 0]
    done = asyncio.Event()

    def handler(index: int):  # type: ignore[no-untyped-def]
        def receive(_: bytes) -> None:
            received[index] += 1
            if min(received) >= messages:
                done.set()

        return receive

    for index, node in enumerate(nodes[1:]):
        await node.subscribe("doc", handler(index))
    payload = os.urandom(size)
    publisher = nodes[0]
    cpu, wall = time.process_time(), time.perf_counter()
    if shape == "sequential":
        for _ in range(messages):
            await publisher.publish("doc", payload)
    elif shape == "paced":
        for _ in range(messages):
            await publisher.publish("doc", payload)
            await asyncio.sleep(0)  # one publish per loop turn
    else:

        async def one() -> None:
            await publisher.publish("doc", payload)

        for start in range(0, messages, burst):
            await asyncio.gather(*(one() for _ in range(min(burst, messages - start))))
    await asyncio.wait_for(done.wait(), 60)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    for node in nodes:
        await node.close()
    return {"cpu_per_1000": cpu / messages * 1000, "wall": wall}


def child(args: argparse.Namespace) -> None:
    result = asyncio.run(run(args.shape, args.messages, args.size, args.burst))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--variant", action="append", default=[], help="NAME=SRC_DIR (a checkout's src)"
    )
    parser.add_argument("--shape", choices=SHAPES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shape:
        child(args)
        return
    variants = [v.split("=", 1) for v in args.variant] or [["this", "src"]]
    results: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        order = variants if round_ % 2 == 0 else variants[::-1]
        for shape in SHAPES:
            for name, src in order:
                env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
                out = subprocess.run(
                    [sys.executable, "-m", "bench.bus", "--shape", shape]
                    + ["--messages", str(args.messages), "--size", str(args.size)]
                    + ["--burst", str(args.burst)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((name, shape), []).append(result["cpu_per_1000"])
                print(
                    f"round {round_ + 1} {shape:10} {name:8} "
                    f"cpu/1000 msgs {result['cpu_per_1000'] * 1000:7.1f} ms  "
                    f"wall {result['wall']:6.2f} s  load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    for shape in SHAPES:
        medians = {name: statistics.median(results[(name, shape)]) for name, _ in variants}
        line = "  ".join(f"{name} {m * 1000:.1f} ms" for name, m in medians.items())
        print(f"median CPU per 1,000 messages, {shape}: {line}")
        if len(variants) == 2:
            (a, _), (b, _) = variants
            pairs = zip(results[(a, shape)], results[(b, shape)], strict=True)
            wins = sum(1 for x, y in pairs if y < x)
            print(
                f"  {b}/{a} = {medians[b] / medians[a]:.2f}; "
                f"{b} lower in {wins}/{args.rounds} rounds"
            )


if __name__ == "__main__":
    main()
