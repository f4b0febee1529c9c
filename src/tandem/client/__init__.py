"""The Python client: ``state`` is the pure protocol state machine, ``connection`` the I/O.

``TandemClient`` and friends are imported lazily, so ``import tandem.client.state``
(which must not import asyncio) does not pull in the connection module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tandem.client.state import MERGE_AT, ClientState, Pending, PendingMerge, Status, VersionGap

if TYPE_CHECKING:
    from tandem.client.connection import (
        Change,
        ChangeStream,
        ClientClosed,
        DocumentHandle,
        RemotePresence,
        ServerError,
        TandemClient,
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

_LAZY = frozenset(
    {
        "Change",
        "ChangeStream",
        "ClientClosed",
        "DocumentHandle",
        "RemotePresence",
        "ServerError",
        "TandemClient",
    }
)


def __getattr__(name: str) -> Any:
    if name == "HistoryClient":
        from tandem.client import history

        return history.HistoryClient
    if name in _LAZY:
        from tandem.client import connection

        return getattr(connection, name)
    raise AttributeError(f"module 'tandem.client' has no attribute {name!r}")
