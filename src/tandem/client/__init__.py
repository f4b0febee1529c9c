"""The Python client: ``state`` is the pure protocol state machine, ``connection`` the I/O.

``TandemClient`` and friends are imported lazily, so ``import tandem.client.state``
(which must not import asyncio) does not pull in the connection module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tandem.client.state import MERGE_AT, ClientState, Pending, PendingMerge, Status, VersionGap

if TYPE_CHECKING:
    from tandem.client.connection import TandemClient
    from tandem.client.document import (
        Change,
        ChangeStream,
        ClientClosed,
        DocumentHandle,
        RemotePresence,
        ServerError,
    )
    from tandem.client.history import HistoryClient

__all__ = [
    "MERGE_AT",
    "Change",
    "ChangeStream",
    "ClientClosed",
    "ClientState",
    "DocumentHandle",
    "HistoryClient",
    "Pending",
    "PendingMerge",
    "RemotePresence",
    "ServerError",
    "Status",
    "TandemClient",
    "VersionGap",
]


def __getattr__(name: str) -> Any:
    if name == "HistoryClient":
        from tandem.client import history

        return history.HistoryClient
    if name in __all__:  # the rest of __all__: the connection and the document handle
        from tandem.client import connection, document

        return getattr(connection if name == "TandemClient" else document, name)
    raise AttributeError(f"module 'tandem.client' has no attribute {name!r}")
