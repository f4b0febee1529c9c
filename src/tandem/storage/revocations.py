"""Where revocations are kept: beside the documents, in every store.

``RevocationStore`` is the contract (``tests/contract/test_revocations.py``):
``add`` is durable when it returns and idempotent by id; ``active(now)`` lists
the ones not yet expired, oldest first; ``prune(now)`` deletes the expired.
Rows hold the revocation's JSON (``Revocation.to_json``); this module does not
interpret it.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["MemoryRevocations", "RevocationStore"]


class RevocationStore(Protocol):
    async def add(self, id: str, data: str, created: float, expires: float | None) -> None: ...

    async def active(self, now: float) -> list[str]: ...

    async def prune(self, now: float) -> None: ...


class MemoryRevocations:
    def __init__(self) -> None:
        self._rows: dict[str, tuple[str, float, float | None]] = {}

    async def add(self, id: str, data: str, created: float, expires: float | None) -> None:
        self._rows.setdefault(id, (data, created, expires))

    async def active(self, now: float) -> list[str]:
        rows = sorted(self._rows.items(), key=lambda item: (item[1][1], item[0]))
        return [data for _, (data, _, exp) in rows if exp is None or exp > now]

    async def prune(self, now: float) -> None:
        self._rows = {k: v for k, v in self._rows.items() if v[2] is None or v[2] > now}
