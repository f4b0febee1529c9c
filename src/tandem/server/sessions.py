"""Every live client connection of this node, whatever its endpoint: the session registry.

``/collab``, ``/yjs/{doc}`` and ``/hocuspocus`` each register a ``LiveSession``
when a client is admitted and remove it when the client goes. Revocations
(``server/revocations.py``) walk it to close the sockets they cover, and the
admin API lists and disconnects sessions through it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tandem.auth import Principal
from tandem.errors import TandemError

__all__ = ["LiveSession", "SessionRegistry"]


@dataclass(eq=False, slots=True)
class LiveSession:
    """One admitted connection (for Hocuspocus: one authenticated document of a socket)."""

    endpoint: str
    principal: Principal
    ip: str
    started: float
    #: The documents it has joined now.
    docs: Callable[[], list[str]]
    #: Tell the client ``error`` (clearly, in its protocol) and close the socket.
    end: Callable[[TandemError], None]
    id: str = field(default_factory=lambda: secrets.token_hex(8))

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "user": self.principal.user,
            "ip": self.ip,
            "started": self.started,
            "docs": self.docs(),
        }


class SessionRegistry:
    def __init__(self) -> None:
        self._live: dict[str, LiveSession] = {}

    def add(self, session: LiveSession) -> None:
        self._live[session.id] = session

    def remove(self, session: LiveSession) -> None:
        self._live.pop(session.id, None)

    def discard(self, id: str) -> None:
        self._live.pop(id, None)

    def get(self, id: str) -> LiveSession | None:
        return self._live.get(id)

    def __iter__(self) -> Iterator[LiveSession]:
        return iter(list(self._live.values()))

    def __len__(self) -> int:
        return len(self._live)
