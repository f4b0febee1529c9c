"""What renewing its leases costs a node: ``python -m bench.lease_renewals``.

A ``LeaseKeeper`` (``session/leases.py``) on the real PostgreSQL acquires
``--docs`` document leases (TTL 10 s, renewed every 3 s: the defaults), lets
its renewals fall into step, then for ``--seconds`` counts its renew rounds,
the node's CPU time, renew failures and leases lost. ``--per-doc`` renews each
lease with its own statement (in parallel, as the keeper did before
``Leases.renew_many``) instead of one statement for all, for comparison.
Needs PostgreSQL on 127.0.0.1:5432 (database ``test``); uses a throwaway schema.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Sequence

from tandem.metrics import Metrics
from tandem.session.leases import LeaseKeeper
from tandem.session.ownership import LeaseTiming
from tandem.settings import LEASE_MARGIN
from tandem.storage import PostgresStore
from tandem.storage.leases import LeaseState
from tandem.storage.leases_sql import PostgresLeases

DSN = os.environ.get("TANDEM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


class Counted(PostgresLeases):
    """``PostgresLeases`` that counts its renew rounds (and renews per document if asked)."""

    def __init__(self, store: PostgresStore, per_doc: bool) -> None:
        super().__init__(store)
        self.per_doc = per_doc
        self.rounds: list[int] = []

    async def renew_many(
        self, held: Sequence[tuple[str, int]], node: str, ttl: float
    ) -> dict[str, LeaseState]:
        self.rounds.append(len(held))
        if not self.per_doc:
            return await super().renew_many(held, node, ttl)
        renewed = await asyncio.gather(*(self.renew(doc, node, e, ttl) for doc, e in held))
        return {state.doc: state for state in renewed if state is not None}


async def measure(docs: int, seconds: float, per_doc: bool) -> None:
    schema = "bench_leases_" + uuid.uuid4().hex[:8]
    store = PostgresStore(DSN, schema=schema)
    await store.open()
    leases = Counted(store, per_doc)
    metrics = Metrics("bench")
    lost: list[str] = []
    timing = LeaseTiming.keeping_back(10.0, 3.0, LEASE_MARGIN)
    keeper = LeaseKeeper(leases, "bench", timing, metrics, lost.append)
    keeper.start()
    try:
        limit = asyncio.Semaphore(10)

        async def take(doc: str) -> None:
            async with limit:
                await keeper.acquire(doc)

        await asyncio.gather(*(take(f"d{i}") for i in range(docs)))
        await asyncio.sleep(timing.renew_every * 1.2)  # the first renewals fall into step
        leases.rounds.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        failures = sum(
            float(line.split()[-1])
            for line in metrics.render().decode().splitlines()
            if line.startswith("tandem_lease_renew_failures_total")
        )
        how = "a statement per document" if per_doc else "one statement"
        print(
            f"{docs} leases, {how}: {len(leases.rounds)} renew rounds in {wall:.0f} s "
            f"(sizes {leases.rounds}), node CPU {100 * cpu / wall:.1f} % of a core, "
            f"{failures:.0f} renew failures, {len(lost)} leases lost, "
            f"{len(keeper.owned)} held"
        )
    finally:
        await keeper.stop()
        async with store.pool.acquire() as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--per-doc", action="store_true")
    args = parser.parse_args()
    asyncio.run(measure(args.docs, args.seconds, args.per_doc))


if __name__ == "__main__":
    main()
