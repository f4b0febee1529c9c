"""What a ``/collab`` connection writes, and when (``Connection.send``, ``_Flusher``).

The first message for a client in an event-loop tick is written at once (a
broadcast's first readers should not wait for its fan-out to reach the last
member); what else the tick makes for that client goes out once the tick's work
is done, as one frame. Order is never changed, and a broadcast is framed once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import orjson

from tandem.auth import Principal
from tandem.metrics import Metrics
from tandem.server.admission import Admission
from tandem.server.collab import Connection
from tandem.settings import Settings


class _Recorder:
    """A ``Wire`` that keeps every frame written to it (writable unless told not to be)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.open = True
        self.waiting: Connection | None = None

    def writable(self) -> bool:
        return self.open

    def write(self, frame: bytes) -> int:
        if not self.open:
            return -1
        self.frames.append(frame)
        return 0

    def send_close(self, code: int, reason: str) -> None:
        pass

    def drain(self, connection: Connection) -> None:
        self.waiting = connection

    def abort(self) -> None:
        pass

    def buffered(self) -> int:
        return 0

    def messages(self) -> list[list[str]]:
        """Each frame's messages (a batch is a JSON array), by their ``n``."""
        out = []
        for frame in self.frames:
            assert frame[0] == 0x81  # a final text frame
            decoded = orjson.loads(frame[2:] if frame[1] < 126 else frame[4:])
            out.append([m["n"] for m in (decoded if isinstance(decoded, list) else [decoded])])
        return out


def _connections(n: int) -> list[tuple[Connection, _Recorder]]:
    settings = Settings(node_id="flush", data_dir=Path("unused"), messages_per_second=0)
    metrics = Metrics("flush")

    async def verify(token: str) -> Principal:
        raise AssertionError("admitted already")

    tandem = SimpleNamespace(
        settings=settings, metrics=metrics, admission=Admission(settings, verify, metrics)
    )
    principal = Principal("bob", "Bob", (("*", "read"),))
    out = []
    for i in range(n):
        wire = _Recorder()
        out.append((Connection(wire, principal, f"c{i}", tandem), wire))  # type: ignore[arg-type]
    return out


def message(n: str) -> str:
    return orjson.dumps({"type": "op", "n": n}).decode()


def test_the_first_message_of_a_tick_goes_at_once_the_rest_as_one_frame_after() -> None:
    async def scenario() -> None:
        (a, wire_a), (b, wire_b) = _connections(2)
        first = message("1")
        a.send(first)
        b.send(first)
        assert wire_a.messages() == [["1"]] and wire_b.messages() == [["1"]]  # at once
        assert wire_a.frames[0] is wire_b.frames[0]  # a broadcast is framed once
        a.send(message("2"))
        a.send(message("3"))
        assert wire_a.messages() == [["1"]]  # queued behind the one written
        await asyncio.sleep(0)
        assert wire_a.messages() == [["1"], ["2", "3"]]
        assert wire_b.messages() == [["1"]]
        a.send(message("4"))  # a new tick: at once again
        assert wire_a.messages() == [["1"], ["2", "3"], ["4"]]

    asyncio.run(scenario())


def test_nothing_overtakes_what_waits_for_a_socket_that_was_not_writable() -> None:
    async def scenario() -> None:
        [(a, wire)] = _connections(1)
        wire.open = False
        a.send(message("1"))
        await asyncio.sleep(0)
        assert wire.frames == [] and wire.waiting is a
        wire.open = True
        a.send(message("2"))  # a new tick, but "1" still waits: queued behind it
        assert wire.frames == []
        a.wake()
        await asyncio.sleep(0)
        assert wire.messages() == [["1", "2"]]

    asyncio.run(scenario())


def test_a_loop_that_closed_before_its_flush_does_not_stop_the_next_ones() -> None:
    (a, _), (b, wire_b) = _connections(2)

    async def send(connection: Connection, *numbers: str) -> None:
        for n in numbers:
            connection.send(message(n))

    first = asyncio.new_event_loop()
    first.run_until_complete(send(a, "1", "2"))  # stops before the tick's flush runs
    first.close()

    async def later() -> None:
        await send(b, "x", "y")
        await asyncio.sleep(0)

    asyncio.run(later())
    assert wire_b.messages() == [["x"], ["y"]]
