"""Input is read only as fast as it is handled (issue 27: the receive queue of ``/yjs``
and ``/hocuspocus``).

uvicorn's sans-I/O WebSocket protocol parses everything one read brings (up to
256 KiB: tens of thousands of 6-byte frames) into its receive queue before it
pauses reading, however busy the handler is. ``tandem serve`` hands it a read
8 KiB at a time, only while its queue is empty (``uvicorn_glue.MeteredInput``),
so a busy connection holds one slice of its client's input, not one read's worth
of parsed messages. Here 20 Hocuspocus sockets authenticate for a large
document whose Yjs replica is still being built (each handler waits on it),
and each pushes 1 MB of empty frames meanwhile; the server's resident memory
must grow by less than ``GROWTH``. Without the gate it grew by 38.6 MiB, with it
by 6.7 MiB.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from tests.integration.harness import token
from tests.integration.hpclient import auth_frame

from .conftest import MIB, Mute, peak_rss, pid_of, rss, start_server, write_big_document

pytestmark = [pytest.mark.integration, pytest.mark.alone]

SOCKETS = 20
#: What 20 busy sockets' input may make the server grow by (measured: 6.7 MiB;
#: 38.6 MiB without the gate).
GROWTH = 20 * MIB


def _empty_frames(count: int) -> bytes:
    """``count`` masked, empty binary frames (6 bytes each)."""
    return (b"\x82\x80" + os.urandom(4)) * count


def test_a_busy_connection_does_not_parse_its_whole_input_ahead(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        write_big_document(server)
        pid = pid_of(server)
        auth = auth_frame("big", token("mallory", {"big": "read"}))
        mutes = [Mute(server.port, "/hocuspocus") for _ in range(SOCKETS)]
        before = rss(pid)
        flood = _empty_frames((1 << 20) // 6)
        for mute in mutes:
            mute.send(auth, text=False)
        for mute in mutes:
            mute.sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                mute.sock.send(flood)  # as much as the kernel takes
        grown = peak_rss(pid, 3.0) - before
        print(f"{SOCKETS} busy sockets, 1 MB of empty frames each: grew {grown / MIB:.1f} MiB")
        assert grown < GROWTH, f"grew {grown / MIB:.0f} MiB"
        for mute in mutes:
            mute.close()
    finally:
        server.stop()
