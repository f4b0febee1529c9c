"""The ``/yjs/{doc}`` WebSocket: y-protocols (y-websocket) clients on Tandem documents.

A standard Yjs client — ``new WebsocketProvider("ws://host/yjs", doc, ydoc,
{params: {token}})`` — binds ``ydoc.getText("content")`` and edits the same
document as the OT clients. Auth follows ``/collab``: a JWT in the ``token``
query parameter (or ``Authorization`` header / ``bearer.`` subprotocol);
without read access the socket closes with 4403, a bad token with 4401. A
read-only client may sync and show awareness; its updates are refused (it is
told once, with an Auth/permission-denied frame).

Frames (see ``tandem.merge.yproto``): the server opens with SyncStep1 and the
current awareness; it answers SyncStep1 with SyncStep2 from the replica; an
update (SyncStep2 or Update) is merged by the session, committed like an OT op
and echoed to every Yjs peer — its author included — once durable; awareness
is relayed to the other Yjs peers and cleared when a connection closes;
QueryAwareness is answered with every known state. An empty awareness frame
every 15 s keeps y-websocket's 30 s silence timeout from firing.

Owns the socket loop only: decisions live in ``tandem.replicas`` and
``tandem.documents``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from tandem.auth import extract_token
from tandem.documents import DocumentSession, Member
from tandem.errors import AuthError, LimitExceeded, TandemError
from tandem.merge import yproto
from tandem.protocol import validate_doc_id
from tandem.replicas import ReplicaRefused

if TYPE_CHECKING:
    from tandem.replicas import ReplicaHost
    from tandem.server.app import Tandem

__all__ = ["YjsConnection", "serve_yjs"]

log = logging.getLogger("tandem.yjs")

#: Keep-alive period: y-websocket reconnects after 30 s without a message.
KEEPALIVE = 15.0
_EMPTY_AWARENESS = yproto.awareness_message(yproto.encode_awareness([]))


class YjsConnection:
    """One Yjs socket: a ``YjsPeer`` of one document, with a bounded outbound queue."""

    def __init__(self, websocket: WebSocket, user: str, name: str, limit: int) -> None:
        self.websocket = websocket
        self.client = "y" + secrets.token_hex(6)
        self.user = user
        self.name = name
        self._queue: deque[bytes] = deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self._closing: tuple[int, str] | None = None
        #: Yjs client ids this socket announced in awareness (removed on close).
        self.awareness_clients: set[int] = set()
        #: The document's replica host, once joined (bridges OT presence to awareness).
        self.host: ReplicaHost | None = None
        self.denied = False

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def send(self, message: str) -> None:
        """OT messages (JSON): ``presence`` becomes awareness, the rest is not for Yjs."""
        if self.host is None or '"presence"' not in message:
            return
        wire = orjson.loads(message)
        if not isinstance(wire, dict) or wire.get("type") != "presence":
            return
        payload = self.host.awareness_from_presence(wire)
        if payload is not None:
            self.send_bytes(yproto.awareness_message(payload))

    def send_bytes(self, frame: bytes) -> None:
        if self._closing is not None:
            return
        if len(self._queue) >= self._limit:
            self.close(4408, "slow consumer")
            return
        self._queue.append(frame)
        self._ready.set()

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = (code, reason)
            self._queue.clear()
            self._ready.set()

    async def writer(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), KEEPALIVE)
            except TimeoutError:
                self._queue.append(_EMPTY_AWARENESS)
            self._ready.clear()
            while self._queue:
                await self.websocket.send_bytes(self._queue.popleft())
            if self._closing is not None:
                code, reason = self._closing
                with contextlib.suppress(Exception):
                    await self.websocket.close(code, reason)
                return


async def serve_yjs(websocket: WebSocket, tandem: Tandem, doc: str) -> None:
    """Run one ``/yjs/{doc}`` connection from handshake to close."""
    token, subprotocol = extract_token(
        websocket.query_params.get("token"),
        websocket.headers.get("authorization"),
        websocket.scope.get("subprotocols") or [],
    )
    await websocket.accept(subprotocol=subprotocol)
    try:
        if not token:
            raise AuthError("a token is required (query 'token', Authorization header)")
        principal = tandem.authenticator.verify(token)
        doc = validate_doc_id(doc)
        permission = principal.permission(doc)
    except TandemError as error:
        tandem.metrics.error(error.code)
        with contextlib.suppress(Exception):
            await websocket.send_bytes(yproto.auth_denied(error.message))
            await websocket.close(error.close_code or 4400, error.code)
        return
    if permission is None:
        with contextlib.suppress(Exception):
            await websocket.send_bytes(yproto.auth_denied(f"no access to {doc!r}"))
            await websocket.close(4403, "ERR_FORBIDDEN")
        return
    ip = websocket.client.host if websocket.client else "unknown"
    try:
        tandem.connections.acquire(principal.user, ip)
    except LimitExceeded as error:
        with contextlib.suppress(Exception):
            await websocket.close(error.close_code or 4429, error.code)
        return
    connection = YjsConnection(
        websocket, principal.user, principal.name, tandem.settings.send_queue_frames
    )
    tandem.metrics.connection_opened("yjs")
    writer = asyncio.create_task(connection.writer(), name="tandem-yjs-writer")
    session: DocumentSession | None = None
    try:
        session = await tandem.documents.open(doc)
        member = Member(connection, permission)
        session.members[connection] = member
        session.idle_since = None
        host = session.replicas
        host.peers.add(connection)
        connection.host = host
        replica = await host.ready()
        connection.send_bytes(yproto.sync_step1(replica.state_vector()))
        if host.awareness:
            connection.send_bytes(yproto.awareness_message(host.awareness_payload()))
        bridged = host.bridged_presence()
        if bridged is not None:
            connection.send_bytes(yproto.awareness_message(bridged))
        while not writer.done():
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            frame = message.get("bytes")
            if frame is None:
                continue  # y-websocket sends binary frames only
            await _handle(connection, session, member, frame)
    except (WebSocketDisconnect, RuntimeError):
        pass
    except yproto.ProtocolError as exc:
        connection.close(4400, f"malformed frame: {exc}"[:120])
    except TandemError as error:
        log.info("yjs connection to %s closed: %s", doc, error)
        connection.close(1011, error.code)
    finally:
        if session is not None:
            session.replicas.peers.discard(connection)
            removed = session.replicas.forget_awareness(connection.awareness_clients)
            if removed:
                frame = yproto.awareness_message(removed)
                for peer in session.replicas.peers:
                    peer.send_bytes(frame)
            session.leave(connection)
        tandem.connections.release(principal.user, ip)
        tandem.metrics.connection_closed("yjs")
        connection.close(1000, "bye")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, 5)


async def _handle(
    connection: YjsConnection, session: DocumentSession, member: Member, frame: bytes
) -> None:
    host = session.replicas
    message = yproto.parse(frame)
    if message.kind == yproto.SYNC:
        if message.sub == yproto.SYNC_STEP1:
            replica = await host.ready()
            connection.send_bytes(yproto.sync_step2(replica.diff(message.payload)))
        elif member.permission != "write":
            if not connection.denied:
                connection.denied = True
                connection.send_bytes(yproto.auth_denied("read-only access: updates are refused"))
        else:
            try:
                await host.submit(member, message.payload)
            except ReplicaRefused as exc:
                # Missing dependencies (or an update Yrs cannot take): nothing of it
                # is kept; ask for everything we lack, the client's answer carries
                # the missing changes and this one again.
                log.info("yjs update on %s refused: %s", session.doc, exc)
                replica = await host.ready()
                connection.send_bytes(yproto.sync_step1(replica.state_vector()))
    elif message.kind == yproto.AWARENESS:
        entries = yproto.decode_awareness(message.payload)
        connection.awareness_clients.update(entry.client for entry in entries)
        fresh = [
            entry
            for entry in entries
            if entry.client not in host.awareness
            or host.awareness[entry.client].clock <= entry.clock
        ]
        host.remember_awareness(entries)
        for peer in host.peers:
            if peer is not connection:
                peer.send_bytes(frame)
        if fresh:
            host.presence_from_awareness(member, fresh, time.monotonic())
    elif message.kind == yproto.QUERY_AWARENESS:
        if host.awareness:
            connection.send_bytes(yproto.awareness_message(host.awareness_payload()))
        bridged = host.bridged_presence()
        if bridged is not None:
            connection.send_bytes(yproto.awareness_message(bridged))
    session.touch(connection, time.monotonic())
