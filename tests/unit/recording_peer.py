"""A ``/collab`` peer of user ``ada`` that keeps every message a session sends it."""

from __future__ import annotations


class Peer:
    def __init__(self, client: str) -> None:
        self.client, self.user, self.name = client, "ada", "Ada"
        #: The messages as sent (JSON text).
        self.sent: list[str] = []

    def send(self, message: str) -> None:
        self.sent.append(message)
