"""Does a hanging hook slow other documents? Ack p99 on one document, hook hanging on another.

Two variants of ``tandem serve`` with the same load, alternated (the order
flips every round): both load ``bench.hook_isolation:BenchHooks``, whose
``on_change`` hangs (until ``hook_timeout``, then again after the backoff) for
documents under ``slow/`` when ``BENCH_HANG=1``, and returns at once otherwise.
With ``--hook authorize`` they load ``AuthorizeBenchHooks`` instead, whose
``authorize`` hangs the same way (each op on ``slow/doc`` is then refused after
``authorize_timeout``, 1 s) and allows every other op at once: every op of
both documents goes through the hook.
In both, one writer keeps editing ``slow/doc`` while another sends ``--ops``
ops to ``fast/doc``, one at a time, and times send → ack. Prints each run's
p50/p99 and the median p99 per variant, and the ratio (hanging ÷ not).

    python -m bench.hook_isolation --rounds 3 --ops 400 [--hook authorize]

Contacts only 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import orjson
import websockets

from tandem.auth_keys import load_authenticator
from tandem.authorization import AuthorizeRequest, Rejection
from tandem.hooks import Change, Hooks
from tandem.settings import Settings

SECRET = "bench-hook-isolation-secret-0123456789"


class BenchHooks(Hooks):
    async def on_change(self, changes: Sequence[Change]) -> None:
        if os.environ.get("BENCH_HANG") == "1" and changes and changes[0].doc.startswith("slow/"):
            await asyncio.sleep(3600)


class AuthorizeBenchHooks(Hooks):
    async def authorize(self, request: AuthorizeRequest) -> Rejection | None:
        if os.environ.get("BENCH_HANG") == "1" and request.doc.startswith("slow/"):
            await asyncio.sleep(3600)
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _writer(
    url: str, token: str, doc: str, ops: int | None, stop: asyncio.Event, refusals: bool = False
) -> list[float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(
        f"{url}?doc={doc}", max_size=None, additional_headers=headers
    ) as ws:
        version = None
        while version is None:
            for message in _messages(await ws.recv()):
                if message.get("type") == "error":
                    raise RuntimeError(f"the server refused: {message}")
                if message.get("type") == "snapshot":
                    version = message["v"]
        seq = 0
        while not stop.is_set() and (ops is None or seq < ops):
            seq += 1
            sent = time.perf_counter()
            await ws.send(
                orjson.dumps(
                    {"type": "op", "v": version, "seq": seq, "op": [{"insert": "x"}]}
                ).decode()
            )
            acked = False
            while not acked:
                for message in _messages(await ws.recv()):
                    if message.get("type") == "error" and refusals:
                        acked = True  # the hanging authorize hook timed out: next op
                    elif message.get("type") == "error":
                        raise RuntimeError(f"the server refused: {message}")
                    if message.get("type") == "ack":
                        version, acked = message["v"], True
            latencies.append(time.perf_counter() - sent)
    return latencies


def _messages(raw: str | bytes) -> list[dict[str, object]]:
    data = orjson.loads(raw)
    return data if isinstance(data, list) else [data]


async def _run(hang: bool, ops: int, hook: str) -> list[float]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as folder:
        env = {
            **os.environ,
            "TANDEM_JWT_SECRET": SECRET,
            "TANDEM_HOOKS": "bench.hook_isolation:"
            + ("AuthorizeBenchHooks" if hook == "authorize" else "BenchHooks"),
            "TANDEM_HOOK_TIMEOUT": "5",
            "TANDEM_MESSAGE_BURST": "100000",
            "BENCH_HANG": "1" if hang else "0",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        command = [sys.executable, "-m", "tandem", "serve", "--port", str(port)]
        command += ["--data", folder, "--log-level", "error"]
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(500):
                try:
                    if httpx.get(base + "/livez", timeout=0.5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.02)
            settings = Settings(jwt_secret=SECRET)
            token = load_authenticator(settings).issue(
                "bench", docs={"*": "write"}, now=time.time()
            )
            url = f"ws://127.0.0.1:{port}/collab"
            stop = asyncio.Event()
            slow = asyncio.ensure_future(_writer(url, token, "slow/doc", None, stop, True))
            await asyncio.sleep(1.0)  # the slow document's hook is hanging by now
            fast = await _writer(url, token, "fast/doc", ops, stop)
            stop.set()
            await slow
            return fast
        finally:
            server.terminate()
            server.wait(10)


def _p(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=400)
    parser.add_argument("--hook", choices=("on_change", "authorize"), default="on_change")
    args = parser.parse_args()
    p99: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(args.rounds):
        for hang in (False, True) if round_ % 2 == 0 else (True, False):
            latencies = asyncio.run(_run(hang, args.ops, args.hook))
            p99[hang].append(_p(latencies, 0.99))
            name = "hanging" if hang else "prompt "
            p50 = _p(latencies, 0.5)
            print(f"round {round_ + 1} {name}: p50 {p50:.2f} ms, p99 {p99[hang][-1]:.2f} ms")
    calm, hung = statistics.median(p99[False]), statistics.median(p99[True])
    print(f"median p99: prompt hook {calm:.2f} ms, hanging hook {hung:.2f} ms")
    print(f"ratio (hanging / prompt): {hung / calm:.2f}")


if __name__ == "__main__":
    main()
