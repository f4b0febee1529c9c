"""Hooks that a test server loads with ``--hooks hookmod:RecordingHooks``.

They write what they see to files under ``$TANDEM_TEST_HOOK_DIR`` (appended and
fsync'd, so a SIGKILL of the server loses nothing they recorded), which the
test process reads.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tandem.auth import Principal
from tandem.authorization import AuthorizeRequest, Rejection
from tandem.hooks import Change, Hooks
from tandem.ot.delta import Delta, Insert, Retain


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


class AuthorizingHooks(RecordingHooks):
    """``authorize`` rules for ``rules*`` documents, and misbehaving calls on demand.

    * at most ``MAX_LENGTH`` characters (worked out from the op's lengths, without
      reading the text);
    * the first ``LOCKED`` characters (once written) are locked: no op may insert before
      position ``LOCKED``, nor delete or format what lies there;
    * an op inserting ``HANG`` makes the hook hang (the server's timeout ends it),
      one inserting ``BOOM`` makes it raise.

    Every request is recorded in ``authorize.jsonl``.
    """

    MAX_LENGTH = 40
    LOCKED = 5

    async def authorize(self, request: AuthorizeRequest) -> Rejection | None:
        inserted = "".join(c.text for c in request.op.ops if isinstance(c, Insert))
        self._append(
            "authorize.jsonl",
            {
                "doc": request.doc,
                "version": request.version,
                "op": request.op.to_json(),
                "head": len(request.document),
                "user": request.user,
                "source": request.source,
                "principal": request.principal.user if request.principal else None,
            },
        )
        if "HANG" in inserted:
            await asyncio.Event().wait()
        if "BOOM" in inserted:
            raise RuntimeError("the rule service is down")
        if not request.doc.startswith("rules"):
            return None
        if request.op.target_length(len(request.document)) > self.MAX_LENGTH:
            return Rejection(
                "max_length", f"this document holds at most {self.MAX_LENGTH} characters"
            )
        position = 0
        if not len(request.document):
            return None  # the first text (the title) may be written
        for component in request.op.ops:
            if isinstance(component, Retain) and not component.attributes:
                position += len(component)
                continue
            if position < self.LOCKED:
                return Rejection("locked", f"the first {self.LOCKED} characters are locked")
            if not isinstance(component, Insert):
                position += len(component)
        return None
