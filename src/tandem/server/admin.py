"""The admin API under ``/api/admin``: revocations and live sessions.

Every route needs a token with the admin claim (``Settings.jwt_admin_claim``,
``"admin": true``); any other token gets 403 ``ERR_FORBIDDEN``.

(No ``from __future__ import annotations``: FastAPI reads the annotations at runtime.)
"""

import secrets
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from tandem.auth import Principal
from tandem.errors import Forbidden, TandemError
from tandem.revocation import Revocation
from tandem.server.rest import bearer_principal

if TYPE_CHECKING:
    from tandem.server.app import Tandem

__all__ = ["build_admin_router"]


class RevocationIn(BaseModel):
    """Exactly one of ``jti`` and ``user``; ``docs`` (a glob) only with ``user``."""

    jti: str | None = Field(default=None, max_length=256)
    user: str | None = Field(default=None, max_length=256)
    docs: str | None = Field(default=None, max_length=256)
    reason: str = Field(default="", max_length=256)
    #: When every covered token has expired (Unix seconds);
    #: default now + jwt_max_token_lifetime.
    expires: float | None = None


def build_admin_router(tandem: "Tandem") -> APIRouter:
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
