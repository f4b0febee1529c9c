"""Offline merge: a long client branch through the CRDT vs through plain OT.

Run: ``.venv/bin/python -m bench.offline_merge`` (``--quick`` for a smaller run).

Workload: a 50,000-character document (words, some bold, some non-ASCII); a
client makes 5,000 edits scattered through it (typing a few characters,
deleting a few, formatting) while the server commits 5,000 others from the
same base. Measured, in server CPU time:

* the CRDT path: ``tandem.merge.branch.merge_branches`` (median of 3), checked
  to converge exactly (server head + commit == client state + catch-up);
* the plain OT path: every client op transformed step by step against every
  server op (the n×m grid: each client op against the server ops already
  transformed past the client's earlier ops, 2 transforms per cell). It is
  timed for the first ``--ot-sample`` client ops and extrapolated linearly
  (every row of the grid costs the same), then checked to converge with the
  CRDT result on the sample;
* the switch-over point: for growing n = m on the same document, the n·m at
  which the CRDT path becomes faster than the OT grid.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Sequence

from tandem.merge.branch import Engine, merge_branches
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.ot.transform import transform

WORDS = ["lorem", "ipsum", "dolor", "sit", "amet", "tandem", "édition", "naïve", "日本", "delta"]


def make_document(rng: random.Random, size: int) -> Document:
    """A ``size``-code-point document of words, about 5% of them bold."""
    delta = Delta()
    length = 0
    while length < size:
        word = rng.choice(WORDS)[: size - length - 1] + " "
        word = word[: size - length]
        delta.insert(word, {"bold": True} if rng.random() < 0.05 else None)
        length += len(word)
    return Document(delta)


def make_branch(rng: random.Random, length: int, count: int) -> list[Delta]:
    """``count`` scattered edits, each based on the previous one."""
    ops: list[Delta] = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.6 or length < 10:
            at = rng.randrange(length + 1)
            text = rng.choice(WORDS)[: rng.randint(1, 5)]
            ops.append(Delta().retain(at).insert(text))
            length += len(text)
        elif kind < 0.9:
            at = rng.randrange(length - 5)
            count_ = rng.randint(1, 5)
            ops.append(Delta().retain(at).delete(count_))
            length -= count_
        else:
            at = rng.randrange(length - 5)
            ops.append(Delta().retain(at).retain(rng.randint(1, 5), {"italic": True}))
    return [op.chop() for op in ops]


def crdt_time(
    base: Document, server: Sequence[Delta], client: Sequence[Delta], engine: Engine = "compose"
) -> float:
    """Seconds for one branch merge, checked for exact convergence."""
    head = base
    for op in server:
        head = head.apply(op)
    started = time.perf_counter()
    result = merge_branches(base, server, client, head, engine=engine)
    elapsed = time.perf_counter() - started
    assert result.client_document.apply(result.catchup) == result.merged
    return elapsed


def ot_grid(server: Sequence[Delta], client: Sequence[Delta]) -> tuple[list[Delta], list[Delta]]:
    """The n×m OT grid: client ops rebased onto the server ops, and vice versa."""
    against = list(server)
    rebased: list[Delta] = []
    for op in client:
        for j, server_op in enumerate(against):
            op, against[j] = transform(op, server_op, "right"), transform(server_op, op, "left")
        rebased.append(op)
    return rebased, against


def ot_time(server: Sequence[Delta], client: Sequence[Delta]) -> float:
    started = time.perf_counter()
    ot_grid(server, client)
    return time.perf_counter() - started


def switch_over(
    rng: random.Random, base: Document, sizes: Sequence[int]
) -> list[tuple[int, float, float]]:
    """(n·m, CRDT seconds, OT seconds) for n = m in ``sizes``."""
    rows = []
    for size in sizes:
        server = make_branch(rng, len(base), size)
        client = make_branch(rng, len(base), size)
        crdt = statistics.median(crdt_time(base, server, client) for _ in range(3))
        ot = statistics.median(ot_time(server, client) for _ in range(3))
        rows.append((size * size, crdt, ot))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=50_000)
    parser.add_argument("--edits", type=int, default=5_000)
    parser.add_argument("--ot-sample", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.chars, args.edits, args.ot_sample = 10_000, 1_000, 10
    print(f"seed {args.seed}")
    rng = random.Random(args.seed)
    base = make_document(rng, args.chars)
    server = make_branch(rng, len(base), args.edits)
    client = make_branch(rng, len(base), args.edits)
    crdt_runs = [crdt_time(base, server, client) for _ in range(3)]
    crdt = statistics.median(crdt_runs)
    print(
        f"branch merge (compose engine), {args.chars:,} chars, "
        f"{args.edits:,} client vs {args.edits:,} server edits: "
        f"median {crdt * 1000:.0f} ms (runs: {', '.join(f'{t * 1000:.0f}' for t in crdt_runs)} ms)"
    )
    yrs = crdt_time(base, server, client, "yrs")
    print(f"same through the pycrdt (Yrs) engine, one run: {yrs * 1000:.0f} ms")
    sample = client[: args.ot_sample]
    sample_time = ot_time(server, sample)
    per_row = sample_time / len(sample)
    estimate = per_row * len(client)
    print(
        f"plain OT grid: {len(sample)} client ops × {len(server):,} server ops took "
        f"{sample_time:.2f} s ({per_row * 1000:.1f} ms per client op); "
        f"extrapolated to {len(client):,} client ops: {estimate:.0f} s "
        f"({estimate / crdt:,.0f}× the CRDT path)"
    )
    # The sample converges through OT exactly as through the CRDT path.
    rebased, against = ot_grid(server, sample)
    head = base
    for op in server:
        head = head.apply(op)
    via_server = head
    for op in rebased:
        via_server = via_server.apply(op)
    via_client = base
    for op in sample:
        via_client = via_client.apply(op)
    for op in against:
        via_client = via_client.apply(op)
    assert via_server == via_client
    print("switch-over (n = m on the same document; n·m, CRDT ms, OT ms):")
    sizes = [5, 10, 20, 40, 80] if args.quick else [5, 10, 20, 40, 80, 160]
    for cells, crdt_s, ot_s in switch_over(random.Random(args.seed + 1), base, sizes):
        faster = "CRDT" if crdt_s < ot_s else "OT"
        print(f"  n·m={cells:>6,}  CRDT {crdt_s * 1000:8.1f}  OT {ot_s * 1000:8.1f}  -> {faster}")


if __name__ == "__main__":
    main()
