"""Every live client connection of this node, whatever its endpoint: the session registry.

``/collab``, ``/yjs/{doc}`` and ``/hocuspocus`` each register a ``LiveSession``
when a client is admitted and remove it when the client goes. Revocations
(``server/revocations.py``) walk it to close the sockets they cover, and the
admin API lists and disconnects sessions through it.

A session asks its ``owner`` (a ``/collab`` ``Connection`` itself) for its
documents and to end it, rather than keeping two callables: bound methods are
two objects per connection the garbage collector tracks (docs/performance.md,
"The full collection a long-running server still pays").
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from tandem.auth import Principal
from tandem.errors import TandemError

__all__ = ["LiveSession", "OneDocument", "SessionOwner", "SessionRegistry"]


class SessionOwner(Protocol):
    """What a live session's socket answers."""

    def joined_documents(self) -> list[str]:
        """The documents it has joined now."""

    def end_session(self, error: TandemError) -> None:
        """Tell the client ``error`` (clearly, in its protocol) and close the socket."""


@dataclass(frozen=True, slots=True)
class OneDocument:
    """The owner of a session of one document (``/yjs``, a Hocuspocus document)."""

    doc: str
    ending: Callable[[TandemError], None]

    def joined_documents(self) -> list[str]:
        return [self.doc]

    def end_session(self, error: TandemError) -> None:
        self.ending(error)


@dataclass(eq=False, slots=True)
class LiveSession:
    """One admitted connection (for Hocuspocus: one authenticated document of a socket)."""

    endpoint: str
    principal: Principal
    ip: str
    started: float
    owner: SessionOwner
    id: str = field(default_factory=lambda: secrets.token_hex(8))

    def docs(self) -> list[str]:
        """The documents it has joined now."""
        return self.owner.joined_documents()

    def end(self, error: TandemError) -> None:
        """Tell the client ``error`` (clearly, in its protocol) and close the socket."""
        self.owner.end_session(error)

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
    """The live sessions; ``on_change(event, session)`` hears ``connect`` and ``disconnect``."""

    def __init__(self, on_change: Callable[[str, LiveSession], None] | None = None) -> None:
        self._live: dict[str, LiveSession] = {}
        self._on_change = on_change

    def add(self, session: LiveSession) -> None:
        self._live[session.id] = session
        if self._on_change is not None:
            self._on_change("connect", session)

    def remove(self, session: LiveSession) -> None:
        self.discard(session.id)

    def discard(self, id: str) -> None:
        session = self._live.pop(id, None)
        if session is not None and self._on_change is not None:
            self._on_change("disconnect", session)

    def get(self, id: str) -> LiveSession | None:
        return self._live.get(id)

    def __iter__(self) -> Iterator[LiveSession]:
        return iter(list(self._live.values()))

    def __len__(self) -> int:
        return len(self._live)
