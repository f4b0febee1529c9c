"""The limits that accept 0 mean "no limit" at 0, on a real server.

One server with ``messages_per_second``, ``max_connections_per_user``,
``max_connections_per_ip`` and ``max_version_lag`` at 0 (and a burst of 1,
which a rate of 0 ignores): a burst far past any bucket passes, more
connections than either default cap from one user and one address are all
accepted, and a submit based 300 versions behind is transformed and committed.
``max_document_chars`` at 0 is checked on the sequencer, which enforces it
(``tests/unit/test_settings_limits.py``); the limits that refuse 0 are refused
at start-up (the same file).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tandem.settings import Settings

from .harness import RawClient, ServerProcess, doc_state, token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ZEROS = {
    "TANDEM_MESSAGES_PER_SECOND": "0",
    "TANDEM_MESSAGE_BURST": "1",
    "TANDEM_MAX_CONNECTIONS_PER_USER": "0",
    "TANDEM_MAX_CONNECTIONS_PER_IP": "0",
    "TANDEM_MAX_VERSION_LAG": "0",
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def unlimited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("zero") / "data", env=ZEROS)
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def test_a_rate_of_zero_drops_nothing(unlimited: ServerProcess) -> None:
    client = await RawClient.connect(unlimited, f"token={token('fast')}")
    await client.expect("hello")
    count = 1000  # far past the burst of 1 the rate would allow
    for i in range(count):
        await client.send({"type": "ping", "ref": str(i)})
    # One pong each; an ERR_RATE_LIMITED instead would fail expect().
    pongs = [await client.expect("pong") for _ in range(count)]
    assert len(pongs) == count
    await client.close()


@pytest.fixture
async def many(unlimited: ServerProcess) -> AsyncIterator[list[RawClient]]:
    clients: list[RawClient] = []
    try:
        yield clients
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def test_connection_caps_of_zero_refuse_nobody(
    unlimited: ServerProcess, many: list[RawClient]
) -> None:
    defaults = Settings()
    one_user = defaults.max_connections_per_user + 10
    from_one_address = defaults.max_connections_per_ip + 10
    for i in range(from_one_address):
        user = "same" if i < one_user else f"u{i % 20}"
        client = await RawClient.connect(unlimited, f"token={token(user)}")
        many.append(client)
        await client.expect("hello")
    # Every one of them is still open and answers.
    await asyncio.gather(*(c.send({"type": "ping", "ref": "still"}) for c in many))
    for client in many:
        await client.expect("pong")


async def test_a_version_lag_of_zero_keeps_all_history_usable(unlimited: ServerProcess) -> None:
    writer = await RawClient.connect(unlimited, f"token={token('w')}&doc=lag")
    await writer.expect("snapshot")
    for i in range(300):
        await writer.send(
            {"type": "op", "doc": "lag", "v": i, "seq": i + 1, "op": [{"insert": "a"}]}
        )
        await writer.expect("ack", seq=i + 1)
    late = await RawClient.connect(unlimited, f"token={token('late')}")
    await late.expect("hello")
    await late.send({"type": "join", "doc": "lag"})
    await late.expect("snapshot")
    await late.send({"type": "op", "doc": "lag", "v": 0, "seq": 1, "op": [{"insert": "Z"}]})
    ack = await late.expect("ack", seq=1)
    assert ack["v"] == 301
    assert sorted((await doc_state(unlimited, "lag"))["text"]) == ["Z"] + ["a"] * 300
    await writer.close()
    await late.close()


def test_the_server_started_with_these_zeros(unlimited: ServerProcess, tmp_path: Path) -> None:
    """The zeros above are what the node runs with (nothing silently replaced them)."""
    assert unlimited.process is not None and unlimited.process.poll() is None
    settings = Settings.from_env(ZEROS)
    assert settings.messages_per_second == settings.max_connections_per_ip == 0
