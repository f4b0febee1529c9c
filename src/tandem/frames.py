"""WebSocket client frames read on plain bytes: the fast path of ``/collab``'s reader.

The usual read from a ``/collab`` client is one message in one masked frame,
and websockets' parser (generators over a stream reader, a ``Frame`` object)
costs about 25 µs of Python for it (``bench.op_path``). ``next_frame`` finds
such a frame in a read; ``tandem.server.collab_transport`` unmasks and
handles it, and leaves every other frame to websockets' parser from a frame
boundary: control frames, fragments, a frame split across reads, RSV bits, no
mask, a 64-bit length, one over the size limit (RFC 6455 section 5.2).
``tests/property/test_frames.py`` checks the two readers agree.

Pure: bytes in, offsets out. Must not import asyncio or websockets.
"""

from __future__ import annotations

__all__ = ["next_frame"]

_TEXT = 0x81  # FIN set, opcode 1
_BINARY = 0x82  # FIN set, opcode 2


def next_frame(data: bytes, at: int, limit: int | None) -> tuple[bool, int, int] | None:
    """The whole, unfragmented, masked data frame at ``data[at:]``: (text?, start, end).

    Its payload is ``data[start:end]``, masked with the four bytes before it. None
    when the bytes at ``at`` are not such a frame, or not all of it, or its payload
    is over ``limit`` bytes (None: no limit).
    """
    end = len(data)
    if end - at < 6:
        return None
    first, second = data[at], data[at + 1]
    if (first != _TEXT and first != _BINARY) or second < 0x80:  # FIN and mask set
        return None
    size = second & 0x7F
    start = at + 6
    if size == 126:  # a 16-bit length, in bytes 2 and 3
        size = (data[at + 2] << 8) | data[at + 3]
        start = at + 8
    elif size == 127:
        return None
    if start + size > end or (limit is not None and size > limit):
        return None
    return first == _TEXT, start, start + size
