"""``CollabProtocol`` reads frames exactly as websockets' parser would, however the reads split.

The protocol cuts whole data frames at the start of a read itself
(``tandem.frames``) and hands the rest to websockets' parser from a
frame boundary (which ``uvicorn_glue.at_frame_start`` finds). Here
hypothesis builds streams of masked frames — text and binary messages, whole
or fragmented, small and with 16-bit lengths, pings and pongs in between
(a masked 4-byte pong, the answer to our keepalive ping, is also cut by the
protocol itself) — cuts them into reads at random places, and checks that the
protocol hands on the same messages in the same order, answers every ping
and sees every pong's payload.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.utils import apply_mask

from tandem.server.collab_transport import CollabProtocol, Host
from tandem.server.uvicorn_glue import at_frame_start, parser_failed


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _unused(*args: Any) -> Any:
    raise AssertionError("frame reading only: no server")


def _host(max_size: int) -> Host:
    """A host for frame reading: the glue's probes of websockets' parser, and no server."""
    return Host(
        tandem=_unused,  # type: ignore[arg-type]
        path="/collab",
        connections=set(),
        tasks=set(),
        response_headers=_unused,
        max_size=max_size,
        ping_interval=None,
        ping_timeout=None,
        release=_unused,
        hand_over=_unused,
        at_frame_start=at_frame_start,
        parser_failed=parser_failed,
        unmask=apply_mask,
    )


class _Reader(CollabProtocol):
    """The protocol past its handshake, recording the messages it would handle."""

    def __init__(self, max_size: int = 1 << 20) -> None:  # frame reading only: no server
        self._host = _host(max_size)
        self.transport = _Transport()
        self.connection = None
        self._ws = ServerProtocol(state=OPEN, max_size=max_size)
        self._head = None
        self._other = None
        self._fragments = None
        self.messages: list[str | bytes] = []
        self.pongs: list[bytes] = []

    def _on_message(self, message: str | bytes) -> None:
        self.messages.append(message)

    def _on_pong(self, payload: Any) -> None:
        self.pongs.append(bytes(payload))


def _frame(
    opcode: Opcode, payload: bytes, mask: bytes = b"\x5a\xa5\x0f\xf0", fin: bool = True
) -> bytes:
    """One client frame masked with ``mask`` (websockets' own draws a random one: a
    failure found with it could not be replayed)."""
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 1 << 16:
        length = bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return bytes([(0x80 if fin else 0) | opcode]) + length + mask + apply_mask(payload, mask)


def _pongs(written: list[bytes]) -> int:
    stream = b"".join(written)
    count = 0
    while stream:
        assert stream[0] == 0x8A, stream  # unmasked pong frames only
        size = stream[1]
        count += 1
        stream = stream[2 + size :]
    return count


_masks = st.binary(min_size=4, max_size=4)
# Lengths on both sides of 126, where a frame's length takes two more bytes.
_size = st.one_of(st.integers(0, 140), st.integers(100, 400))
_text = _size.flatmap(lambda n: st.text(min_size=n // 2, max_size=n)).map(str.encode)
_binary = _size.flatmap(lambda n: st.binary(min_size=n, max_size=n))


@st.composite
def _streams(draw: st.DrawFn) -> tuple[list[bytes], list[str | bytes], int, list[bytes]]:
    """Reads of a client's byte stream, the messages it carries, its pings and its pongs."""
    frames: list[bytes] = []
    expected: list[str | bytes] = []
    pings = 0
    pongs: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        is_text = draw(st.booleans())
        payload = draw(_text if is_text else _binary)
        if draw(st.booleans()):
            frames.append(_frame(Opcode.PING, b"p", draw(_masks)))
            pings += 1
        if draw(st.booleans()):  # mostly 4 bytes, the size of our pings' payloads
            pong = draw(st.one_of(st.binary(min_size=4, max_size=4), st.binary(max_size=8)))
            frames.append(_frame(Opcode.PONG, pong, draw(_masks)))
            pongs.append(pong)
        parts = draw(st.sampled_from([1, 1, 2, 3]))
        cuts = sorted(
            draw(st.lists(st.integers(0, len(payload)), min_size=parts - 1, max_size=parts - 1))
        )
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            opcode = (Opcode.TEXT if is_text else Opcode.BINARY) if i == 0 else Opcode.CONT
            frames.append(_frame(opcode, piece, draw(_masks), fin=i == len(pieces) - 1))
        expected.append(payload.decode() if is_text else payload)
    stream = b"".join(frames)
    # Random places, and places next to the ends of frames, where an off-by-one shows.
    ends = [sum(map(len, frames[: i + 1])) for i in range(len(frames))]
    near_ends = st.sampled_from(ends).flatmap(lambda end: st.sampled_from([end - 1, end + 1]))
    places = st.one_of(st.integers(1, max(1, len(stream) - 1)), near_ends)
    cuts = sorted({c for c in draw(st.lists(places, max_size=6)) if 0 < c < len(stream)})
    reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    return [read for read in reads if read], expected, pings, pongs


def _split(
    payload: bytes, *at: int, opcode: Opcode = Opcode.TEXT, mask: bytes = b"\x5a\xa5\x0f\xf0"
) -> tuple[list[bytes], list[str | bytes], int, list[bytes]]:
    """One frame of ``payload`` cut at ``at`` (negative: from its end)."""
    frame = _frame(opcode, payload, mask)
    cuts = sorted(a % len(frame) for a in at)
    reads = [frame[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)], strict=True)]
    if opcode is Opcode.PONG:
        return reads, [], 0, [payload]
    return reads, [payload.decode() if opcode is Opcode.TEXT else payload], 0, []


@given(_streams())
@example(_split(b"short", -1))  # a read ending one byte before its frame does
@example(_split(b"x" * 200, -1))
@example(_split(b"x" * 200, 7))  # inside a 16-bit length
@example(_split(b"x" * 200, 3, 8))
@example(_split(b"short", 2))
# The parser took header and mask and waits for the payload, its buffer empty: the
# payload is not a frame, even when it looks like one (here, unmasked by a zero mask).
@example(_split(_frame(Opcode.TEXT, b"inner"), 6, opcode=Opcode.BINARY, mask=bytes(4)))
@example(_split(_frame(Opcode.TEXT, b"y" * 130), 8, opcode=Opcode.BINARY, mask=bytes(4)))
@example(_split(b"pong", 9, opcode=Opcode.PONG))  # a 4-byte pong one byte short
@example(_split(b"pong", 1, opcode=Opcode.PONG))
def test_messages_come_out_whole_and_in_order_however_the_reads_split(
    stream: tuple[list[bytes], list[str | bytes], int, list[bytes]],
) -> None:
    reads, expected, pings, pongs = stream
    reader = _Reader()
    for read in reads:
        reader.data_received(read)
    assert reader.messages == expected
    assert _pongs(reader.transport.written) == pings
    assert reader.pongs == pongs
    assert not reader.transport.closed


def test_a_whole_frame_inside_a_fragmented_message_fails_the_socket() -> None:
    reader = _Reader()
    reader.data_received(Frame(Opcode.TEXT, b"par", fin=False).serialize(mask=True))
    reader.data_received(Frame(Opcode.TEXT, b"whole").serialize(mask=True))
    assert reader.messages == []
    assert reader.transport.closed
    close = reader.transport.written[-1]
    assert close[0] == 0x88 and int.from_bytes(close[2:4], "big") == 1002


@pytest.mark.parametrize("size", [100, 200, 70_000])
def test_a_frame_over_the_size_limit_is_refused_with_1009(size: int) -> None:
    reader = _Reader(max_size=64)
    reader.data_received(Frame(Opcode.TEXT, b"x" * size).serialize(mask=True))
    assert reader.messages == []
    assert reader.transport.closed
    close = reader.transport.written[-1]
    assert close[0] == 0x88 and int.from_bytes(close[2:4], "big") == 1009
