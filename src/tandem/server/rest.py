"""REST routes under ``/api``: read documents and history, submit ops, list documents.

(No ``from __future__ import annotations`` here: FastAPI reads the route
signatures' annotations at runtime, and ``Auth`` is local to the builder.)

Bearer-token auth with the same JWT rules as ``/collab``. ``POST`` submits go
through the same session, sequencer and durable commit as WebSocket ops and
return only once the op is committed.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from tandem.auth import Principal
from tandem.errors import (
    AuthError,
    AuthorizeFailed,
    Forbidden,
    HistoryUnavailable,
    NotFound,
    ProtocolError,
    ReadOnly,
    Revoked,
    StorageError,
    TandemError,
    TokenExpired,
    VersionError,
)
from tandem.ot.delta import Delta
from tandem.protocol import Submit, parse_message, validate_client_id, validate_doc_id
from tandem.server.history_rest import add_history_routes
from tandem.session.delivery import Member

if TYPE_CHECKING:
    from tandem.server.context import Context

__all__ = ["build_rest_router", "error_response"]


class BodyTooLarge(ProtocolError):
    """A REST body over ``max_frame_bytes`` (413)."""

    code = "ERR_FRAME_TOO_LARGE"


_STATUS = {
    BodyTooLarge: 413,
    HistoryUnavailable: 410,
    NotFound: 404,
    AuthError: 401,
    TokenExpired: 401,
    Forbidden: 403,
    ReadOnly: 403,
    Revoked: 403,
    StorageError: 503,
    AuthorizeFailed: 503,
}


def error_response(error: TandemError) -> JSONResponse:
    status = 400
    for kind in type(error).__mro__:
        if kind in _STATUS:
            status = _STATUS[kind]
            break
    body: dict[str, Any] = {"code": error.code, "message": error.message, **error.details()}
    oldest = getattr(error, "oldest", None)
    if isinstance(oldest, int):
        body["oldest"] = oldest  # HistoryCompacted: the oldest version that can be read
    return JSONResponse(body, status_code=status)


class DocumentOut(BaseModel):
    v: int = Field(description="Version of the document")
    content: list[dict[str, Any]] = Field(description="The document as a delta of inserts")
    text: str = Field(description="Plain text, formatting dropped")


class OpOut(BaseModel):
    v: int
    op: list[dict[str, Any]]
    client: str
    user: str
    seq: int | None
    time: float


class OpsOut(BaseModel):
    ops: list[OpOut]
    v: int = Field(description="Head version of the document")


class SubmitIn(BaseModel):
    op: list[dict[str, Any]] | None = Field(None, description="A delta; or use type/pos/... sugar")
    v: int | None = Field(None, description="Base version; default: the head")
    seq: int | None = Field(None, description="Sequence number for idempotent retries")
    client: str | None = Field(None, description="Client id for idempotent retries")
    type: str | None = Field(None, description="'op' or a simple edit: insert, delete, format")
    pos: int | None = None
    text: str | None = None
    length: int | None = None
    attributes: dict[str, Any] | None = None


class SubmitOut(BaseModel):
    v: int = Field(description="Version the op was committed as (or the head, for a no-op)")


class DocInfoOut(BaseModel):
    doc: str
    v: int
    updated: float


class _RestPeer:
    """The author of a REST submit: collects the single ack or error."""

    def __init__(self, client: str, principal: Principal) -> None:
        self.client = client
        self.user = principal.user
        self.name = principal.name
        self.principal = principal
        self.messages: list[str] = []

    def send(self, message: str) -> None:
        self.messages.append(message)


def bearer_principal(tandem: "Context") -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the ``Principal`` of the request's ``Authorization: Bearer``.

    A bad token is 401; a revoked one 403 (``ERR_REVOKED``).
    """

    async def principal(authorization: Annotated[str | None, Header()] = None) -> Principal:
        try:
            if not authorization or not authorization.lower().startswith("bearer "):
                raise AuthError("send 'Authorization: Bearer <token>'")
            return await tandem.admission.authenticate(authorization[7:].strip())
        except TandemError as error:
            tandem.metrics.error(error.code)
            raise HTTPException(
                status_code=403 if isinstance(error, Revoked) else 401,
                detail={"code": error.code, "message": error.message},
                headers={"WWW-Authenticate": "Bearer"},
            ) from None

    return principal


async def _read_body(request: Request, limit: int) -> SubmitIn:
    """The submit in ``request``'s body, read only up to ``limit`` bytes.

    Called once the token is verified: an unauthenticated client never makes the
    server read (or hold) its body. Larger bodies are refused with 413 unread.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    try:
        return SubmitIn.model_validate_json(b"".join(chunks))
    except ValidationError as exc:
        raise ProtocolError(
            f"not a valid submit: {exc.errors()[0].get('msg', 'invalid')}"
        ) from None


def build_rest_router(tandem: "Context") -> APIRouter:
    router = APIRouter(prefix="/api", tags=["documents"])
    Auth = Annotated[Principal, Depends(bearer_principal(tandem))]

    def checked_doc(doc: str, who: Principal, write: bool = False) -> str:
        validate_doc_id(doc)
        if write:
            who.require_write(doc)
        else:
            who.require_read(doc)
        return doc

    @router.get("/docs", response_model=list[DocInfoOut], summary="Documents the token may read")
    async def list_docs(who: Auth) -> Any:
        infos = await tandem.store.list_documents()
        return [
            {"doc": info.doc, "v": info.version, "updated": info.updated}
            for info in infos
            if who.can_read(info.doc)
        ]

    @router.get(
        "/docs/{doc:path}/ops", response_model=OpsOut, summary="Committed ops after a version"
    )
    async def get_ops(
        doc: str,
        who: Auth,
        from_: Annotated[int, Query(alias="from", ge=0, le=(1 << 63) - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> Any:
        try:
            checked_doc(doc, who)
        except TandemError as error:
            return error_response(error)
        head = await tandem.store.head(doc)
        records = await tandem.store.get_ops(doc, from_, min(head, from_ + limit))
        return {
            "v": head,
            "ops": [
                {
                    "v": r.version,
                    "op": r.op.to_json(),
                    "client": r.client_id.split("@", 1)[0],
                    "user": r.user,
                    "seq": r.seq,
                    "time": r.time,
                }
                for r in records
            ],
        }

    async def submit(doc: str, op: Delta, base_version: int, who: Principal) -> int:
        """Commit ``op`` as ``who`` through the document's session; the version it got."""
        session = await tandem.documents.open(doc)
        peer = _RestPeer("rest", who)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def finished(version: int) -> None:
            if not done.done():
                done.set_result(version)

        await session.submit(Member(peer, "write"), op, base_version, None, done=finished)
        version = await done
        if version < 0:
            raise StorageError("the op could not be stored; retry")
        return version

    def reply(error: TandemError) -> JSONResponse:
        tandem.metrics.error(error.code)
        return error_response(error)

    add_history_routes(router, tandem, bearer_principal(tandem), checked_doc, submit, reply)

    @router.get("/docs/{doc:path}", response_model=DocumentOut, summary="A document's content")
    async def get_doc(
        doc: str,
        who: Auth,
        v: Annotated[int | None, Query(ge=0, description="A past version (default: now)")] = None,
        label: Annotated[str | None, Query(description="Or a labelled version")] = None,
    ) -> Any:
        try:
            checked_doc(doc, who)
            if v is not None or label is not None:
                history = tandem.history
                if history is None:
                    raise TandemError("this store keeps no history archive")
                if label is not None and v is not None:
                    raise VersionError("give 'v' or 'label', not both")
                version = v if label is None else (await history.label(doc, label)).version
                assert version is not None
                past = await history.document_at(doc, version)
                return {"v": version, "content": past.to_delta().to_json(), "text": past.text()}
            session = await tandem.documents.open(doc)
        except TandemError as error:
            return reply(error)
        content = session.committed_document
        return {
            "v": session.committed_version,
            "content": content.to_delta().to_json(),
            "text": content.text(),
        }

    @router.post(
        "/docs/{doc:path}/ops",
        response_model=SubmitOut,
        summary="Submit an op; returns once it is durably committed",
        # The body is read by hand, after the token is checked and within a size limit;
        # this tells OpenAPI what it is.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SubmitIn.model_json_schema()}},
            }
        },
    )
    async def post_op(doc: str, who: Auth, request: Request) -> Any:
        try:
            checked_doc(doc, who, write=True)
            body = await _read_body(request, tandem.settings.max_frame_bytes)
            raw = body.model_dump(exclude_none=True)
            raw.setdefault("type", "op")
            raw["doc"] = doc
            message = parse_message(raw, max_components=tandem.settings.max_op_components)
            if not isinstance(message, Submit):
                raise ProtocolError("only op, insert, delete and format may be posted")
            client = validate_client_id(body.client) if body.client else "rest"
            session = await tandem.documents.open(doc)
            peer = _RestPeer(client, who)
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

            def finished(version: int) -> None:
                if not done.done():
                    done.set_result(version)

            await session.submit(
                Member(peer, "write"),
                message.op,
                message.base_version,
                message.seq if body.client else None,
                done=finished,
            )
            version = await done
            if version < 0:
                raise StorageError("the op could not be stored; retry")
        except TandemError as error:
            tandem.metrics.error(error.code)
            return error_response(error)
        return {"v": version}

    return router
