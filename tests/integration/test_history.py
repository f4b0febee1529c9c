"""History over REST against a real ``tandem serve``: versions written through real
sessions (snapshots every 10 versions), changes, authorship after concurrent
typing and an undo, labels, restore as an ordinary attributed op, and
retention's compacted-version error.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tandem.client import HistoryClient, TandemClient
from tandem.client.document import ServerError
from tandem.client.history import CompactedError
from tandem.ot import Document, apply

from .test_python_client import Server, converged, free_port, run, tandem

pytestmark = pytest.mark.integration


def start(
    tmp_path: os.PathLike[str], **settings: str
) -> tuple[subprocess.Popen[bytes], Server, str]:
    data = os.path.join(tmp_path, "data")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env.update({f"TANDEM_{k.upper()}": v for k, v in settings.items()})
    process = subprocess.Popen(
        tandem("serve", "--port", str(port), "--data", data, "--log-level", "warning"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 30
    import socket

    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.05)

    def token(user: str, access: str = "*=write") -> str:
        return subprocess.run(
            tandem("token", "--user", user, "--doc", access, "--data", data),
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout.strip()

    return process, Server(f"ws://127.0.0.1:{port}/collab", token("ann")), token("bob")


@pytest.fixture
def server(tmp_path: os.PathLike[str]) -> Iterator[tuple[Server, str]]:
    process, srv, bob = start(tmp_path, snapshot_every="10")
    try:
        yield srv, bob
    finally:
        process.terminate()
        process.wait(15)


def test_versions_changes_authors_labels_and_restore(server: tuple[Server, str]) -> None:
    srv, bob_token = server

    async def scenario() -> None:
        ann_client = TandemClient(srv.url, srv.token)
        bob_client = TandemClient(srv.url, bob_token)
        history = HistoryClient(srv.url, srv.token)
        try:
            ann = await ann_client.join("hist", timeout=10)
            bob = await bob_client.join("hist", timeout=10)
            for i, ch in enumerate("Hello world"):
                ann.insert(i, ch)
                await ann.synced()
            await converged([ann, bob])
            bob.insert(5, " there")  # inside Ann's text
            bob.format(0, 5, {"bold": True})
            await converged([ann, bob])
            ann.insert(0, "X")
            await ann.synced()
            assert ann.undo()  # Ann takes the X back
            await converged([ann, bob])
            head = ann.version
            assert head >= 14  # the session's snapshot at 10 is crossed
            delta, _ = await history.changes("hist", 0, head)
            assert apply(Document(), delta).text() == ann.text == "Hello there world"
            for v in (0, 1, 5, 11, 12, head - 1, head):
                past = await history.version("hist", v)
                delta, _ = await history.changes("hist", 0, v)
                assert past.content == apply(Document(), delta).to_delta(), v
            assert (await history.version("hist", 5)).text == "Hello"
            delta, users = await history.changes("hist", 11, head)
            assert users == ["bob", "ann"]
            # authorship: Bob's " there" inside Ann's words; the undone X is gone; bold is no one's
            authors = await history.authors("hist")
            assert authors.spans == [("ann", 5), ("bob", 6), ("ann", 6)]
            assert (await history.authors("hist", 5)).spans == [("ann", 5)]
            # labels
            await history.label("hist", "v1 sent to legal", 11)
            assert [(x.name, x.v, x.user) for x in await history.labels("hist")] == [
                ("v1 sent to legal", 11, "ann")
            ]
            assert (await history.version("hist", label="v1 sent to legal")).text == "Hello world"
            # restore: one new op by Bob, seen by Ann as an ordinary op
            seen: list[str | None] = []
            ann.on_change(lambda change: seen.append(change.user))
            bob_history = HistoryClient(srv.url, bob_token)
            restored = await bob_history.restore("hist", label="v1 sent to legal")
            await bob_history.close()
            assert restored == head + 1
            await converged([ann, bob])
            assert ann.text == bob.text == "Hello world"
            assert seen == ["bob"]
            assert (
                await history.version("hist", head)
            ).text == "Hello there world"  # history stays
            now = await history.version("hist")
            assert now.content == (await history.version("hist", 11)).content  # bold undone too
            spans = (await history.authors("hist")).spans
            assert (
                sum(n for _, n in spans) == 11
            )  # kept text keeps its authors (a space may be Bob's)
            with pytest.raises(ServerError) as caught:
                await history.version("hist", head + 5)
            assert caught.value.code == "ERR_BAD_VERSION"
            with pytest.raises(ServerError) as missing:
                await history.version("hist", label="nope")
            assert missing.value.code == "ERR_NOT_FOUND"
        finally:
            await history.close()
            await ann_client.close()
            await bob_client.close()

    run(scenario)


def test_restore_needs_write_and_compaction_names_the_oldest_version(
    tmp_path: os.PathLike[str],
) -> None:
    process, srv, _ = start(
        tmp_path, snapshot_every="10", history_keep_versions="15", history_compact_interval="1"
    )

    async def scenario() -> None:
        client = TandemClient(srv.url, srv.token)
        history = HistoryClient(srv.url, srv.token)
        try:
            doc = await client.join("kept", timeout=10)
            for i in range(60):
                doc.insert(i, "k")
                await doc.synced()
            deadline = asyncio.get_running_loop().time() + 20
            oldest = 0
            while oldest < 40:  # the newest snapshot at or below 60 - 15, once retention caught up
                assert asyncio.get_running_loop().time() < deadline, "retention never ran"
                try:
                    await history.version("kept", 1)
                except CompactedError as error:
                    assert error.code == "ERR_HISTORY_COMPACTED"
                    assert f"the oldest version that can be read is {error.oldest}" in str(error)
                    assert error.oldest % 10 == 0  # cut at a snapshot
                    oldest = error.oldest
                await asyncio.sleep(0.2)
            assert oldest in (40, 50)
            assert (await history.version("kept", oldest)).text == "k" * oldest
            assert (await history.authors("kept", oldest)).spans == [("ann", oldest)]
            with pytest.raises(CompactedError):
                await history.changes("kept", 0, 60)
            assert (await history.version("kept")).text == "k" * 60
        finally:
            await history.close()
            await client.close()

    try:
        run(scenario)
        reader = subprocess.run(
            tandem(
                "token",
                "--user",
                "rita",
                "--doc",
                "*=read",
                "--data",
                os.path.join(tmp_path, "data"),
            ),
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

        async def read_only() -> None:
            async with HistoryClient(srv.url, reader) as history:
                with pytest.raises(ServerError) as caught:
                    await history.restore("kept", 55)
                assert caught.value.code in ("ERR_READ_ONLY", "ERR_FORBIDDEN")
                with pytest.raises(ServerError):
                    await history.label("kept", "mine", 55)
                assert (await history.version("kept", 55)).text == "k" * 55

        run(read_only)
    finally:
        process.terminate()
        process.wait(15)
