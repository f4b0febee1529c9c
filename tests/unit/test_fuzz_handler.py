"""Fuzzing the message path with hypothesis: JSON-ish frames into ``tandem.protocol.parse``
and into the real gateway handler (``tandem.server.collab.Connection.handle``) in front of
a real in-process ``DocumentManager`` on a ``MemoryStore``.

Properties: ``parse`` raises nothing but ``TandemError`` subclasses; the handler answers
every frame (never ``ERR_INTERNAL``, which means an unexpected exception), and a frame it
refuses leaves the document exactly as it was.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tandem.auth import Principal
from tandem.errors import TandemError
from tandem.metrics import Metrics
from tandem.protocol import Join, parse
from tandem.server.admission import Admission
from tandem.server.collab import Connection
from tandem.server.collab_asgi import AsgiWire
from tandem.server.shutdown import GracefulShutdown
from tandem.session.manager import DocumentManager
from tandem.settings import Settings
from tandem.storage.memory import MemoryStore

DOC = "fuzz"
TYPES = ["op", "insert", "delete", "format", "presence", "join", "leave", "ping", "nope", ""]
KEYS = ["insert", "retain", "delete", "attributes", "x"]

numbers = st.one_of(
    st.integers(-3, 40),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
scalars = st.one_of(st.none(), numbers, st.text(max_size=12))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
components = st.dictionaries(st.sampled_from(KEYS), json_values, min_size=1, max_size=3)
messages = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(TYPES), json_values)},
    optional={
        "doc": st.one_of(st.just(DOC), st.just("other"), json_values),
        "v": st.one_of(st.integers(-2, 12), json_values),
        "seq": st.one_of(st.integers(-2, 50), json_values),
        "op": st.one_of(st.lists(components, max_size=4), json_values),
        "pos": st.one_of(st.integers(-2, 30), json_values),
        "length": st.one_of(st.integers(-2, 30), json_values),
        "text": st.one_of(st.text(max_size=8), json_values),
        "attributes": json_values,
        "cursor": st.one_of(
            st.fixed_dictionaries({"index": numbers, "length": numbers}), json_values
        ),
        "state": json_values,
        "ref": json_values,
        "id": json_values,
    },
)


def encode(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits: orjson refuses, the wire can carry them
        import json

        return json.dumps(value)


frames = st.one_of(
    messages.map(encode),
    json_values.map(encode),
    st.text(max_size=40),
    st.binary(max_size=20),
    messages.map(lambda m: encode(m)[: len(encode(m)) // 2]),  # cut off
)


@given(frames)
def test_parse_raises_only_tandem_errors(frame: str | bytes) -> None:
    try:
        parse(frame, max_bytes=4096)
    except TandemError as error:
        assert error.code.startswith("ERR_") and error.message


class _Socket:
    """Stands in for the Starlette WebSocket: keeps what the connection sends."""

    scope: dict[str, Any] = {}

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.sent.append(encode({"type": "closed", "code": code}))


def test_the_handler_answers_everything_and_refusals_change_nothing() -> None:
    loop = asyncio.new_event_loop()
    settings = Settings(
        node_id="fuzz",
        data_dir=Path("unused"),
        max_document_chars=200,
        messages_per_second=1e9,
        message_burst=10**9,
    )
    store = MemoryStore()
    manager = DocumentManager(store, settings, Metrics("fuzz"))
    metrics = Metrics("fuzz2")

    async def verify(token: str) -> Principal:
        raise AssertionError("the fuzzer's connection is admitted already")

    tandem = SimpleNamespace(
        settings=settings,
        metrics=metrics,
        documents=manager,
        draining=False,
        admission=Admission(settings, verify, metrics),
    )
    tandem.shutdown = GracefulShutdown(tandem)  # type: ignore[arg-type]
    principal = Principal("mallory", "Mallory", (("*", "write"),))
    socket = _Socket()
    connection = Connection(AsgiWire(socket), principal, "fuzzer", tandem)  # type: ignore[arg-type]

    async def setup() -> None:
        await store.open()
        await manager.start()
        await connection.handle(encode({"type": "join", "doc": DOC}))
        await connection.handle(encode({"type": "insert", "pos": 0, "text": "seed text"}))
        await manager.committer.drain()

    async def settle() -> None:
        await manager.committer.drain()
        for _ in range(20):  # let the flusher and the writer task run
            await asyncio.sleep(0)

    async def feed(frame: str | bytes) -> list[dict[str, Any]]:
        await settle()
        socket.sent.clear()
        await connection.handle(frame)
        await settle()
        replies: list[dict[str, Any]] = []
        for raw in socket.sent:
            data = orjson.loads(raw)
            replies.extend(data if isinstance(data, list) else [data])
        return replies

    @given(frames)
    def check(frame: str | bytes) -> None:
        # A fatal error (an oversized frame) closes the connection: start afresh.
        connection._closing, connection.closed = None, False
        if DOC not in connection.documents:
            loop.run_until_complete(connection.join(Join(DOC)))
        session = manager.sessions[DOC]
        before = (session.committed_version, session.committed_document)
        replies = loop.run_until_complete(feed(frame))
        codes = [m.get("code") for m in replies if m["type"] == "error"]
        assert "ERR_INTERNAL" not in codes, replies
        if codes and not any(m["type"] == "ack" for m in replies):
            session = manager.sessions[DOC]
            assert (session.committed_version, session.committed_document) == before, replies

    try:
        loop.run_until_complete(setup())
        check()
    finally:
        loop.run_until_complete(manager.close())
        loop.close()
