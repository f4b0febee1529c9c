"""Every attack at once, several attackers each, for minutes: memory flat, honest client fast.

The long adversarial mode of issue 27. Every attack of this folder runs in
its own attacker process (``tests.adversarial.attackers``), two of each kind,
against one ``tandem serve``, reconnecting whenever the server cuts them.
Meanwhile an honest ``/collab`` client of another document measures its ping
round trip back to back, and the server's resident memory (``VmRSS`` from
``/proc``) is sampled every half second.

* **Memory stays flat.** After a warm-up (the first quarter of the run, at
  least 5 s: the allocator's arenas and the caches fill), the median RSS of
  the last third of the run may exceed the median of the first third after
  warm-up by at most ``FLAT`` (16 MiB), and the peak stays under
  ``PEAK`` (the baseline plus the server-wide held-bytes budget, 256 MiB, plus
  the attackers' per-connection budgets in flight). A leak of a few KB per
  attack round shows as a ramp that fails the first bound within minutes.
* **The honest client stays fast.** After the same warm-up (the attackers' first
  connections load the document's Yjs replica and fill the caches: a one-off
  cost, not the attack's), its 90th percentile stays within 2x of what it was
  before the attack (5 ms floor), and, in the long mode, its 99th percentile
  under 100 ms.

Runs only with ``--slow``: each attack also has its own test in the ordinary run,
and a 15 s soak was too short for its flatness check (16.7 MiB of warm-up growth
against 16 once on a quiet machine). Duration: ``TANDEM_SOAK_SECONDS`` when set,
else 180 s. ``TANDEM_SOAK_ATTACKERS`` (default 2) is how many of each kind,
``TANDEM_SOAK_KINDS`` (comma-separated; default all) which kinds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import time
from pathlib import Path

import pytest
from tests.integration.harness import RawClient, token

from .conftest import (
    MIB,
    assert_within_twice,
    p90,
    pid_of,
    rss,
    spawn_attackers,
    start_server,
    write_big_document,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.alone]

KINDS = ("syncstep2", "syncstep1", "rejoin", "awareness", "hp-awareness", "unauth", "halfopen")
#: How far the later RSS may drift above the earlier one after warm-up.
FLAT = 16 * MIB
#: The server-wide held-bytes budget (``max_held_bytes``).
HELD = 256 * MIB


def _duration() -> float:
    configured = os.environ.get("TANDEM_SOAK_SECONDS")
    return float(configured) if configured else 180.0


def _windows(samples: list[tuple[float, int]], warmup: float, end: float) -> tuple[int, int]:
    """The median RSS of the first and of the last third of the run after ``warmup``."""
    span = (end - warmup) / 3
    first = [value for at, value in samples if warmup <= at < warmup + span]
    last = [value for at, value in samples if at >= end - span]
    return int(statistics.median(first)), int(statistics.median(last))


@pytest.mark.slow
@pytest.mark.timeout(max(180.0, float(os.environ.get("TANDEM_SOAK_SECONDS") or 0)) + 180)
async def test_every_attack_at_once_keeps_memory_flat_and_the_honest_client_fast(
    tmp_path: Path,
) -> None:
    seconds = _duration()
    per_kind = int(os.environ.get("TANDEM_SOAK_ATTACKERS", "2"))
    kinds = os.environ.get("TANDEM_SOAK_KINDS", ",".join(KINDS)).split(",")
    server = start_server(tmp_path, handshake_timeout="2")
    pid = pid_of(server)
    try:
        write_big_document(server)
        honest = await RawClient.connect(server, f"token={token('alice')}&doc=other")
        await honest.expect("snapshot")
        ids = itertools.count()

        async def ping() -> float:
            started = time.perf_counter()
            await honest.send({"type": "ping", "id": next(ids)})
            await honest.expect("pong")
            return time.perf_counter() - started

        before = [await ping() for _ in range(100)]
        baseline = rss(pid)
        attackers = spawn_attackers(
            server, seconds, ((kind, n) for kind in kinds for n in range(per_kind))
        )
        started = time.monotonic()
        samples: list[tuple[float, int]] = []
        during: list[float] = []
        next_sample = started
        warmup = max(5.0, seconds / 4)
        while time.monotonic() - started < seconds:
            rtt = await ping()
            if time.monotonic() - started >= warmup:
                during.append(rtt)
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - started, rss(pid)))
                next_sample += 0.5
            await asyncio.sleep(0.01)
        results = [
            json.loads(a.communicate(timeout=60)[0].strip().splitlines()[-1]) for a in attackers
        ]
        await honest.close()
    finally:
        server.stop()

    first, last = _windows(samples, warmup, seconds)
    peak = max(value for _, value in samples)
    p99 = statistics.quantiles(during, n=100)[-1]
    print(
        f"soak {seconds:.0f} s, {per_kind} attacker(s) of each of {len(kinds)} kinds:"
        f" RSS before {baseline / MIB:.0f} MiB, after warm-up {first / MIB:.0f} MiB,"
        f" last third {last / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB;"
        f" honest ping p50 {statistics.median(during) * 1e3:.1f} ms,"
        f" p90 {p90(during) * 1e3:.1f} ms (before {p90(before) * 1e3:.1f} ms),"
        f" p99 {p99 * 1e3:.1f} ms, {len(during)} pings"
    )
    for result in results:
        print("  ", result)
    # Every attacker got through to the server and was cut, again and again.
    for result in results:
        assert any(value > 0 for key, value in result.items() if key != "kind"), result
    assert last - first <= FLAT, f"RSS grew {(last - first) / MIB:.1f} MiB after warm-up"
    assert peak - baseline <= HELD, f"peak {(peak - baseline) / MIB:.0f} MiB over the baseline"
    assert_within_twice(before, during)
    assert p99 < 0.1, f"p99 {p99 * 1e3:.1f} ms"
