"""The admin API under ``/api/admin``: documents, revocations and live sessions.

Every route needs a token with the admin claim (``Settings.jwt_admin_claim``,
``"admin": true``); any other token gets 403 ``ERR_FORBIDDEN``.

(No ``from __future__ import annotations``: FastAPI reads the annotations at runtime.)
"""

import secrets
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from tandem.auth import Principal
from tandem.errors import ConflictError, Forbidden, TandemError
from tandem.ot.document import Document
from tandem.protocol import validate_doc_id
from tandem.revocation import Revocation
from tandem.server.rest import bearer_principal

if TYPE_CHECKING:
    from tandem.server.context import Context

__all__ = ["build_admin_router"]

T = TypeVar("T")


class CopyIn(BaseModel):
    source: str = Field(alias="from")
    target: str = Field(alias="to")


class RevocationIn(BaseModel):
    """Exactly one of ``jti`` and ``user``; ``docs`` (a glob) only with ``user``."""

    jti: str | None = Field(default=None, max_length=256)
    user: str | None = Field(default=None, max_length=256)
    docs: str | None = Field(default=None, max_length=256)
    reason: str = Field(default="", max_length=256)
    #: When every covered token has expired (Unix seconds);
    #: default now + jwt_max_token_lifetime.
    expires: float | None = None


def build_admin_router(tandem: "Context") -> APIRouter:
    router = APIRouter(prefix="/api/admin", tags=["admin"])
    user_of = bearer_principal(tandem)

    async def admin(who: Annotated[Principal, Depends(user_of)]) -> Principal:
        if not who.admin:
            error = Forbidden("this needs an admin token")
            tandem.metrics.error(error.code)
            raise HTTPException(403, detail={"code": error.code, "message": error.message})
        return who

    Admin = Annotated[Principal, Depends(admin)]

    @router.post(
        "/revocations", status_code=201, summary="Revoke a token, a user, or a user's documents"
    )
    async def revoke(body: RevocationIn, who: Admin) -> Any:
        settings, now = tandem.settings, time.time()
        expires = body.expires
        if expires is None and not (settings.jwt_allow_no_exp or settings.dev_mode):
            limit = settings.jwt_max_token_lifetime
            expires = now + limit + settings.jwt_leeway if limit > 0 else None
        try:
            revocation = Revocation(
                id=secrets.token_hex(12),
                created=now,
                expires=expires,
                jti=body.jti,
                user=body.user,
                docs=body.docs,
                reason=body.reason or f"revoked by {who.user}",
            )
        except ValueError as exc:
            raise HTTPException(
                422, detail={"code": "ERR_BAD_MESSAGE", "message": str(exc)}
            ) from None
        try:
            await tandem.revocation_service.revoke(revocation)
        except TandemError as error:
            raise HTTPException(
                503, detail={"code": error.code, "message": error.message}
            ) from None
        return revocation_out(revocation)

    @router.get("/revocations", summary="Revocations in force")
    async def revocations(who: Admin) -> Any:
        return [revocation_out(r) for r in tandem.revocations.all()]

    @router.get("/docs", summary="Stored documents: version, last activity, size, clients")
    async def list_docs(
        who: Admin, prefix: str = "", limit: int = Query(1000, ge=1, le=100_000)
    ) -> Any:
        clients = Counter(doc for live in tandem.sessions for doc in live.docs())
        out = []
        for info in await tandem.store.list_documents():
            if not info.doc.startswith(prefix):
                continue
            loaded = tandem.documents.sessions.get(info.doc)
            out.append(
                {
                    "doc": info.doc,
                    "version": info.version,
                    "updated": info.updated,
                    "size": None if loaded is None else len(loaded.committed_document),
                    "clients": clients[info.doc],
                }
            )
            if len(out) >= limit:
                break
        return out

    @router.get("/docs/{doc:path}", summary="One document: size, version, history, sessions")
    async def show_doc(doc: str, who: Admin) -> Any:
        doc = _valid(doc)
        loaded = await tandem.store.load(doc)
        if not loaded.ops and loaded.snapshot is None:
            raise HTTPException(
                404, detail={"code": "ERR_NOT_FOUND", "message": "no such document"}
            )
        document = Document(loaded.snapshot.content) if loaded.snapshot else Document()
        for record in loaded.ops:
            document = document.apply(record.op)
        sessions = [live.describe() for live in tandem.sessions if doc in live.docs()]
        last = loaded.ops[-1].time if loaded.ops else None
        return {
            "doc": doc,
            "version": loaded.version,
            "updated": last,
            "size": len(document),
            "snapshot": None if loaded.snapshot is None else loaded.snapshot.version,
            "clients": len(sessions),
            "sessions": sessions,
            "rows": await tandem.document_control.admin.rows(doc),
        }

    @router.delete("/docs/{doc:path}", summary="Delete (tombstone) or erase a document")
    async def delete_doc(doc: str, who: Admin, erase: bool = False) -> Any:
        doc = _valid(doc)
        tombstone = await _stored(tandem.document_control.delete(doc, who.user, erase=erase))
        return {
            "doc": doc,
            "erased": erase,
            "tombstone": None if tombstone is None else asdict(tombstone),
        }

    @router.post("/docs/copy", summary="Copy a document to a new id")
    async def copy_doc(body: CopyIn, who: Admin) -> Any:
        source, target = _valid(body.source), _valid(body.target)
        await _stored(tandem.document_control.copy(source, target))
        return {"from": source, "to": target}

    @router.post("/docs/rename", summary="Rename a document")
    async def rename_doc(body: CopyIn, who: Admin) -> Any:
        source, target = _valid(body.source), _valid(body.target)
        await _stored(tandem.document_control.rename(source, target))
        return {"from": source, "to": target}

    @router.get("/tombstones", summary="Deleted documents' markers")
    async def tombstones(who: Admin) -> Any:
        return [asdict(t) for t in await tandem.document_control.admin.tombstones()]

    @router.get("/sessions", summary="Live connections on this node")
    async def sessions(who: Admin) -> Any:
        return [session.describe() for session in tandem.sessions]

    @router.delete("/sessions/{session_id}", status_code=204, summary="Disconnect a session")
    async def disconnect(session_id: str, who: Admin) -> None:
        session = tandem.sessions.get(session_id)
        if session is None:
            raise HTTPException(404, detail={"code": "ERR_NOT_FOUND", "message": "no such session"})
        tandem.sessions.remove(session)
        session.end(Forbidden(f"disconnected by an administrator ({who.user})"))

    return router


def _valid(doc: str) -> str:
    try:
        return validate_doc_id(doc)
    except TandemError as error:
        raise HTTPException(400, detail={"code": error.code, "message": error.message}) from None


async def _stored(work: Awaitable[T]) -> T:
    """Await a store change; a conflict is 409, a storage failure 503."""
    try:
        return await work
    except ConflictError as error:
        raise HTTPException(409, detail={"code": error.code, "message": error.message}) from None
    except TandemError as error:
        raise HTTPException(503, detail={"code": error.code, "message": error.message}) from None


def revocation_out(revocation: Revocation) -> dict[str, Any]:
    return {
        "id": revocation.id,
        "created": revocation.created,
        "expires": revocation.expires,
        "jti": revocation.jti,
        "user": revocation.user,
        "docs": revocation.docs,
        "reason": revocation.reason,
    }
