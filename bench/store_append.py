"""How long one durable ``Store.append`` takes, by backend and batch size.

Appends batches of 1, 10 and 100 one-keystroke ops (``retain n, insert "x"``)
to a fresh store and prints the median and p99 milliseconds per append and the
ops/s that the median implies. Then, with ``--history N``, it builds one
document of N ops and times the reads a session does on it (``get_ops`` of the
last 100, ``find_seq``, ``head``) to show they do not grow with the log.

    python -m bench.store_append                  # sqlite and postgres
    python -m bench.store_append --backends sqlite --rounds 500 --history 0

``--spread N`` measures what the server does instead at 2,000 clients over 200
documents: one-op ``commit``s on the event loop spread over 200 documents,
their syncs shared by the 5 ms window; it prints the CPU and the bytes written
(``/proc/self/io``) per op, the two things storage costs there.

    python -m bench.store_append --backends sqlite --rounds 0 --history 0 --spread 2000

PostgreSQL comes from ``--postgres-dsn`` (default: TANDEM_BENCH_POSTGRES_DSN or
postgresql://postgres@127.0.0.1:5432/test) and gets a throwaway schema. SQLite
writes to a temporary directory (``--dir`` to choose the disk). Timings
include the fsync: that is the cost an ack waits for.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from tandem.ot.delta import Delta
from tandem.storage import OpRecord, PostgresStore, SQLiteStore, Store

BATCH_SIZES = (1, 10, 100)
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def keystrokes(doc: str, first: int, count: int) -> list[OpRecord]:
    """``count`` one-character inserts at the end of ``doc``, versions ``first…``."""
    now = time.time()
    return [
        OpRecord(doc, v, Delta().retain(v - 1).insert("x"), "bench", v, "bench", now)
        for v in range(first, first + count)
    ]


@asynccontextmanager
async def fresh_store(backend: str, args: argparse.Namespace) -> AsyncIterator[Store]:
    """An open store on new, empty storage, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(dir=args.dir) as folder:
            store: Store = SQLiteStore(Path(folder) / "bench.db")
            await store.open()
            try:
                yield store
            finally:
                await store.close()
        return
    schema = f"bench_{uuid.uuid4().hex}"
    store = PostgresStore(args.postgres_dsn, schema=schema)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        conn = await asyncpg.connect(args.postgres_dsn)
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()


async def timed(call: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    """Seconds per awaited ``call()``, ``rounds`` times."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return samples


def describe(samples: list[float], ops_per_call: int = 1) -> str:
    median = statistics.median(samples)
    p99 = sorted(samples)[min(len(samples) - 1, int(len(samples) * 0.99))]
    line = f"median {median * 1e3:8.3f} ms   p99 {p99 * 1e3:8.3f} ms"
    if ops_per_call:
        line += f"   {ops_per_call / median:10,.0f} ops/s"
    return line


async def bench_appends(backend: str, args: argparse.Namespace) -> None:
    warmup = 10
    for size in BATCH_SIZES:
        # Build every batch first: only the append (encode, check, commit, fsync) is timed.
        batches = iter([keystrokes("doc", 1 + i * size, size) for i in range(warmup + args.rounds)])
        async with fresh_store(backend, args) as store:

            async def append_next(
                store: Store = store, batches: Iterator[list[OpRecord]] = batches
            ) -> None:
                await store.append(next(batches))

            await timed(append_next, warmup)
            samples = await timed(append_next, args.rounds)
        print(f"{backend:8} append batch of {size:3}:  {describe(samples, size)}")


async def bench_history(backend: str, args: argparse.Namespace) -> None:
    async with fresh_store(backend, args) as store:
        n = args.history
        for first in range(1, n + 1, 1000):
            await store.append(keystrokes("big", first, min(1000, n - first + 1)))
        await store.append(keystrokes("small", 1, 10))
        rounds = 50
        reads: dict[str, Callable[[], Awaitable[object]]] = {
            f"get_ops(last 100 of {n:,})": lambda: store.get_ops("big", n - 100),
            "get_ops(small doc, all 10)": lambda: store.get_ops("small", 0),
            f"find_seq(in {n:,})": lambda: store.find_seq("big", "bench", n // 2),
            "head": lambda: store.head("big"),
        }
        for name, call in reads.items():
            samples = await timed(call, rounds)
            print(f"{backend:8} {name:30} {describe(samples, 0)}")


def written_bytes() -> int:
    """Bytes this process has had written to storage so far (``/proc/self/io``)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("write_bytes:"))


async def bench_spread(backend: str, args: argparse.Namespace, documents: int = 200) -> None:
    heads = dict.fromkeys(range(documents), 0)

    def one(i: int) -> list[OpRecord]:
        doc = i % documents
        heads[doc] += 1
        return keystrokes(f"doc{doc}", heads[doc], 1)

    async with fresh_store(backend, args) as store:
        for i in range(2 * documents):  # every document exists, every page is warm
            await store.append(one(i))
        synced: list[asyncio.Future[None]] = []
        cpu, written = time.process_time(), written_bytes()
        for i in range(args.spread):
            sync = await store.commit(one(i))
            if sync is not None and not sync.done():
                synced.append(sync)
            await asyncio.sleep(0)
        await asyncio.gather(*synced)
        cpu, written = time.process_time() - cpu, written_bytes() - written
    print(
        f"{backend:8} {args.spread:,} one-op commits over {documents} documents:"
        f"  {cpu / args.spread * 1e6:6.0f} us CPU and {written / args.spread:8,.0f} bytes"
        " written per op"
    )


async def main(args: argparse.Namespace) -> None:
    for backend in args.backends.split(","):
        if args.rounds:
            await bench_appends(backend, args)
        if args.history:
            await bench_history(backend, args)
        if args.spread:
            await bench_spread(backend, args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated")
    parser.add_argument("--rounds", type=int, default=300, help="appends timed per batch size")
    parser.add_argument("--history", type=int, default=100_000, help="ops in the big doc; 0 skips")
    parser.add_argument("--spread", type=int, default=0, help="one-op commits; 0 skips")
    parser.add_argument("--dir", default=None, help="directory for the SQLite file")
    parser.add_argument(
        "--postgres-dsn", default=os.environ.get("TANDEM_BENCH_POSTGRES_DSN", DEFAULT_DSN)
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
