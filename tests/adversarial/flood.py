"""An attacker in its own process (``python -m tests.adversarial.flood URL TOKEN SECONDS``).

Sends a read-only Hocuspocus reader's SyncStep2 for document ``big`` as fast as the
server takes them, reconnecting when it is closed (rate limit), for SECONDS; prints
how many it sent. In its own process so the attacker does not slow the honest
client's measurement in the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import websockets
from tests.integration.hpclient import auth_frame

from tandem.merge import hocuspocus as hp
from tandem.merge import yproto

#: An update with no structs and one delete (of the server's first item): it adds
#: nothing, but only the delete set can tell.
DELETES_ONLY = bytes([0, 1, 2, 1, 0, 1])


async def flood(url: str, token: str, seconds: float) -> int:
    sent = 0
    frame = hp.wrap("big", yproto.sync_step2(DELETES_ONLY))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(websockets.ConnectionClosed, OSError):
            async with websockets.connect(url, max_size=None) as ws:
                await ws.send(auth_frame("big", token))
                while time.monotonic() < deadline:
                    await ws.send(frame)
                    sent += 1
    return sent


if __name__ == "__main__":
    print(asyncio.run(flood(sys.argv[1], sys.argv[2], float(sys.argv[3]))))
