"""A document's past over REST: versions, changes, authorship, labels, restore.

``HistoryClient`` talks to the ``/api`` routes of docs/protocol.md, "History",
with the same bearer token as the WebSocket client (a string, or a function
returning one, awaited if it is a coroutine). Give it the server's base URL;
a ``ws://…/collab`` URL is turned into ``http://…``. Errors come back as
``ServerError`` with the wire ``code`` (``ERR_HISTORY_COMPACTED`` carries
``oldest``, the oldest version that can still be read).

Example::

    async with HistoryClient("http://localhost:8080", token) as history:
        old = await history.version("notes", 12)
        await history.label("notes", "v1 sent to legal", 12)
        await history.restore("notes", 12)

Must not import the server, storage or bus.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from tandem.client.document import ServerError
from tandem.ot.delta import Delta

__all__ = ["Authors", "CompactedError", "HistoryClient", "Label", "Version"]

TokenSource = str | Callable[[], str | Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Version:
    """A document as it was at version ``v``."""

    v: int
    content: Delta
    text: str


@dataclass(frozen=True, slots=True)
class Authors:
    """Who inserted each character at version ``v``: ``(user, length)`` runs in order."""

    v: int
    spans: list[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Label:
    name: str
    v: int
    user: str
    time: float


class CompactedError(ServerError):
    """The version was compacted away by retention; ``oldest`` can still be read."""

    def __init__(self, code: str, message: str, oldest: int) -> None:
        super().__init__(code, message)
        self.oldest = oldest


def http_base(url: str) -> str:
    """``ws://host/collab`` → ``http://host``; an http(s) URL loses its path."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


class HistoryClient:
    """The history routes of one server (see the module docstring)."""

    def __init__(self, url: str, token: TokenSource, *, timeout: float = 30.0) -> None:
        self._token = token
        self._http = httpx.AsyncClient(base_url=http_base(url), timeout=timeout)

    async def __aenter__(self) -> HistoryClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def version(self, doc: str, v: int | None = None, *, label: str | None = None) -> Version:
        """The document at version ``v`` (or the labelled one; default: now)."""
        params: dict[str, Any] = {}
        if v is not None:
            params["v"] = v
        if label is not None:
            params["label"] = label
        data = await self._call("GET", f"/api/docs/{quote(doc)}", params=params)
        return Version(int(data["v"]), Delta.from_json(data["content"]), str(data["text"]))

    async def changes(
        self, doc: str, from_version: int, to_version: int | None = None
    ) -> tuple[Delta, list[str]]:
        """The ops after ``from_version`` up to ``to_version`` (default: the head), composed.

        Also who made them, in the order they first did.
        """
        params: dict[str, Any] = {"from": from_version}
        if to_version is not None:
            params["to"] = to_version
        data = await self._call("GET", f"/api/docs/{quote(doc)}/changes", params=params)
        return Delta.from_json(data["delta"]), [str(user) for user in data["users"]]

    async def authors(self, doc: str, v: int | None = None) -> Authors:
        """Who inserted each character at version ``v`` (default: now)."""
        params = {} if v is None else {"v": v}
        data = await self._call("GET", f"/api/docs/{quote(doc)}/authors", params=params)
        return Authors(
            int(data["v"]), [(str(a["user"]), int(a["length"])) for a in data["authors"]]
        )

    async def restore(self, doc: str, v: int | None = None, *, label: str | None = None) -> int:
        """Make the head version ``v``'s content again, as one new op by us; its version."""
        body: dict[str, Any] = {"v": v} if label is None else {"label": label}
        data = await self._call("POST", f"/api/docs/{quote(doc)}/restore", json=body)
        return int(data["v"])

    async def labels(self, doc: str) -> list[Label]:
        data = await self._call("GET", f"/api/docs/{quote(doc)}/labels")
        return [_label(item) for item in data["labels"]]

    async def label(self, doc: str, name: str, v: int | None = None) -> Label:
        """Name version ``v`` (default: the head)."""
        data = await self._call(
            "POST", f"/api/docs/{quote(doc)}/labels", json={"name": name, "v": v}
        )
        return _label(data)

    async def delete_label(self, doc: str, name: str) -> None:
        await self._call("DELETE", f"/api/docs/{quote(doc)}/labels", params={"name": name})

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        token = self._token() if callable(self._token) else self._token
        if inspect.isawaitable(token):
            token = await token
        response = await self._http.request(
            method, path, headers={"authorization": f"Bearer {token}"}, **kwargs
        )
        data = response.json()
        if response.status_code >= 400:
            detail = data.get("detail", data) if isinstance(data, dict) else {}
            code, message = str(detail.get("code", "")), str(detail.get("message", ""))
            if "oldest" in detail:
                raise CompactedError(code, message, int(detail["oldest"]))
            raise ServerError(code, message)
        return data


def _label(item: dict[str, Any]) -> Label:
    return Label(str(item["name"]), int(item["v"]), str(item["user"]), float(item["time"]))
