"""A follower's CPU per other owner's op, in one process: ``python -m bench.follower_path``.

A node that does not own a document hears each op its owner committed over
the bus and tells its own members. This drives that path alone: the real
``DocumentSession`` of a ``DocumentManager`` (memory store) with ``--members``
members that only count what they are sent, told that another node owns the
document, is fed ``--ops`` payloads as the owner publishes them
(``encode_op``: a typist inserting a few characters at a random place, the
document growing to a few thousand characters). Reported per round (median
over ``--rounds``): process CPU µs per op while the ops arrive, then the CPU
of the first read of the document afterwards (a join's or a REST read's:
whatever a follower left unapplied is applied then), both per op.

CPU time, not latency: hardly affected by what else the machine does, so it
compares two checkouts in a minute (run it on both, alternately; another
checkout's ``src`` on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from pathlib import Path

from tandem.metrics import Metrics
from tandem.ot.delta import Delta
from tandem.ot.document import Document
from tandem.records import OpRecord
from tandem.session.manager import DocumentManager
from tandem.session.payloads import encode_op
from tandem.settings import Settings
from tandem.storage.memory import MemoryStore

DOC = "bench"


class Counting:
    """A member's connection: counts what it is sent."""

    def __init__(self, client: str) -> None:
        self.client, self.user, self.name = client, "u", "u"
        self.sent = 0

    def send(self, message: str) -> None:
        self.sent += 1


class OwnedElsewhere:
    """The lease, as the session asks it: another node owns the document."""

    def owns(self, doc: str) -> bool:
        return False


def payloads(count: int, seed: int) -> list[bytes]:
    """What the owner publishes for ``count`` typed ops, in version order."""
    rng = random.Random(seed)
    document = Document()
    out = []
    for version in range(1, count + 1):
        at = rng.randint(0, len(document))
        op = Delta().retain(at).insert(rng.choice(["a", "bc", "def "])).chop()
        document = document.apply(op)
        record = OpRecord(DOC, version, op, "typist@u", version, "u", time.time())
        out.append(encode_op("owner", record))
    return out


async def one_round(members: int, data: list[bytes]) -> tuple[float, float, int]:
    store = MemoryStore()
    await store.open()
    config = Settings(node_id="follower", data_dir=Path("unused"))
    manager = DocumentManager(store, config, Metrics("follower"))
    await manager.start()
    try:
        session = await manager.open(DOC)
        peers = [Counting(f"c{i}") for i in range(members)]
        for peer in peers:
            await session.join(peer, "read", None)
        manager.owners = OwnedElsewhere()  # type: ignore[assignment]
        started = time.process_time()
        for payload in data:
            session.on_bus(payload)
        arriving = time.process_time() - started
        started = time.process_time()
        length = len(session.committed_document)
        reading = time.process_time() - started
        assert session.committed_version == len(data), session.committed_version
        assert all(peer.sent == len(data) + 1 for peer in peers)
        return arriving / len(data), reading / len(data), length
    finally:
        manager.owners = None
        await manager.close()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    data = payloads(args.ops, 1)
    arriving, reading = [], []
    for _ in range(args.rounds):
        per_op, read, length = asyncio.run(one_round(args.members, data))
        arriving.append(per_op * 1e6)
        reading.append(read * 1e6)
    print(
        f"{args.ops} ops, {args.members} members, document {length} chars: "
        f"CPU per op arriving {statistics.median(arriving):.1f} µs "
        f"(rounds {', '.join(f'{x:.1f}' for x in arriving)}), "
        f"at the first read {statistics.median(reading):.1f} µs per op"
    )


if __name__ == "__main__":
    main()
