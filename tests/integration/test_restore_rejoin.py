"""A restore from a backup while Python clients hold newer versions and offline edits.

A real ``tandem serve`` (SQLite) reaches version 50; ``tandem backup`` copies
it; two clients take the document to version 80; the node stops and the two
keep typing offline; the backup is restored and the node restarted; a third
client takes the restored document past the others' version (to 90) before
they return. The two then re-join with version 80 and the fingerprint of their
document there (``h``): the server's version 80 is another text, so each gets a
snapshot, never a catch-up of the new history, and carries its offline edits
over onto it (docs/protocol.md, "Re-joining from another history"). All three
converge on the restored document plus everyone's new edits; the edits
acknowledged after the backup are gone (the restore took them), and the
offline edits are there exactly once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tandem.client import DocumentHandle, TandemClient

from .test_python_client import ALPHABET, converged, free_port, serving, tandem

pytestmark = pytest.mark.integration

DOC = "restored"


async def type_synced(handle: DocumentHandle, keys: list[str]) -> None:
    """One version per key: type it at the end and wait for its ack."""
    for key in keys:
        handle.insert(len(handle.text), key)
        await handle.synced(20)


def test_clients_ahead_of_a_restore_converge_and_keep_their_offline_edits(
    tmp_path: Path,
) -> None:
    data, log, copy = tmp_path / "data", tmp_path / "server.log", tmp_path / "backup.db"
    port = free_port()
    url = f"ws://127.0.0.1:{port}/collab"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    keys = iter(ALPHABET)
    before = [next(keys) for _ in range(50)]
    after = [next(keys) for _ in range(30)]
    later = [next(keys) for _ in range(40)]

    async def scenario() -> None:
        gate = asyncio.Event()
        gate.set()
        token = ""

        async def gated() -> str:
            await gate.wait()  # while closed, the returning clients stay away
            return token

        with serving(data, port, log):
            token = subprocess.run(
                tandem("token", "--user", "typist", "--doc", "*=write", "--data", str(data)),
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout.strip()
            ahead = [TandemClient(url, gated, max_backoff=0.2) for _ in range(2)]
            one, two = [await client.join(DOC, timeout=20) for client in ahead]
            await type_synced(one, before)
            assert one.version == 50
            subprocess.run(tandem("backup", str(copy), "--data", str(data)), check=True, env=env)
            await type_synced(one, after[:15])
            await type_synced(two, after[15:])
            await converged([one, two])
            assert one.version == two.version == 80
            gate.clear()
        # The node is down: both keep typing.
        one.insert(0, "OFFLINE-ONE ")
        two.insert(len(two.text), " OFFLINE-TWO")
        assert one.pending and two.pending
        for suffix in ("", "-wal", "-shm"):
            (data / f"tandem.db{suffix}").unlink(missing_ok=True)
        shutil.copy(copy, data / "tandem.db")
        with serving(data, port, log):
            third = TandemClient(url, token)
            try:
                late = await third.join(DOC, timeout=20)
                assert late.version == 50 and late.text == "".join(before)
                await type_synced(late, later)
                assert late.version == 90  # past the returning clients' version 80
                gate.set()
                handles = [one, two, late]
                await converged(handles, timeout=30)
            finally:
                await third.close()
                for client in ahead:
                    await client.close()
        text = late.text
        assert text.count("OFFLINE-ONE ") == 1 and text.count(" OFFLINE-TWO") == 1
        assert all(text.count(key) == 1 for key in before + later)
        assert not any(key in text for key in after), "acknowledged after the backup: restored away"
        assert text.replace("OFFLINE-ONE ", "").replace(" OFFLINE-TWO", "") == "".join(
            before + later
        )

    asyncio.run(asyncio.wait_for(scenario(), 120))
