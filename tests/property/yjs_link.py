"""The server's Yjs link with every frame it sends kept, parsed, for a test's client."""

from __future__ import annotations

from tandem.merge import yproto
from tandem.server.yjs import YjsLink


class FrameLink(YjsLink):
    """A ``YjsLink`` for user ``u2`` whose outgoing frames land in ``frames``."""

    def __init__(self) -> None:
        super().__init__("u2", "u2")
        self.frames: list[yproto.Message] = []

    def send_bytes(self, frame: bytes) -> None:
        self.frames.append(yproto.parse(frame))
