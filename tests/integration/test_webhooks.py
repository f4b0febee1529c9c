"""Webhooks end to end: a real ``tandem serve`` POSTs to a real local HTTP receiver.

The receiver checks every signature the way docs/extending.md tells a user to
(its own HMAC code, not Tandem's), answers 500 when told to, and records what
it accepted. Properties checked: debounced (a burst of ops is one call),
signed, retried after 500s with the same idempotency key, and after a SIGKILL
in the middle of the retries; the accepted version ranges of a document cover
every committed version exactly once, beyond repeats of one idempotency key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import RawClient, ServerProcess, token, until

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SECRET = "webhook-test-secret"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


class Receiver:
    """A webhook endpoint on 127.0.0.1 that verifies signatures and can be told to fail."""

    def __init__(self) -> None:
        self.failing = False
        self.accepted: list[dict[str, Any]] = []
        self.attempts: list[tuple[str, str, int]] = []  # (id, doc, attempt header)
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                timestamp = self.headers["Tandem-Webhook-Timestamp"]
                expected = hmac.new(
                    SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
                ).hexdigest()
                signed = (
                    hmac.compare_digest("v1=" + expected, self.headers["Tandem-Webhook-Signature"])
                    and abs(time.time() - int(timestamp)) < 300
                )
                data = json.loads(body)
                with receiver.lock:
                    receiver.attempts.append(
                        (data["id"], data["doc"], int(self.headers["Tandem-Webhook-Attempt"]))
                    )
                    if not signed:
                        receiver.bad_signatures += 1
                    status = 500 if receiver.failing or not signed else 204
                    if status == 204:
                        assert self.headers["Idempotency-Key"] == data["id"]
                        receiver.accepted.append(data)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def ranges(self, doc: str) -> list[tuple[int, int]]:
        """Accepted (from, to] ranges of ``doc``, one per idempotency key, in order."""
        with self.lock:
            seen: dict[str, tuple[int, int]] = {}
            for data in self.accepted:
                if data["doc"] == doc:
                    seen.setdefault(data["id"], (data["from_version"], data["to_version"]))
            return sorted(seen.values())

    def covered(self, doc: str) -> int:
        """The highest version the accepted ranges of ``doc`` cover without a gap from 0."""
        reached = 0
        for start, end in self.ranges(doc):
            if start != reached:
                break
            reached = end
        return reached

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    try:
        yield hook
    finally:
        hook.close()


def webhook_server(folder: Path, receiver: Receiver) -> ServerProcess:
    return ServerProcess(
        folder / "data",
        env={
            "TANDEM_WEBHOOKS": f"notes/* {receiver.url}",
            "TANDEM_WEBHOOK_SECRET": SECRET,
            "TANDEM_WEBHOOK_DEBOUNCE": "0.3",
            "TANDEM_WEBHOOK_MAX_DEBOUNCE": "2",
            "TANDEM_WEBHOOK_RETRY_BASE": "0.3",
            "TANDEM_WEBHOOK_RETRY_MAX": "1",
            # A POST cut short by the SIGKILL is leased for timeout + 5 s: keep that short.
            "TANDEM_WEBHOOK_TIMEOUT": "2",
        },
    )


async def type_ops(server: ServerProcess, doc: str, count: int, client: str) -> int:
    """Commit ``count`` one-character ops to ``doc``; return the head version."""
    writer = await RawClient.connect(server, f"token={token('ada')}&doc={doc}&client={client}")
    snapshot = await writer.expect("snapshot")
    version = snapshot["v"]
    for seq in range(1, count + 1):
        await writer.send({"type": "op", "v": version, "seq": seq, "op": [{"insert": "x"}]})
        version = (await writer.expect("ack"))["v"]
    await writer.close()
    return int(version)


async def test_debounced_signed_and_retried_after_500(tmp_path: Path, receiver: Receiver) -> None:
    server = webhook_server(tmp_path, receiver)
    server.start()
    try:
        receiver.failing = True
        head = await type_ops(server, "notes/a", 5, "w1")
        await type_ops(server, "other/b", 2, "w2")  # not subscribed
        await until(lambda: len(receiver.attempts) >= 2, timeout=10)
        receiver.failing = False
        await until(lambda: receiver.covered("notes/a") == head, timeout=10)
        assert receiver.bad_signatures == 0
        [delivery] = receiver.accepted  # the burst of five ops is one call
        assert (delivery["from_version"], delivery["to_version"]) == (0, 5)
        assert [op["v"] for op in delivery["ops"]] == [1, 2, 3, 4, 5]
        ids = {attempt[0] for attempt in receiver.attempts}
        assert ids == {delivery["id"]}  # every retry carried the same idempotency key
        assert [a[2] for a in receiver.attempts] == list(range(1, len(receiver.attempts) + 1))
        assert all(doc == "notes/a" for _, doc, _ in receiver.attempts)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(server.url + "/metrics")).text
        assert "tandem_webhook_deliveries_total{node=" in metrics
        retried = [
            line
            for line in metrics.splitlines()
            if line.startswith("tandem_webhook_deliveries_total") and 'outcome="retried"' in line
        ]
        assert retried and float(retried[0].split()[-1]) >= 2
    finally:
        server.stop()


async def test_sigkill_in_the_middle_of_retries_loses_and_duplicates_nothing(
    tmp_path: Path, receiver: Receiver
) -> None:
    server = webhook_server(tmp_path, receiver)
    server.start()
    try:
        receiver.failing = True
        head = await type_ops(server, "notes/k", 4, "k1")
        await until(lambda: len(receiver.attempts) >= 2, timeout=10)  # retrying now
        server.kill()
        failed = len(receiver.attempts)
        server.start()
        head = await type_ops(server, "notes/k", 3, "k2")  # more edits after the restart
        # The restarted server resumes the retries of what it had queued.
        await until(lambda: len(receiver.attempts) > failed, timeout=10)
        receiver.failing = False
        await until(lambda: receiver.covered("notes/k") == head, timeout=30)
        ranges = receiver.ranges("notes/k")
        assert ranges[0][0] == 0 and ranges[-1][1] == head == 7
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # no overlap
        # Each idempotency key was accepted once: the receiver answered 500 before the kill.
        accepted_ids = [d["id"] for d in receiver.accepted]
        assert len(accepted_ids) == len(set(accepted_ids))
        first_ids = {a[0] for a in receiver.attempts[:failed]}
        assert first_ids <= set(accepted_ids)  # the delivery queued before the kill went out
        assert receiver.bad_signatures == 0
    finally:
        server.stop()
