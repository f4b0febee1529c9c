"""CPU: a read-only user must not stall other documents (issue 27, item 3).

Pre-fix, each 28-byte SyncStep2 a Hocuspocus reader sent rebuilt the whole
document to check that it adds nothing (85 ms on an 80,000-character formatted
document); a hundred of them froze a client of another document for 7 s. Now
the check costs the message's size, and /yjs and /hocuspocus have /collab's
message rate limit. An honest /collab client of another document measures
its ping round trip before and during the attack; its 90th percentile must
stay within 2x (with a 5 ms floor: below that, the machine's noise decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import websockets
from tests.integration.harness import ServerProcess, token
from websockets.asyncio.client import ClientConnection

from tandem.merge import yproto

from .conftest import assert_within_twice, honest_client, latencies, p90, write_big_document

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.alone]

ROOT = Path(__file__).resolve().parents[2]


def _formatted_document(server: ServerProcess, doc: str, chars: int) -> None:
    op = [
        {"insert": "word " * 8, **({"attributes": {"bold": True}} if i % 2 else {})}
        for i in range(chars // 40)
    ]
    answer = httpx.post(
        f"{server.url}/api/docs/{doc}/ops",
        json={"op": op},
        headers={"Authorization": f"Bearer {token('writer')}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text


async def test_syncstep2_spam_does_not_stall_another_document(
    server: ServerProcess, slow: bool
) -> None:
    _formatted_document(server, "big", 80_000)
    honest, ping = await honest_client(server, "other")

    before = await latencies(ping, 2.0)
    seconds = 120.0 if slow else 4.0
    attackers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.adversarial.flood",
                f"{server.ws_url}/hocuspocus",
                token("mallory", {"big": "read"}),
                str(seconds + 1),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(3 if slow else 1)
    ]
    await asyncio.sleep(1.0)  # the attackers are connected and sending
    during = await latencies(ping, seconds - 1)
    sent = sum(int(attacker.communicate(timeout=60)[0]) for attacker in attackers)
    await honest.close()
    assert sent > 100
    assert_within_twice(before, during)
    if slow:
        assert statistics.quantiles(during, n=100)[-1] < 0.1  # p99 under 100 ms


async def test_repeated_syncstep1_is_slowed_to_its_cost(server: ServerProcess) -> None:
    """A SyncStep1 costs its answer's size (one message of the rate limit per 16 KiB),
    and repeating it is answered from the replica's cache: a reader that asks for a
    400 KB document back to back, and reads every answer, gets at most
    ``(burst + rate × t) / 25`` of them, slowed (not closed); an honest client of
    another document stays within 2x. Pre-fix: 200 answers a second, 10 ms each."""
    write_big_document(server)
    honest, ping = await honest_client(server, "other")

    before = await latencies(ping, 1.5)
    url = f"{server.ws_url}/yjs/big?token={token('mallory', {'big': 'read'})}"
    seconds, answers, size = 3.0, 0, 0

    def answered(frame: str | bytes) -> int:
        nonlocal answers, size
        assert isinstance(frame, bytes)
        message = yproto.parse(frame)
        if message.kind == yproto.SYNC and message.sub == yproto.SYNC_STEP2:
            answers += 1
            size = len(message.payload)
            return 1
        return 0

    async with websockets.connect(url, max_size=None) as ws:
        # 32 requests in flight, one more for each answer: as fast as it is answered.
        request = yproto.sync_step1(b"\x00")
        during = await _ask_as_fast_as_answered(ws, request, 32, answered, ping, seconds)
        assert ws.close_code is None  # slowed, not refused
    await honest.close()
    _assert_slowed_to_cost("SyncStep1", seconds, answers, size, before, during)


async def test_repeated_rejoin_is_slowed_to_its_cost(server: ServerProcess) -> None:
    """A ``/collab`` join costs its reply's size (one message of the rate limit per
    16 KiB), and the snapshot is encoded once per version: a reader that rejoins a
    400 KB document back to back, and reads every snapshot, gets at most
    ``(burst + rate × t) / 25`` of them, slowed (not closed, nothing refused); an
    honest client of another document stays within 2x. Pre-fix: every join was
    answered (burst + rate × t of them), each one encoding the whole document."""
    write_big_document(server)
    honest, ping = await honest_client(server, "other")

    before = await latencies(ping, 1.5)
    url = f"{server.ws_url}/collab?doc=big&token={token('mallory', {'big': 'read'})}"
    join = '{"type":"join","doc":"big"}'
    seconds, answers, size, refused = 3.0, 0, 0, 0

    def answered(frame: str | bytes) -> int:
        nonlocal answers, size, refused
        assert isinstance(frame, str)
        refused += frame.count('"type":"error"')
        snapshots = frame.count('{"type":"snapshot"')  # not parsed: 400 KB each
        if snapshots:
            answers += snapshots
            size = len(frame) // snapshots
        return snapshots

    async with websockets.connect(url, max_size=None) as ws:
        # 8 joins in flight, one more for each snapshot: as fast as it is answered
        # (not more: 3.2 MB unread is within its budget, it is not a slow consumer).
        during = await _ask_as_fast_as_answered(ws, join, 8, answered, ping, seconds)
        assert ws.close_code is None  # slowed, not refused
    await honest.close()
    assert refused == 0  # waited for, not dropped as over the rate
    _assert_slowed_to_cost("join", seconds, answers, size, before, during)


async def _ask_as_fast_as_answered(
    ws: ClientConnection,
    request: str | bytes,
    in_flight: int,
    answered: Callable[[str | bytes], int],
    ping: Callable[[], Awaitable[None]],
    seconds: float,
) -> list[float]:
    """Keep ``in_flight`` ``request``s outstanding for ``seconds``, sending one more for
    each answer (``answered(frame)`` counts a frame's); the honest client's ping
    latencies meanwhile."""
    for _ in range(in_flight):
        await ws.send(request)
    during = asyncio.create_task(latencies(ping, seconds))
    deadline = asyncio.get_running_loop().time() + seconds
    with contextlib.suppress(TimeoutError):
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            frame = await asyncio.wait_for(ws.recv(), left)
            for _ in range(answered(frame)):
                await ws.send(request)
    return await during


def _assert_slowed_to_cost(
    what: str, seconds: float, answers: int, size: int, before: list[float], during: list[float]
) -> None:
    """``answers`` replies of ``size`` bytes in ``seconds``: at most what the rate bucket
    (burst 400, 200 a second) pays for at one message per 16 KiB; the honest client
    within 2x."""
    cost = size / (16 << 10)
    bound = (400 + 200 * seconds) / cost + 1
    print(
        f"{what} x as many as taken, {seconds:.0f} s: {answers} answers of {size} bytes"
        f" (bound {bound:.0f}); ping p90 {p90(during) * 1e3:.1f} ms"
        f" (before {p90(before) * 1e3:.1f} ms)"
    )
    assert size > 350_000
    assert answers <= bound
    assert_within_twice(before, during)
