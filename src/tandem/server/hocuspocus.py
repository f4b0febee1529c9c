"""The ``/hocuspocus`` WebSocket: ``@hocuspocus/provider`` 4.x clients on Tandem documents.

The provider wraps y-protocols in an envelope (``tandem.merge.hocuspocus``):
each frame names its document, so one socket carries many documents, and a
document is opened by an Auth message with a JWT, not by the URL::

    const socket = new HocuspocusProviderWebsocket({ url: "ws://host/hocuspocus" });
    new HocuspocusProvider({ websocketProvider: socket, name: "notes/a", token, document: ydoc });

Per routing key (document name, or ``name\\0sessionId``) the socket holds a
``HocuspocusLink``: a ``YjsLink`` — the same per-document logic as ``/yjs``
— whose frames are wrapped in the envelope. What the envelope adds:

* **Auth.** A Token message is verified like ``/collab`` and ``/yjs`` tokens
  (``Authenticator``, then the document's permission). Success: Authenticated
  with scope ``read-write`` or ``readonly``, then the document opens. A bad,
  expired or forbidden token: PermissionDenied with ``"<code>: <message>"``;
  nothing opens, the socket stays for its other documents. A Token for an open
  document re-authenticates it (the provider answers our token request sent
  ``token_expiry_warning`` seconds before expiry); if the token lapses
  unrenewed, or a renewal fails, the document gets PermissionDenied and Close.
  Frames for a document that has not authenticated are dropped; the first one
  is answered with PermissionDenied so the mistake is visible (for the first
  ``TOLD_KEYS`` keys of a socket; nothing is kept per key beyond that).
* **SyncStatus.** The provider counts unsynced changes and decrements on
  SyncStatus(1). Each SyncStep2/Update is answered with SyncStatus(1) only
  once the change is stored (or, when it changed nothing, once everything
  merged before it is stored; on a node that does not own the document, once
  the owner stored it and this node heard so); a read-only client's Update gets SyncStatus(0),
  its SyncStep2 SyncStatus(1) when it brings nothing new (Hocuspocus' rule,
  so a reader is not left "unsynced"). An update with missing dependencies
  gets SyncStatus(0) and a SyncStep1 (the client resends). A write that could
  not be stored gets SyncStatus(0) and the socket closes with 1011, so the
  provider reconnects and syncs again.
* **Sync handshake.** As Hocuspocus does, a SyncStep1 is answered with
  SyncStep2 *and* our SyncStep1, whose SyncStep2 answer settles the change
  the provider counts for every (re)sync.
* **Stateless** to the provider: the reason the ``authorize`` hook rejected one
  of its updates (a JSON ``error`` message; the provider's ``onStateless``).
* **Close** from the provider leaves that document; Ping (one byte, no
  routing key) is answered with Pong, and we Ping every 15 s (the provider
  drops a socket after 30 s of silence). Stateless, SyncStatus,
  BroadcastStateless and unknown types are ignored.

Errors: a frame whose routing key or type cannot be read closes the socket
with 4400 (it cannot be attributed to a document); a malformed body closes
that document only (Close with the reason). A socket that authenticates no
document within ``auth_deadline`` seconds closes with 4408. The socket counts
against the per-address cap from the moment it is accepted, and against the
per-user cap once, for the first user that authenticates.

Owns the socket and the envelope's bookkeeping; the Yjs decisions are
``YjsLink``'s, the rest ``tandem.session``'s (``session.yjs`` for the Yjs side).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect

from tandem.auth import Principal
from tandem.errors import (
    Forbidden,
    JoinLimitExceeded,
    LimitExceeded,
    Rejected,
    TandemError,
    TokenExpired,
)
from tandem.merge import hocuspocus as hp
from tandem.merge import yproto
from tandem.merge.replica import Replica
from tandem.merge.updates import DeleteSet, delete_set, holds_update
from tandem.protocol import encode, error_message, validate_doc_id
from tandem.server.admission import Slot, enter_socket
from tandem.server.sessions import LiveSession, OneDocument
from tandem.server.yjs import YjsLink
from tandem.server.yjs_socket import Outbox, binary_frames, rate_limited, settle

if TYPE_CHECKING:
    from tandem.server.context import Context

__all__ = ["HocuspocusLink", "HocuspocusSocket", "serve_hocuspocus"]

log = logging.getLogger("tandem.hocuspocus")

#: Routing keys a socket is told to authenticate (once each); past that many, frames
#: for unauthenticated keys are dropped without a word: an unauthenticated client
#: holds no state per key.
TOLD_KEYS = 16


#: Each replica's delete set, for the version it was read at: a reader's SyncStep2
#: is checked against it in time proportional to the message, not the document
#: (the document is read once per version, however many readers ask).
_DELETED: weakref.WeakKeyDictionary[Replica, tuple[int, tuple[dict[int, int], DeleteSet]]] = (
    weakref.WeakKeyDictionary()
)


def _deleted(replica: Replica) -> tuple[dict[int, int], DeleteSet]:
    """The replica's state vector and delete set, read once per version."""
    cached = _DELETED.get(replica)
    if cached is None or cached[0] != replica.version:
        known = (_decode_sv(replica.state_vector()), delete_set(replica.state()))
        cached = (replica.version, known)
        _DELETED[replica] = cached
    return cached[1]


def _decode_sv(data: bytes) -> dict[int, int]:
    decoder = yproto.Decoder(data)
    return {decoder.var_uint(): decoder.var_uint() for _ in range(decoder.var_uint())}


class HocuspocusLink(YjsLink):
    """One routing key of a Hocuspocus socket: a ``YjsLink`` inside the envelope."""

    opens_sync = False  # the provider opens with SyncStep1; we answer with both steps
    principal: Principal

    def __init__(self, socket: HocuspocusSocket, key: str, principal: Principal) -> None:
        super().__init__(principal.user, principal.name)
        self.socket = socket
        self.key = key
        self.principal = principal
        self.closed = False
        #: In the session registry while the document is open.
        self.live: LiveSession | None = None
        self._timers: list[asyncio.TimerHandle] = []
        #: Versions to reach before a write that changed nothing is acknowledged.
        self._deferred: list[int] = []

    def send_bytes(self, frame: bytes) -> None:
        if not self.closed:
            self.socket.outbox.push(hp.wrap(self.key, frame))
        self._release_deferred()

    def answer_sync_step1(self, replica: Replica, state_vector: bytes) -> None:
        super().answer_sync_step1(replica, state_vector)
        self.send_bytes(yproto.sync_step1(replica.state_vector()))

    def refuse_write(self, message: yproto.Message) -> None:
        applied = False
        replica = self.host.replica if self.host is not None else None
        if message.sub == yproto.SYNC_STEP2 and replica is not None:
            try:
                applied = holds_update(*_deleted(replica), message.payload)
            except (ValueError, UnicodeDecodeError) as exc:
                raise yproto.ProtocolError(f"malformed Yjs update: {exc}") from None
        self._status(applied)

    def write_refused(self, message: yproto.Message) -> None:
        self._status(False)

    def write_rejected(self, error: Rejected) -> None:
        """The reason as a Stateless message (``onStateless``): a JSON ``error`` message.

        Not PermissionDenied: the provider would mark the document unauthenticated.
        The write's SyncStatus follows once its revert is stored.
        """
        if not self.closed:
            doc = self.session.doc if self.session is not None else None
            self.socket.outbox.push(hp.stateless(self.key, encode(error_message(error, doc=doc))))

    def write_done(self) -> Callable[[int], None]:
        session = self.session
        assert session is not None
        # Everything merged so far: a write that changed nothing may owe that to
        # changes not yet stored (the same client's earlier frame, or its previous
        # connection's), so it is acknowledged only once those are durable.
        head = session.sequencer.version

        def done(version: int) -> None:
            if self.closed:
                return
            if version < 0:
                self._status(False)
                self.socket.outbox.close(1011, "ERR_STORAGE")
            elif self.session is not None and not self.session.delivery.is_synced(head):
                self._deferred.append(head)
            else:
                self._status(True)
            self._release_deferred()

        return done

    def _release_deferred(self) -> None:
        session = self.session
        if self._deferred and session is not None:
            waiting = [v for v in self._deferred if not session.delivery.is_synced(v)]
            for _ in range(len(self._deferred) - len(waiting)):
                self._status(True)
            self._deferred = waiting

    def _status(self, applied: bool) -> None:
        if not self.closed:
            self.socket.outbox.push(hp.sync_status(self.key, applied))

    # -- token lifetime -----------------------------------------------------------

    def watch_expiry(self, warning: float, now: float) -> None:
        """Ask for a fresh token ``warning`` s before this one expires; close when it does."""
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        left = self.principal.seconds_left(now)
        if left == float("inf"):
            return
        loop = asyncio.get_running_loop()
        self._timers.append(
            loop.call_later(max(left - warning, 0.0), self.socket.push, hp.token_request(self.key))
        )
        self._timers.append(loop.call_later(max(left, 0.0), self._expired))

    def _expired(self) -> None:
        error = TokenExpired("the token expired and was not renewed")
        self.socket.deny(self.key, error)
        self.socket.drop(self, error.code)

    def close(self) -> None:
        """Leave the document; nothing more is sent for this key."""
        for timer in self._timers:
            timer.cancel()
        if self.live is not None:
            self.socket.tandem.sessions.remove(self.live)
            self.live = None
        self.leave()
        self.closed = True


class HocuspocusSocket:
    """One ``/hocuspocus`` socket: its outbox and one link per authenticated routing key."""

    def __init__(self, websocket: WebSocket, tandem: Context, slot: Slot) -> None:
        self.tandem = tandem
        self.outbox = Outbox(websocket, tandem, hp.PING_FRAME)
        self.links: dict[str, HocuspocusLink] = {}
        #: Keys already told to authenticate first (told once).
        self._told: set[str] = set()
        self.ip = slot.ip or ""
        #: The socket's place in the caps; counted for the first user that authenticates.
        self.slot = slot
        #: What its documents' answers cost the rate limit beyond one message each.
        self.owed = 0.0

    def push(self, frame: bytes) -> None:
        self.outbox.push(frame)

    def deny(self, key: str, error: TandemError) -> None:
        self.tandem.metrics.error(error.code)
        self.push(hp.permission_denied(key, f"{error.code}: {error.message}"))

    def drop(self, link: HocuspocusLink, reason: str | None) -> None:
        """Close one document of this socket (with a Close frame unless the client asked)."""
        if self.links.get(link.key) is link:
            del self.links[link.key]
        link.close()
        if reason is not None:
            self.push(hp.close(link.key, reason))

    def revoke(self, link: HocuspocusLink, error: TandemError) -> None:
        """Access ended (a revocation): say why for the document, then close the socket."""
        self.deny(link.key, error)
        self.drop(link, error.code)
        self.outbox.close(error.close_code or 4403, error.code, flush=True)

    def close_all(self) -> None:
        for link in list(self.links.values()):
            self.drop(link, None)

    async def receive(self, frame: bytes) -> None:
        """One binary frame; ``yproto.ProtocolError`` when its head cannot be read."""
        if frame == hp.PING_FRAME:
            self.push(hp.PONG_FRAME)
            return
        if frame == hp.PONG_FRAME:
            return
        envelope = hp.parse(frame)
        link = self.links.get(envelope.key)
        if envelope.kind == hp.AUTH:
            await self._authenticate(envelope, link)
            return
        if link is None:
            told = self._told
            if envelope.key not in told and envelope.kind != hp.CLOSE and len(told) < TOLD_KEYS:
                told.add(envelope.key)
                self.deny(envelope.key, Forbidden("send an Auth message for this document first"))
            return
        if envelope.kind == hp.CLOSE:
            self.drop(link, None)
            return
        inner = envelope.yjs
        if inner is None:
            log.debug("hocuspocus message type %d on %s ignored", envelope.kind, envelope.key)
            return
        try:
            await link.handle(inner)
            self.owed += link.owed
            link.owed = 0.0
        except yproto.ProtocolError as exc:
            self.tandem.metrics.error("ERR_BAD_MESSAGE")
            self.drop(link, f"malformed frame: {exc}"[:120])
        except TandemError as error:
            log.info("hocuspocus document %s closed: %s", envelope.document, error)
            self.tandem.metrics.error(error.code)
            self.drop(link, error.code)

    async def _authenticate(self, envelope: hp.Envelope, link: HocuspocusLink | None) -> None:
        key, settings = envelope.key, self.tandem.settings
        try:
            token = hp.read_token(envelope.body)
        except yproto.ProtocolError as exc:
            self.deny(key, Forbidden(f"malformed Auth message: {exc}"))
            return
        try:
            principal = await self.tandem.admission.authenticate(token)
            doc = validate_doc_id(envelope.document)
            permission = principal.permission(doc)
            if permission is None:
                raise Forbidden(f"no access to {doc!r}")
        except TandemError as error:
            self.deny(key, error)
            if link is not None:  # a failed renewal ends the document
                self.drop(link, error.code)
            return
        now = time.time()
        if link is not None and principal.user != link.principal.user:
            # Renewal keeps the subject: another user's token starts over, not upgrades.
            switched = Forbidden("a renewed token must be for the same user; reconnect instead")
            self.deny(key, switched)
            self.drop(link, switched.code)
            return
        if link is not None:  # renewal: the new token's rights apply from now on
            link.principal = principal
            if link.live is not None:
                link.live.principal = principal
            if link.member is not None:
                link.member.permission = permission
            link.watch_expiry(settings.token_expiry_warning, now)
            self.push(hp.authenticated(key, permission != "write"))
            return
        if len(self.links) >= settings.max_joins_per_connection:
            self.deny(
                key,
                JoinLimitExceeded(
                    f"at most {settings.max_joins_per_connection} documents per connection"
                ),
            )
            return
        try:
            self.slot.identify(principal.user)
        except LimitExceeded as error:
            self.deny(key, error)
            self.outbox.close(error.close_code or 4429, error.code)
            return
        link = HocuspocusLink(self, key, principal)
        self.links[key] = link
        ending = OneDocument(doc, lambda e: self.revoke(link, e))
        session = LiveSession("hocuspocus", principal, self.ip, now, ending)
        link.live = session
        self.tandem.sessions.add(session)
        self._told.discard(key)
        self.push(hp.authenticated(key, permission != "write"))
        try:
            await link.join(self.tandem, doc, permission)
        except TandemError as error:
            log.info("hocuspocus document %s not opened: %s", doc, error)
            self.tandem.metrics.error(error.code)
            self.drop(link, error.code)
            return
        link.watch_expiry(settings.token_expiry_warning, now)


async def serve_hocuspocus(websocket: WebSocket, tandem: Context) -> None:
    """Run one ``/hocuspocus`` connection from handshake to close."""
    admission = tandem.admission
    slot = await enter_socket(websocket, admission)
    if slot is None:
        return
    try:
        await websocket.accept()
        await _run_socket(HocuspocusSocket(websocket, tandem, slot), websocket)
    finally:
        slot.release()


async def _run_socket(socket: HocuspocusSocket, websocket: WebSocket) -> None:
    tandem = socket.tandem
    tandem.metrics.connection_opened("hocuspocus")
    writer = asyncio.create_task(socket.outbox.writer(), name="tandem-hocuspocus-writer")

    def deadline() -> None:
        if socket.slot.user is None:
            socket.outbox.close(4408, "no document authenticated in time")

    timer = asyncio.get_running_loop().call_later(tandem.settings.auth_deadline, deadline)
    bucket = tandem.admission.bucket(time.monotonic(), socket.ip)
    try:
        async for frame in binary_frames(websocket, writer):
            if not bucket.take(time.monotonic()):
                rate_limited(tandem, socket.outbox)
                tandem.admission.bucket_closed(socket.ip, bucket, time.monotonic())
                break
            if frame is None:
                continue
            await socket.receive(frame)
            owed, socket.owed = socket.owed, 0.0
            if owed:
                await settle(bucket, owed)
    except (WebSocketDisconnect, RuntimeError):
        pass
    except yproto.ProtocolError as exc:
        tandem.metrics.error("ERR_BAD_MESSAGE")
        socket.outbox.close(4400, f"malformed frame: {exc}"[:120])
    finally:
        timer.cancel()
        socket.close_all()
        tandem.metrics.connection_closed("hocuspocus")
        socket.outbox.close(1000, "bye")
        await socket.outbox.finish(writer)
