"""What the CRDT replica adds: time per committed op, memory per open document.

Run: ``.venv/bin/python -m bench.replica_cost``. Applies random single-keystroke
ops (inserts, deletes, some formatting) to a document of N characters through
``Replica.apply`` (what ``DocumentSession._advance`` does per op) and through the OT
``Document.apply`` for comparison; the same ops applied later, a backlog of
100 at a time in one Yrs transaction (``Backlog.apply_to``: what a replica
nobody reads costs, caught up at every snapshot); measures the replica's RSS
growth per document by opening 200 replicas of 10,000 characters, and the
memory a full backlog of plain keystroke ops holds.
"""

from __future__ import annotations

import random
import resource
import statistics
import time
import tracemalloc

from tandem.merge.backlog import BACKLOG_LIMIT, Backlog
from tandem.merge.replica import Replica
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.records import OpRecord


def _ops(rng: random.Random, length: int, count: int) -> list[Delta]:
    ops = []
    for _ in range(count):
        at = rng.randrange(length)
        kind = rng.random()
        if kind < 0.7:
            ops.append(Delta().retain(at).insert("x"))
            length += 1
        elif kind < 0.95:
            ops.append(Delta().retain(at).delete(1))
            length -= 1
        else:
            ops.append(Delta().retain(at).retain(1, {"bold": True}))
    return ops


def _records(ops: list[Delta]) -> list[OpRecord]:
    return [
        OpRecord("d", version, op, "c1@u1", version, "u1", 0.0, None)
        for version, op in enumerate(ops, 1)
    ]


def per_op_lazy(size: int, count: int = 3000, seed: int = 1, batch: int = 100) -> float:
    """The same ops as ``per_op``, applied ``batch`` at a time from a backlog."""
    rng = random.Random(seed)
    base = "".join(rng.choice("abcdefgh ") for _ in range(size))
    records = _records(_ops(rng, size, count))
    replica = Replica.seeded(Delta().insert(base), 0)
    backlog = Backlog(limit=batch)
    started = time.process_time()
    for record in records:
        backlog.push(record)
        if backlog.full:
            backlog.apply_to(replica)
    backlog.apply_to(replica)
    return (time.process_time() - started) / count


def backlog_kib(limit: int = BACKLOG_LIMIT) -> float:
    """The memory a full backlog of single-keystroke OT ops (stored without update) holds."""
    rng = random.Random(1)
    ops = [Delta().retain(rng.randrange(10_000)).insert("x") for _ in range(limit)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    backlog = Backlog(limit=limit)
    for record in _records(ops):
        backlog.push(record)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / 1024


def per_op(size: int, count: int = 3000, seed: int = 1) -> tuple[float, float]:
    rng = random.Random(seed)
    base = "".join(rng.choice("abcdefgh ") for _ in range(size))
    ops = _ops(rng, size, count)
    replica = Replica.seeded(Delta().insert(base), 0)
    started = time.process_time()
    for version, op in enumerate(ops, 1):
        replica.apply(op, version)
    crdt = (time.process_time() - started) / count
    document = Document(base)
    started = time.process_time()
    for op in ops:
        document = document.apply(op)
    ot = (time.process_time() - started) / count
    assert replica.plain == document.text()
    return crdt, ot


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_per_doc(size: int = 10_000, docs: int = 200) -> float:
    text = "lorem ipsum " * (size // 12)
    before = rss_kib()
    keep = [Replica.seeded(Delta().insert(text), 0) for _ in range(docs)]
    after = rss_kib()
    assert len(keep) == docs
    return (after - before) / docs


def main() -> None:
    print("replica cost per committed op (random keystrokes; OT Document.apply alongside):")
    for size in (1_000, 10_000, 50_000):
        runs = [per_op(size, seed=seed) for seed in (1, 2, 3)]
        crdt = statistics.median(r[0] for r in runs)
        ot = statistics.median(r[1] for r in runs)
        lazy = statistics.median(per_op_lazy(size, seed=seed) for seed in (1, 2, 3))
        print(
            f"  {size:>6} chars: replica {crdt * 1e6:7.1f} µs/op   "
            f"from a backlog of 100 {lazy * 1e6:7.1f} µs/op   OT apply {ot * 1e6:7.1f} µs/op"
        )
    print(f"replica memory per open document (10,000 chars): {memory_per_doc():.0f} KiB")
    print(f"a full backlog ({BACKLOG_LIMIT} keystroke ops): {backlog_kib():.0f} KiB")


if __name__ == "__main__":
    main()
