"""What an endpoint may use of the server: the ``Context`` protocol.

``tandem.server.app.Tandem`` (the composition root) builds the parts and
satisfies this protocol; the endpoints (``collab``, ``yjs``, ``hocuspocus``,
``rest``, ``admin``, ``health``) and ``collab_transport`` are handed one and never
import the root back, so the arrows between the server's modules all point one way.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tandem.bus import Bus
    from tandem.history.service import History
    from tandem.metrics import Metrics
    from tandem.revocation import RevocationList
    from tandem.server.admission import Admission
    from tandem.server.doc_admin import DocumentControl
    from tandem.server.revocations import RevocationService
    from tandem.server.sessions import SessionRegistry
    from tandem.session.manager import DocumentManager
    from tandem.settings import Settings
    from tandem.storage.base import Store

__all__ = ["Closable", "Context", "Drain"]


class Closable(Protocol):
    """A client connection, as the shutdown closes it."""

    def close(self, code: int, reason: str) -> None: ...


class Drain(Protocol):
    """The graceful shutdown as connections see it (``tandem.server.shutdown``)."""

    def opened(self, connection: Closable) -> None: ...

    def ended(self, connection: Closable) -> None: ...

    def started_handling(self) -> None: ...

    def finished_handling(self) -> None: ...

    def begin(self) -> asyncio.Task[None]: ...


class Context(Protocol):
    """The parts of a running server an endpoint works with."""

    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def admission(self) -> Admission: ...

    @property
    def documents(self) -> DocumentManager: ...

    @property
    def store(self) -> Store: ...

    @property
    def sessions(self) -> SessionRegistry: ...

    @property
    def bus(self) -> Bus | None: ...

    @property
    def revocations(self) -> RevocationList: ...

    @property
    def revocation_service(self) -> RevocationService: ...

    @property
    def started(self) -> float:
        """When the server started (``time.time()``), 0 before."""
        ...

    #: Shutdown began: readiness answers 503.
    draining: bool

    @property
    def shutdown(self) -> Drain: ...

    @property
    def history(self) -> History | None: ...

    @property
    def document_control(self) -> DocumentControl: ...
