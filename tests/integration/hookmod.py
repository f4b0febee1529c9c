"""Hooks that a test server loads with ``--hooks hookmod:RecordingHooks``.

They write what they see to files under ``$TANDEM_TEST_HOOK_DIR`` (appended and
fsync'd, so a SIGKILL of the server loses nothing they recorded), which the
test process reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tandem.auth import Principal
from tandem.hooks import Change, Hooks
from tandem.ot.delta import Delta


class RecordingHooks(Hooks):
    def __init__(self) -> None:
        self.folder = Path(os.environ["TANDEM_TEST_HOOK_DIR"])

    def _append(self, name: str, entry: dict[str, Any]) -> None:
        with (self.folder / name).open("a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    async def authenticate(self, credential: str) -> Principal | None:
        if credential == "api-key-robot":
            return Principal("robot", "Robot", (("*", "write"),), expires=None)
        return None

    async def on_change(self, changes: Sequence[Change]) -> None:
        for change in changes:
            self._append("changes.jsonl", {"doc": change.doc, "v": change.version})

    async def load(self, doc: str) -> str | None:
        return f"from the CMS: {doc}" if doc.startswith("cms/") else None

    async def store(self, doc: str, version: int, content: Delta) -> None:
        text = content.text()
        self._append("stored.jsonl", {"doc": doc, "v": version, "text": text})

    async def connect(self, session: Any) -> None:
        self._append("sessions.jsonl", {"event": "connect", "user": session.principal.user})

    async def disconnect(self, session: Any) -> None:
        self._append("sessions.jsonl", {"event": "disconnect", "user": session.principal.user})
