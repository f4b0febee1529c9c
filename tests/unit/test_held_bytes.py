"""A ``/collab`` socket that still accepts writes but holds what its client has not
read counts towards the server's ``max_held_bytes`` (``Connection.flush``).

Flow control pauses a transport only past its high-water mark, and a client that
reads slowly can keep it just under that while the kernel and the transport hold
hundreds of KiB for it. So after every write, a socket buffer of ``TRACKED_BYTES``
or more is reported to the server's ``Budget``, and past the server's total the
heaviest holder is shed. The wire here is the ``Wire`` protocol with a send buffer
that only grows (a client that never reads) or is drained on demand.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from tandem.auth import Principal
from tandem.metrics import Metrics
from tandem.server.admission import TRACKED_BYTES, Admission
from tandem.server.collab import Connection
from tandem.settings import Settings

pytestmark = pytest.mark.anyio

KIB = 1 << 10


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Buffer:
    """A ``Wire`` that is always writable and keeps what is written until ``drained``."""

    def __init__(self) -> None:
        self.held = 0
        self.closed: tuple[int, str] | None = None

    def writable(self) -> bool:
        return self.closed is None

    def write(self, frame: bytes) -> int:
        if self.closed is not None:
            return -1
        self.held += len(frame)
        return self.held

    def send_close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def drain(self, connection: Connection) -> None:
        raise AssertionError("the wire is writable: nothing should wait for it")

    def abort(self) -> None:
        pass

    def buffered(self) -> int:
        return self.held


def _connections(n: int, max_held_bytes: int) -> tuple[list[tuple[Connection, _Buffer]], Admission]:
    settings = Settings(
        node_id="held",
        data_dir=Path("unused"),
        max_held_bytes=max_held_bytes,
        messages_per_second=0,
    )
    metrics = Metrics("held")

    async def verify(token: str) -> Principal:
        raise AssertionError("admitted already")

    admission = Admission(settings, verify, metrics)
    tandem = SimpleNamespace(settings=settings, metrics=metrics, admission=admission)
    principal = Principal("bob", "Bob", (("*", "read"),))
    out = []
    for i in range(n):
        wire = _Buffer()
        out.append((Connection(wire, principal, f"c{i}", tandem), wire))  # type: ignore[arg-type]
    return out, admission


async def _deliver(connection: Connection, size: int) -> None:
    """Queue one message of about ``size`` bytes and let the tick's flush write it."""
    connection.send('{"type":"op","pad":"' + "x" * size + '"}')
    await asyncio.sleep(0)


async def test_a_writable_socket_holding_past_tracked_bytes_counts_towards_the_server() -> None:
    [(connection, wire)], admission = _connections(1, max_held_bytes=256 << 20)
    budget = admission.budget
    await _deliver(connection, 8 * KIB)
    assert 0 < wire.held < TRACKED_BYTES
    assert budget.total == 0  # small buffers are not tracked
    while wire.held < TRACKED_BYTES:
        await _deliver(connection, 8 * KIB)
    assert budget.total == wire.held  # reported, though the wire never stopped accepting
    await _deliver(connection, 8 * KIB)
    assert budget.total == wire.held  # and every write after that, while it holds as much
    wire.held = 0  # the client read everything
    await _deliver(connection, 8 * KIB)
    assert budget.total == 0
    assert wire.closed is None


async def test_the_server_budget_sheds_the_heaviest_writable_holder() -> None:
    pairs, admission = _connections(2, max_held_bytes=256 * KIB)
    (light, light_wire), (heavy, heavy_wire) = pairs
    for _ in range(14):  # ~112 KiB each: both tracked, under the server's 256 KiB
        await _deliver(light, 8 * KIB)
        await _deliver(heavy, 8 * KIB)
    assert admission.budget.total == light_wire.held + heavy_wire.held
    for _ in range(8):  # the heavy one goes on until the server is over
        await _deliver(heavy, 8 * KIB)
        await asyncio.sleep(0)  # a shed connection's close goes out on the next tick
        if heavy_wire.closed is not None:
            break
    assert heavy_wire.closed == (4408, "slow consumer")
    assert light_wire.closed is None
    assert admission.budget.total == light_wire.held
