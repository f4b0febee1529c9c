"""Revoking access, pure: what a revocation covers, and the list every node keeps.

A revocation names one of:

* a token, by ``jti``: that token is refused from now on;
* a user: every token of that user *issued* (``iat``) at or before the
  revocation is refused, and so is one without ``iat``; a token issued later
  (the user signed in again, after the application decided) works;
* a user and a document glob: those tokens grant nothing on matching
  documents (``Principal.revoked``), and keep their other access.

A revocation is kept until ``expires``, by when every token it covers has
expired (``Settings.jwt_max_token_lifetime`` bounds a token's life), or forever
(``expires`` None) when tokens without ``exp`` are accepted. Storing, the bus
and closing sockets are ``tandem.server.revocations``'s job; this module must
not import asyncio, storage, the bus, ``os``, ``pathlib`` or ``time``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from typing import Any

import orjson

from tandem.auth import Principal
from tandem.errors import Revoked

__all__ = ["Revocation", "RevocationList", "message"]

MAX_FIELD_CHARS = 256


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revocation (see the module docstring); exactly one of ``jti`` and ``user`` is set."""

    id: str
    created: float
    expires: float | None
    jti: str | None = None
    user: str | None = None
    docs: str | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if (self.jti is None) == (self.user is None):
            raise ValueError("a revocation names either a jti or a user")
        if self.docs is not None and self.user is None:
            raise ValueError("a document pattern needs a user")
        for value in (self.jti, self.user, self.docs, self.reason):
            if value is not None and (not isinstance(value, str) or len(value) > MAX_FIELD_CHARS):
                raise ValueError(f"revocation fields are strings of at most {MAX_FIELD_CHARS}")
        if self.jti == "" or self.user == "" or self.docs == "":
            raise ValueError("revocation fields must not be empty")

    def covers(self, principal: Principal) -> bool:
        """Does this revocation apply to ``principal``'s token (whole, or some documents)?"""
        if self.jti is not None:
            return principal.token_id == self.jti
        if principal.user != self.user:
            return False
        return principal.issued is None or principal.issued <= self.created

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> Revocation:
        """Parse what ``to_json`` wrote; ``ValueError`` for anything else."""
        try:
            raw: Any = orjson.loads(data)
            return cls(**raw)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"not a revocation: {exc}") from None


class RevocationList:
    """The revocations in force on this node."""

    def __init__(self) -> None:
        self._by_id: dict[str, Revocation] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, revocation: Revocation) -> bool:
        """Keep ``revocation``; False when it was known already."""
        if revocation.id in self._by_id:
            return False
        self._by_id[revocation.id] = revocation
        return True

    def replace_all(self, revocations: list[Revocation]) -> list[Revocation]:
        """Make the list exactly ``revocations`` (as stored); return the ones that are new."""
        new = [r for r in revocations if r.id not in self._by_id]
        self._by_id = {r.id: r for r in revocations}
        return new

    def all(self) -> list[Revocation]:
        return sorted(self._by_id.values(), key=lambda r: (r.created, r.id))

    def prune(self, now: float) -> None:
        """Forget revocations whose tokens have all expired."""
        self._by_id = {k: r for k, r in self._by_id.items() if r.expires is None or r.expires > now}

    def apply(self, principal: Principal) -> Principal:
        """``principal`` with its revoked documents, or ``Revoked`` if the whole token is."""
        patterns: list[str] = []
        for revocation in self._by_id.values():
            if not revocation.covers(principal):
                continue
            if revocation.docs is None:
                raise Revoked(message(revocation))
            patterns.append(revocation.docs)
        if not patterns:
            return principal
        return dataclasses.replace(principal, revoked=(*principal.revoked, *patterns))

    def affected(self, principal: Principal, docs: list[str]) -> Revocation | None:
        """The revocation that ends a connection of ``principal`` joined to ``docs``, if any."""
        for revocation in self._by_id.values():
            if not revocation.covers(principal):
                continue
            if revocation.docs is None or any(
                fnmatch.fnmatchcase(doc, revocation.docs) for doc in docs
            ):
                return revocation
        return None


def message(revocation: Revocation) -> str:
    """The error message a client whose access was revoked gets."""
    what = "this token" if revocation.jti is not None else f"user {revocation.user!r}"
    if revocation.docs is not None:
        what += f" on documents {revocation.docs!r}"
    reason = f": {revocation.reason}" if revocation.reason else ""
    return f"access revoked for {what}{reason}"
