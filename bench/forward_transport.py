"""Which transport carries a forwarded submit: ``python -m bench.forward_transport``.

A forwarded submit is one request to the owner node and one answer back
(``session/owners.py``). This measures that round trip, sequentially, with a
~300-byte payload, over the two Redis transports a node could use without a
new connection between nodes:

* ``pubsub``: the bus's own pub/sub (``RedisBus``: one node channel each way);
* ``list``: a Redis list per node (``RPUSH`` / ``BLPOP``), which would queue
  requests while the owner is briefly away.

Prints median and p99 in milliseconds for each, interleaved in rounds so that
machine load falls on both alike. Needs Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from tandem.bus.redis import RedisBus

REDIS = os.environ.get("TANDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PAYLOAD = b"x" * 300


async def pubsub_round_trips(count: int, prefix: str) -> list[float]:
    owner, forwarder = RedisBus(REDIS, prefix=prefix), RedisBus(REDIS, prefix=prefix)
    await owner.open()
    await forwarder.open()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(data: bytes) -> None:
        await owner.publish("node:a", data)

    await owner.subscribe("node:b", serve)
    await forwarder.subscribe("node:a", answers.put_nowait)
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            await forwarder.publish("node:b", PAYLOAD)
            await answers.get()
            times.append(time.perf_counter() - started)
    finally:
        await forwarder.close()
        await owner.close()
    return times


async def list_round_trips(count: int, prefix: str) -> list[float]:
    owner, forwarder = Redis.from_url(REDIS), Redis.from_url(REDIS)

    async def serve() -> None:
        while True:
            popped: Any = await owner.blpop([f"{prefix}q:b"])  # type: ignore[misc]
            await owner.rpush(f"{prefix}q:a", popped[1])  # type: ignore[misc]

    server = asyncio.create_task(serve())
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            await forwarder.rpush(f"{prefix}q:b", PAYLOAD)
            await forwarder.blpop([f"{prefix}q:a"])
            times.append(time.perf_counter() - started)
    finally:
        server.cancel()
        with contextlib.suppress(BaseException):
            await server
        await owner.aclose()
        await forwarder.aclose()
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return f"median {statistics.median(ordered) * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms"


async def main(rounds: int, count: int) -> None:
    results: dict[str, list[float]] = {"pubsub": [], "list": []}
    for _ in range(rounds):
        prefix = f"bt{uuid.uuid4().hex[:8]}:"
        results["pubsub"] += await pubsub_round_trips(count, prefix)
        results["list"] += await list_round_trips(count, prefix)
    for name, times in results.items():
        print(f"{name:>7}: {len(times)} round trips, {summary(times)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=400)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.count))
