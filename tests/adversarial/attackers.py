"""Attackers in their own processes.

``python -m tests.adversarial.attackers KIND PORT SECONDS [N]``.

Each kind repeats one attack of issue 27 against ``127.0.0.1:PORT`` for
SECONDS, reconnecting whenever the server cuts it (which is what the server is
supposed to do), and prints one JSON line of counts. In their own processes so
the attackers neither share the test's event loop nor slow the honest
client's measurement by anything but the load they put on the server (they
run at the lowest CPU priority, ``nice 19``). N (default 1)
is a number the attacker puts in its user name, so several attackers of one
kind do not share the per-user connection cap.

Kinds (document ``big`` is large, ``aw`` is any document):

* ``syncstep2`` — a read-only Hocuspocus reader's delete-only SyncStep2s (CPU);
* ``syncstep1`` — a ``/yjs`` reader's SyncStep1s on ``big``, never reading (memory);
* ``rejoin`` — a ``/collab`` reader rejoining ``big``, never reading (memory);
* ``awareness`` — a ``/yjs`` reader's awareness frames as fast as it can, each with
  many entries under made-up client ids and large states (memory, relay, CPU);
* ``hp-awareness`` — the same over ``/hocuspocus``;
* ``awareness-rate``, ``hp-awareness-rate`` — one small awareness entry under the
  attacker's own client id per frame, thousands of frames a second;
* ``unauth`` — ``/hocuspocus`` frames under fresh 1 KB routing keys, never authenticating;
* ``halfopen`` — TCP connections that send half an HTTP request and wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable

import websockets
from tests.integration.harness import token
from tests.integration.hpclient import auth_frame

from tandem.merge import hocuspocus as hp
from tandem.merge import yproto

from .conftest import Mute

#: An update with no structs and one delete: it adds nothing, but only the delete set can tell.
DELETES_ONLY = bytes([0, 1, 2, 1, 0, 1])


def reader(doc: str, who: str) -> str:
    return token(who, {doc: "read"})


def awareness_frame(entries: int, state_bytes: int, seed: int) -> bytes:
    """One awareness payload of ``entries`` made-up client ids, each state ``state_bytes``."""
    blob = "x" * state_bytes
    return yproto.awareness_message(
        yproto.encode_awareness(
            [
                yproto.AwarenessEntry(seed * 100_000 + i, 1, {"user": {"name": blob}})
                for i in range(entries)
            ]
        )
    )


async def _ws_flood(
    url: str, first: list[bytes], frame: Callable[[int], bytes], seconds: float
) -> dict[str, int]:
    """Connect, send ``first``, then ``frame(i)`` back to back; reconnect when cut."""
    sent = connections = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(websockets.ConnectionClosed, OSError, websockets.InvalidStatus):
            async with websockets.connect(url, max_size=None, open_timeout=10) as ws:
                connections += 1
                for message in first:
                    await ws.send(message)
                while time.monotonic() < deadline:
                    await ws.send(frame(sent))
                    sent += 1
                    if sent % 50 == 0:
                        await asyncio.sleep(0)  # let the library read what the server sent
        await asyncio.sleep(0.05)
    return {"sent": sent, "connections": connections}


def _mute_rounds(
    port: int, path: str, headers: dict[str, str], frames: list[bytes], text: bool, seconds: float
) -> dict[str, int]:
    """Open a never-reading socket, send ``frames``, wait to be cut (``Mute.cut``, which
    reads nothing); again until ``seconds``."""
    rounds = cut = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            mute = Mute(port, path, headers=headers)
        except OSError:
            time.sleep(0.2)
            continue
        rounds += 1
        with contextlib.suppress(OSError):
            for frame in frames:
                mute.send(frame, text=text)
        if mute.cut(within=max(0.5, min(15.0, deadline - time.monotonic()))):
            cut += 1
        mute.close()
    return {"rounds": rounds, "cut": cut}


def _halfopen(port: int, seconds: float, at_once: int = 20) -> dict[str, int]:
    opened = cut = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        held = []
        for _ in range(at_once):
            with contextlib.suppress(OSError):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"GET /collab HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                held.append(sock)
                opened += 1
        for sock in held:
            sock.settimeout(max(0.5, min(15.0, deadline - time.monotonic())))
            with contextlib.suppress(OSError):
                if sock.recv(1024) == b"":
                    cut += 1
            sock.close()
    return {"opened": opened, "cut": cut}


def run(kind: str, port: int, seconds: float, n: int) -> dict[str, int]:
    ws = f"ws://127.0.0.1:{port}"
    who = f"mallory-{kind}-{n}"
    if kind == "syncstep2":
        big = hp.wrap("big", yproto.sync_step2(DELETES_ONLY))
        return asyncio.run(
            _ws_flood(
                f"{ws}/hocuspocus", [auth_frame("big", reader("big", who))], lambda _: big, seconds
            )
        )
    if kind == "awareness":
        frames = [awareness_frame(2_000, 64, n * 10 + i) for i in range(4)]
        url = f"{ws}/yjs/aw?token={reader('aw', who)}"
        return asyncio.run(_ws_flood(url, [], lambda i: frames[i % 4], seconds))
    if kind == "hp-awareness":
        frames = [hp.wrap("aw", awareness_frame(2_000, 64, n * 10 + i)) for i in range(4)]
        first = [auth_frame("aw", reader("aw", who))]
        return asyncio.run(_ws_flood(f"{ws}/hocuspocus", first, lambda i: frames[i % 4], seconds))
    if kind in ("awareness-rate", "hp-awareness-rate"):
        url = f"{ws}/yjs/aw?token={reader('aw', who)}"
        first = []
        wrap = lambda body: body  # noqa: E731
        if kind.startswith("hp-"):
            url, first = f"{ws}/hocuspocus", [auth_frame("aw", reader("aw", who))]
            wrap = lambda body: hp.wrap("aw", body)  # noqa: E731
        own = 7_000_000 + n

        def tick(i: int) -> bytes:
            entry = yproto.AwarenessEntry(own, i + 1, {"user": {"name": f"m{i}"}})
            return wrap(yproto.awareness_message(yproto.encode_awareness([entry])))

        return asyncio.run(_ws_flood(url, first, tick, seconds))
    bearer = {"Authorization": f"Bearer {reader('big', who)}"}
    if kind == "syncstep1":
        frames = [yproto.sync_step1(b"\x00")] * 300
        return _mute_rounds(port, "/yjs/big", bearer, frames, False, seconds)
    if kind == "rejoin":
        frames = [b'{"type":"join","doc":"big"}'] * 300
        return _mute_rounds(port, "/collab?doc=big", bearer, frames, True, seconds)
    if kind == "unauth":
        body = yproto.sync_step1(b"\x00")
        salt = os.urandom(4).hex()
        frames = [hp.wrap(f"{salt}{i:06d}" + "k" * 1000, body) for i in range(2_000)]
        return _mute_rounds(port, "/hocuspocus", {}, frames, False, seconds)
    if kind == "halfopen":
        return _halfopen(port, seconds)
    raise SystemExit(f"unknown attack {kind!r}")


if __name__ == "__main__":
    # A real attacker has its own machine: at the lowest priority here, its own CPU
    # use takes as little as possible from the server and the honest client, so
    # what they measure is the load the attack puts on the server.
    os.nice(19)
    kind, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    print(json.dumps({"kind": kind, **run(kind, port, seconds, n)}), flush=True)
