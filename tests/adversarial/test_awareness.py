"""Awareness floods on ``/yjs`` and ``/hocuspocus`` (issue 27, item 5).

Pre-fix, a read-only client's tens of thousands of awareness entries grew the
server by ~140 MiB and every joiner got a 6.7 MB frame, and thousands of
frames a second were relayed one for one. Now each connection may hold 4
client ids of at most 2 KiB each, at most one frame per ``presence_interval``
(50 ms; a burst of two seconds' worth) is decoded at all, a frame with more
entries than that is dropped unread, and a connection past the message rate
is closed with 4429. Two attackers of each kind flood document ``aw`` (one
with 2,000-entry frames under made-up ids, one with thousands of small frames
a second under its own id) while:

* a Yjs reader of ``aw`` counts what is relayed to it: at most each attacker
  connection's awareness burst plus its rate, far fewer than were sent;
* an honest ``/collab`` client of ``aw`` (it gets awareness as presence) measures
  its ping: its 90th percentile stays within 2x (5 ms floor);
* the server's resident memory grows by less than ``GROWTH``;
* a client joining during the flood gets an awareness frame of at most a few KB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
import websockets
from tests.integration.harness import token

from tandem.merge import yproto

from .conftest import (
    MIB,
    assert_within_twice,
    honest_client,
    latencies,
    p90,
    pid_of,
    rss,
    spawn_attackers,
    start_server,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.alone]

#: What the server may grow by during the flood (pre-fix: ~140 MiB).
GROWTH = 24 * MIB
#: Awareness frames one connection may have relayed: its burst (2 s at 20/s, plus one).
BURST = 41
RATE = 20


async def _watch(url: str, counts: dict[str, int]) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send(yproto.sync_step1(b"\x00"))
            async for frame in ws:
                assert isinstance(frame, bytes)
                if yproto.parse(frame).kind == yproto.AWARENESS:
                    counts["frames"] += 1
                    counts["bytes"] += len(frame)


async def _joiner_awareness(url: str) -> int:
    """The size of the awareness a new client gets when it joins (0: none)."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(yproto.query_awareness())
        with contextlib.suppress(TimeoutError):
            while True:
                frame = await asyncio.wait_for(ws.recv(), 2)
                assert isinstance(frame, bytes)
                if yproto.parse(frame).kind == yproto.AWARENESS:
                    return len(frame)
    return 0


@pytest.mark.parametrize("endpoint", ["yjs", "hocuspocus"])
async def test_an_awareness_flood_is_dropped_unread_and_relayed_boundedly(
    tmp_path: Path, endpoint: str, slow: bool
) -> None:
    server = start_server(tmp_path)
    seconds = 60.0 if slow else 4.0
    prefix = "hp-" if endpoint == "hocuspocus" else ""
    try:
        pid = pid_of(server)
        watch_url = f"{server.ws_url}/yjs/aw?token={token('walt', {'aw': 'read'})}"
        counts = {"frames": 0, "bytes": 0}
        watcher = asyncio.create_task(_watch(watch_url, counts))
        honest, ping = await honest_client(server, "aw")

        before = await latencies(ping, 1.5)
        baseline = rss(pid)
        attackers = spawn_attackers(
            server,
            seconds,
            (
                (kind, n)
                for kind in (f"{prefix}awareness", f"{prefix}awareness-rate")
                for n in range(2)
            ),
        )
        await asyncio.sleep(0.5)

        async def join_midway() -> int:
            await asyncio.sleep(seconds / 2)
            return await _joiner_awareness(watch_url)

        joiner = asyncio.create_task(join_midway())
        during = await latencies(ping, seconds - 0.5)
        peak = rss(pid)
        joined = await joiner
        results = [json.loads(a.communicate(timeout=60)[0]) for a in attackers]
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await honest.close()
    finally:
        server.stop()
    sent = sum(r["sent"] for r in results)
    connections = sum(r["connections"] for r in results)
    bound = connections * BURST + len(results) * RATE * seconds
    print(
        f"{endpoint} awareness flood {seconds:.0f} s: {sent} frames sent over"
        f" {connections} connections, {counts['frames']} relayed ({counts['bytes']} bytes,"
        f" bound {bound:.0f}); RSS +{(peak - baseline) / MIB:.1f} MiB; joiner's awareness"
        f" {joined} bytes; ping p90 {p90(during) * 1e3:.1f} ms (before {p90(before) * 1e3:.1f})"
    )
    assert sent > 10 * max(counts["frames"], 1), "frames were relayed one for one"
    assert counts["frames"] <= bound
    assert peak - baseline < GROWTH, f"grew {(peak - baseline) / MIB:.0f} MiB"
    # Four attackers, at most four ids each, 2 KiB a state at most: not 6.7 MB.
    assert joined < 4 * 4 * 2048
    assert_within_twice(before, during)
