"""REST routes for a document's past: versions, changes, authorship, labels, restore.

(No ``from __future__ import annotations``: FastAPI reads the signatures at runtime.)

Added to the ``/api`` router by ``server/rest.py``, before its catch-all
``GET /docs/{doc}``, with its auth dependency, its document check and its
submit (a restore is an ordinary op, attributed to the restoring user). The
answers come from ``tandem.history.History``; docs/protocol.md, "History",
describes them and their costs.
"""

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from tandem.auth import Principal
from tandem.errors import TandemError, VersionError
from tandem.history.service import History
from tandem.ot.delta import Delta
from tandem.ot.diff import diff

if TYPE_CHECKING:
    from tandem.server.context import Context

__all__ = ["add_history_routes"]

#: ``submit(doc, op, base_version, who)`` → the version it was committed as.
Submit = Callable[[str, Delta, int, Principal], Awaitable[int]]
CheckDoc = Callable[[str, Principal, bool], str]
Reply = Callable[[TandemError], Any]


class ChangesOut(BaseModel):
    from_: int = Field(alias="from")
    to: int
    delta: list[dict[str, Any]] = Field(description="The ops in between, composed")
    users: list[str] = Field(description="Who committed them, in the order they first did")


class AuthorOut(BaseModel):
    user: str
    length: int = Field(description="Characters (code points) in a row by this user")


class AuthorsOut(BaseModel):
    v: int
    authors: list[AuthorOut] = Field(description="Who inserted each character, in runs")


class LabelIn(BaseModel):
    name: str = Field(description="The label, 1-200 characters")
    v: int | None = Field(None, description="The version to name; default: the head")


class LabelOut(BaseModel):
    name: str
    v: int
    user: str
    time: float


class LabelsOut(BaseModel):
    labels: list[LabelOut]


class RestoreIn(BaseModel):
    v: int | None = Field(None, description="The version to restore")
    label: str | None = Field(None, description="Or the label of the version to restore")


class RestoreOut(BaseModel):
    v: int = Field(
        description="The version the restoring op was committed as (the head if a no-op)"
    )
    restored: int = Field(description="The version whose content the head now has")


def _label_json(label: Any) -> dict[str, Any]:
    return {"name": label.name, "v": label.version, "user": label.user, "time": label.time}


def add_history_routes(
    router: APIRouter,
    tandem: "Context",
    principal: Callable[..., Awaitable[Principal]],
    checked_doc: CheckDoc,
    submit: Submit,
    reply: Reply,
) -> None:
    Auth = Annotated[Principal, Depends(principal)]

    def history() -> History:
        if tandem.history is None:
            raise TandemError("this store keeps no history archive")
        return tandem.history

    async def version_of(doc: str, v: int | None, label: str | None) -> int:
        if v is not None and label is not None:
            raise VersionError("give 'v' or 'label', not both")
        if label is not None:
            return (await history().label(doc, label)).version
        return await history().head(doc) if v is None else v

    @router.get(
        "/docs/{doc:path}/changes",
        response_model=ChangesOut,
        summary="What changed between two versions: the composed delta and its users",
    )
    async def get_changes(
        doc: str,
        who: Auth,
        from_: Annotated[int, Query(alias="from", ge=0)],
        to: Annotated[int | None, Query(ge=0)] = None,
    ) -> Any:
        try:
            checked_doc(doc, who, False)
            upto = await history().head(doc) if to is None else to
            changes = await history().changes(doc, from_, upto)
        except TandemError as error:
            return reply(error)
        return {
            "from": changes.from_version,
            "to": changes.to_version,
            "delta": changes.delta.to_json(),
            "users": changes.users,
        }

    @router.get(
        "/docs/{doc:path}/authors",
        response_model=AuthorsOut,
        summary="Who inserted each character, as runs, at a version (default: the head)",
    )
    async def get_authors(
        doc: str,
        who: Auth,
        v: Annotated[int | None, Query(ge=0)] = None,
        label: str | None = None,
    ) -> Any:
        try:
            checked_doc(doc, who, False)
            version = await version_of(doc, v, label)
            authorship = await history().authors_at(doc, version)
        except TandemError as error:
            return reply(error)
        return {"v": version, "authors": authorship.to_json()}

    @router.get("/docs/{doc:path}/labels", response_model=LabelsOut, summary="Named versions")
    async def get_labels(doc: str, who: Auth) -> Any:
        try:
            checked_doc(doc, who, False)
            labels = await history().labels(doc)
        except TandemError as error:
            return reply(error)
        return {"labels": [_label_json(label) for label in labels]}

    @router.post("/docs/{doc:path}/labels", response_model=LabelOut, summary="Name a version")
    async def post_label(doc: str, body: LabelIn, who: Auth) -> Any:
        try:
            checked_doc(doc, who, True)
            version = await history().head(doc) if body.v is None else body.v
            label = await history().set_label(doc, body.name, version, who.user, time.time())
        except TandemError as error:
            return reply(error)
        return _label_json(label)

    @router.delete("/docs/{doc:path}/labels", response_model=LabelsOut, summary="Remove a label")
    async def delete_label(doc: str, who: Auth, name: str) -> Any:
        try:
            checked_doc(doc, who, True)
            await history().delete_label(doc, name)
            labels = await history().labels(doc)
        except TandemError as error:
            return reply(error)
        return {"labels": [_label_json(label) for label in labels]}

    @router.post(
        "/docs/{doc:path}/restore",
        response_model=RestoreOut,
        summary="Turn the head back into a version's content, as one new op by you",
    )
    async def post_restore(doc: str, body: RestoreIn, who: Auth) -> Any:
        try:
            checked_doc(doc, who, True)
            if body.v is None and body.label is None:
                raise VersionError("give the version to restore as 'v' (or 'label')")
            version = await version_of(doc, body.v, body.label)
            target = await history().document_at(doc, version)
            session = await tandem.documents.open(doc)
            base = session.committed_version
            op = diff(session.committed_document, target)
            committed = await submit(doc, op, base, who) if op.ops else base
        except TandemError as error:
            return reply(error)
        return {"v": committed, "restored": version}
