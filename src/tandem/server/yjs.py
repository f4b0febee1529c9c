"""The ``/yjs/{doc}`` WebSocket, and the per-document Yjs logic ``/hocuspocus`` shares.

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
and echoed to every Yjs peer — its author included — once committed (a peer gets
Updates only once it has been sent its SyncStep2, which holds the earlier ones); awareness
is relayed to the other Yjs peers and cleared when a connection closes;
QueryAwareness is answered with every known state. An empty awareness frame
every 15 s keeps y-websocket's 30 s silence timeout from firing.

``YjsLink`` is one Yjs client in one document — join, handle a y-protocols
frame, leave — and is all the two endpoints share: ``YjsConnection`` is a
link with its own socket (``/yjs``), ``tandem.server.hocuspocus`` runs many
links over one socket inside the Hocuspocus envelope. A link's subclass
decides only how frames reach the client and how a write's fate is told.
``Outbox`` is the bounded, single-writer send queue of one socket.

Owns the socket loop only: decisions live in ``tandem.session`` (``session.yjs``
for the Yjs side).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from tandem.auth import Principal
from tandem.errors import Forbidden, Rejected, TandemError, TokenExpired
from tandem.limits import TokenBucket
from tandem.merge import yproto
from tandem.merge.replica import Replica, ReplicaError
from tandem.merge.updates import new_struct_clients
from tandem.protocol import MAX_STATE_BYTES, validate_doc_id
from tandem.server.admission import ANSWER_BYTES_PER_MESSAGE, enter_with_token
from tandem.server.deadlines import deadlines
from tandem.server.sessions import LiveSession, OneDocument
from tandem.server.yjs_socket import Outbox, binary_frames, rate_limited, settle
from tandem.session.delivery import Member
from tandem.session.document import DocumentSession
from tandem.session.incarnation import check_yjs_frame
from tandem.session.yjs import ReplicaRefused

if TYPE_CHECKING:
    from tandem.metrics import Metrics
    from tandem.server.context import Context
    from tandem.session.yjs import ReplicaHost

__all__ = ["Outbox", "YjsConnection", "YjsLink", "binary_frames", "rate_limited", "serve_yjs"]

log = logging.getLogger("tandem.yjs")

#: Client ids one connection may announce in awareness (a Y.Doc has one).
AWARENESS_CLIENTS = 4
#: Yjs client ids one user may create items under, per document.
CLIENT_IDS_PER_USER = 64
#: Answers of at least this size are kept per replica version (``_diff``).
CACHED_DIFF_BYTES = 16 << 10
#: Different state vectors whose answers one replica version keeps.
CACHED_DIFFS = 4

#: Per replica: its version and, for a few state vectors, the SyncStep2 answer at it.
_DIFFS: weakref.WeakKeyDictionary[Replica, tuple[int, dict[bytes, bytes]]] = (
    weakref.WeakKeyDictionary()
)


def _diff(replica: Replica, state_vector: bytes) -> bytes:
    """``replica.diff(state_vector)``, computed once per version for large answers.

    Every joiner of a document asks for the same answer (an empty state vector,
    or the one its last visit left); a client repeating SyncStep1 costs a
    lookup, not a walk of the whole document.
    """
    cached = _DIFFS.get(replica)
    if cached is None or cached[0] != replica.version:
        cached = (replica.version, {})
        _DIFFS[replica] = cached
    answers = cached[1]
    diff = answers.get(state_vector)
    if diff is None:
        diff = replica.diff(state_vector)
        if len(diff) >= CACHED_DIFF_BYTES:
            if len(answers) >= CACHED_DIFFS:
                del answers[next(iter(answers))]
            answers[state_vector] = diff
    return diff


#: Documents whose Yjs client-id bindings are kept (least recently joined dropped first).
BOUND_DOCUMENTS = 10_000

#: Per server (its document manager), per document id: Yjs client id -> the user who
#: first used it. Keyed by the document's id, not its open session, so the bindings
#: outlive the document's unloading (30 s after its last client): a Yjs client keeps
#: its client id across reconnects, and a forger must not get it in between.
_OWNERS: weakref.WeakKeyDictionary[object, OrderedDict[str, dict[int, str]]] = (
    weakref.WeakKeyDictionary()
)


def _owners(server: object, doc: str) -> dict[int, str]:
    """The client-id bindings of ``doc`` on ``server`` (created empty, kept LRU)."""
    documents = _OWNERS.get(server)
    if documents is None:
        documents = _OWNERS[server] = OrderedDict()
    owners = documents.get(doc)
    if owners is None:
        owners = documents[doc] = {}
        while len(documents) > BOUND_DOCUMENTS:
            documents.popitem(last=False)
    else:
        documents.move_to_end(doc)
    return owners


def _decode_sv(data: bytes) -> dict[int, int]:
    decoder = yproto.Decoder(data)
    return {decoder.var_uint(): decoder.var_uint() for _ in range(decoder.var_uint())}


_EMPTY_AWARENESS = yproto.awareness_message(yproto.encode_awareness([]))


class YjsLink:
    """One Yjs client in one document: a ``YjsPeer`` of its session (see module docstring).

    ``join`` adds it to the session and sends the opening frames, ``handle``
    takes one y-protocols frame, ``leave`` removes it and its awareness.
    Subclasses implement ``send_bytes`` and may override how a SyncStep1 is
    answered (``answer_sync_step1``; ``opens_sync`` says whether ``join``
    sends the server's SyncStep1 unasked) and the three ways a write ends:
    ``refuse_write`` (read-only), ``write_done`` (a callback told the
    committed version once stored, or -1) and ``write_refused``.
    """

    #: ``join`` sends the server's SyncStep1 (y-websocket); else only the answer does.
    opens_sync = True
    #: The verified identity (the ``authorize`` hook sees it).
    principal: Principal | None = None

    def __init__(self, user: str, name: str) -> None:
        self.client = "y" + secrets.token_hex(6)
        self.user = user
        self.name = name
        #: Yjs client ids this client announced in awareness (removed on leave).
        self.awareness_clients: set[int] = set()
        #: The document's replica host, once joined (bridges OT presence to awareness).
        self.host: ReplicaHost | None = None
        self.session: DocumentSession | None = None
        self.member: Member | None = None
        self.denied = False
        self._awareness_bucket: TokenBucket | None = None
        self.presence_interval = 0.05
        #: Longest a SyncStep2 waits for a moment with no commit in flight.
        self.stored_wait = 5.0
        #: The server's metrics, once joined (merges counted by outcome).
        self.metrics: Metrics | None = None
        #: The document's Yjs client-id bindings, once joined (``_owners``).
        self.owners: dict[int, str] = {}
        #: Messages of the rate limit the answers since the last frame cost beyond one
        #: (the endpoint charges them: ``admission.settle``).
        self.owed = 0.0

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    # -- what a subclass provides ----------------------------------------------

    def send_bytes(self, frame: bytes) -> None:
        """Queue one y-protocols frame (Sync, Awareness) for this client. Never blocks."""
        raise NotImplementedError

    def refuse_write(self, message: yproto.Message) -> None:
        """A read-only client sent an update: say so once (y-websocket only logs it)."""
        if not self.denied:
            self.denied = True
            self.send_bytes(yproto.auth_denied("read-only access: updates are refused"))

    def write_done(self) -> Callable[[int], None] | None:
        """Called with the version once a write is stored (-1: it was not); None: no callback."""
        return None

    def write_refused(self, message: yproto.Message) -> None:
        """An update the replica could not take; the caller asks for a resync next."""

    def write_rejected(self, error: Rejected) -> None:
        """The ``authorize`` hook rejected an update (its revert is committed and sent).

        y-websocket has no error message: Auth/permission-denied is the one the
        provider reads (it logs the reason); the connection stays.
        """
        self.send_bytes(yproto.auth_denied(f"{error.code}: {error.message}"))

    def answer_sync_step1(self, replica: Replica, state_vector: bytes) -> None:
        """SyncStep2: what a client with ``state_vector`` lacks; ``ProtocolError`` if the
        state vector does not decode (``/yjs`` closes 4400, ``/hocuspocus`` that document)."""
        try:
            _decode_sv(state_vector)
            diff = _diff(replica, state_vector)
        except (ValueError, IndexError, ReplicaError) as exc:
            raise yproto.ProtocolError(f"undecodable state vector: {exc}") from None
        self.owed += len(diff) / ANSWER_BYTES_PER_MESSAGE
        self.send_bytes(yproto.sync_step2(diff))

    # -- the shared per-document logic --------------------------------------------

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

    async def join(self, tandem: Context, doc: str, permission: str) -> None:
        """Open ``doc``, become its member and send SyncStep1 plus the current awareness."""
        session = await tandem.documents.open(doc)
        self.stored_wait = tandem.settings.yjs_stored_wait
        self.presence_interval = tandem.settings.presence_interval
        self.session = session
        self.owners = _owners(tandem.documents, doc)
        self.metrics = tandem.documents.metrics
        self.member = Member(self, permission)
        session.add_member(self.member)
        host = session.replicas
        host.add_peer(self)
        self.host = host
        replica = await host.ready()
        if self.opens_sync:
            self.send_bytes(yproto.sync_step1(replica.state_vector()))
        self._send_awareness(host)

    def _send_awareness(self, host: ReplicaHost) -> None:
        if host.awareness:
            self.send_bytes(yproto.awareness_message(host.awareness_payload()))
        bridged = host.bridged_presence()
        if bridged is not None:
            self.send_bytes(yproto.awareness_message(bridged))

    async def _stored_replica(self, session: DocumentSession, host: ReplicaHost) -> Replica:
        """The replica at a moment when everything it holds is stored.

        The replica takes each op when it is sequenced, before it is stored. A
        SyncStep2 computed while a commit is in flight would hand the client
        items a crash could still lose; the server would then reuse their ids
        for other text and that client could never converge again. So the
        answer waits for a moment with nothing in flight (under a steady
        stream of ops, the next commit that catches up); after
        ``yjs_stored_wait`` seconds without one it answers anyway, and says so.
        """
        deadline = time.monotonic() + self.stored_wait
        while True:
            replica = await host.ready()
            if not session.in_flight():
                return replica
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "%s: SyncStep2 sent with ops still being stored (none caught up in %.0f s)",
                    session.doc,
                    self.stored_wait,
                )
                return replica
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.stored(), remaining)

    async def handle(self, frame: bytes) -> None:
        """One y-protocols frame from the client; ``yproto.ProtocolError`` if malformed."""
        session, member = self.session, self.member
        assert session is not None and member is not None, "join first"
        host = session.replicas
        message = yproto.parse(frame)
        if message.kind == yproto.SYNC:
            check_yjs_frame(session.incarnation, message)
            if message.sub == yproto.SYNC_STEP1:
                replica = await self._stored_replica(session, host)
                self.answer_sync_step1(replica, message.payload)
                host.caught_up(self)  # no await since the SyncStep2: no Update missed
            elif member.permission != "write":
                self.refuse_write(message)
            else:
                self._claim(await host.ready(), message.payload)
                metrics = self.metrics
                assert metrics is not None, "join first"
                try:
                    await host.submit(member, message.payload, done=self.write_done())
                except ReplicaRefused as exc:
                    metrics.merge("yjs", "refused")
                    # Missing dependencies (or an update Yrs cannot take): nothing of it
                    # is kept; ask for everything we lack, the client's answer carries
                    # the missing changes and this one again.
                    log.info("yjs update on %s refused: %s", session.doc, exc)
                    self.write_refused(message)
                    replica = await host.ready()
                    self.send_bytes(yproto.sync_step1(replica.state_vector()))
                except Rejected as exc:
                    metrics.merge("yjs", "refused")
                    metrics.error(exc.code)
                    self.write_rejected(exc)
                except TandemError:
                    metrics.merge("yjs", "failed")
                    raise
                else:
                    metrics.merge("yjs", "ok")
        elif message.kind == yproto.AWARENESS:
            if not self._awareness_allowed(message.payload):
                return
            entries = self._admissible(yproto.decode_awareness(message.payload))
            if not entries:
                return
            self.awareness_clients.update(entry.client for entry in entries)
            frame = yproto.awareness_message(yproto.encode_awareness(entries))
            fresh = [
                entry
                for entry in entries
                if entry.client not in host.awareness
                or host.awareness[entry.client].clock <= entry.clock
            ]
            host.remember_awareness(entries)
            for peer in host.peers:
                if peer is not self:
                    peer.send_bytes(frame)
            if fresh:
                host.presence_from_awareness(member, fresh, time.monotonic())
        elif message.kind == yproto.QUERY_AWARENESS:
            self._send_awareness(host)
        session.touch(self, time.monotonic())

    # -- what a Yjs client may claim ----------------------------------------------

    def _claim(self, replica: Replica, update: bytes) -> None:
        """Bind the client ids ``update`` creates items under to this user; ``Forbidden``
        (nothing applied) if one belongs to another user of this document."""
        state = _decode_sv(replica.state_vector())
        try:
            clients = new_struct_clients(update, state)
        except (ValueError, UnicodeDecodeError) as exc:
            raise yproto.ProtocolError(f"malformed Yjs update: {exc}") from None
        owners = self.owners
        for client in clients:
            self._bind(owners, client)

    def _bind(self, owners: dict[int, str], client: int) -> None:
        owner = owners.get(client)
        if owner == self.user:
            return
        if owner is not None:
            raise Forbidden(
                f"Yjs client id {client} belongs to another user of this document; "
                "the update was refused"
            )
        mine = sum(1 for user in owners.values() if user == self.user)
        if mine >= CLIENT_IDS_PER_USER:
            raise Forbidden(f"at most {CLIENT_IDS_PER_USER} Yjs client ids per user and document")
        owners[client] = self.user

    def _awareness_allowed(self, payload: bytes) -> bool:
        """May this awareness frame be decoded at all? At most one frame per
        ``presence_interval`` (a burst of two seconds' worth), and at most
        ``AWARENESS_CLIENTS`` entries: the rest is dropped unread, so a flood
        of frames or of entries costs a counter, not a JSON parse per entry."""
        now = time.monotonic()
        if self._awareness_bucket is None:
            rate = 1.0 / max(self.presence_interval, 0.001)
            self._awareness_bucket = TokenBucket(rate, int(2 * rate) + 1, now)
        if not self._awareness_bucket.take(now):
            return False
        return yproto.Decoder(payload).var_uint() <= AWARENESS_CLIENTS

    def _admissible(self, entries: list[yproto.AwarenessEntry]) -> list[yproto.AwarenessEntry]:
        """The awareness entries this client may set: its own client ids (at most
        ``AWARENESS_CLIENTS``), each state within ``MAX_STATE_BYTES``; the rest is
        dropped."""
        owners = self.owners
        kept = []
        for entry in entries:
            if entry.state is not None and len(orjson.dumps(entry.state)) > MAX_STATE_BYTES:
                continue
            if entry.client not in self.awareness_clients:
                if len(self.awareness_clients) >= AWARENESS_CLIENTS:
                    continue
                try:
                    self._bind(owners, entry.client)
                except Forbidden:
                    continue
            kept.append(entry)
        return kept

    def leave(self) -> None:
        """Leave the document: awareness removed (and relayed), membership dropped."""
        session = self.session
        if session is None:
            return
        self.session = None
        session.replicas.remove_peer(self)
        removed = session.replicas.forget_awareness(self.awareness_clients)
        if removed:
            frame = yproto.awareness_message(removed)
            for peer in session.replicas.peers:
                peer.send_bytes(frame)
        session.leave(self)
        # The member refers to this link: dropping the link's reference leaves no
        # cycle, so a closed socket is freed at once, not by a full GC collection.
        self.member = None


class YjsConnection(YjsLink):
    """One ``/yjs`` socket: a link to one document with its own ``Outbox``."""

    def __init__(self, websocket: WebSocket, user: str, name: str, tandem: Context) -> None:
        super().__init__(user, name)
        self.websocket = websocket
        self.outbox = Outbox(websocket, tandem, _EMPTY_AWARENESS)

    def send_bytes(self, frame: bytes) -> None:
        self.outbox.push(frame)

    def close(self, code: int, reason: str) -> None:
        self.outbox.close(code, reason)

    async def writer(self) -> None:
        await self.outbox.writer()


async def serve_yjs(websocket: WebSocket, tandem: Context, doc: str) -> None:
    """Run one ``/yjs/{doc}`` connection from handshake to close."""
    entered = await enter_with_token(websocket, tandem.admission)
    if entered is None:
        return
    slot, token = entered
    admission = tandem.admission
    try:
        try:
            principal = await admission.authenticate(token)
            doc = validate_doc_id(doc)
            permission = principal.permission(doc)
            if permission is None:
                raise Forbidden(f"no access to {doc!r}")
            slot.identify(principal.user)
        except TandemError as error:
            with contextlib.suppress(Exception):
                await websocket.send_bytes(yproto.auth_denied(error.message))
                await websocket.close(admission.close_code(error), error.code)
            return
        await _run_yjs(websocket, tandem, doc, principal, slot.ip or "", permission)
    finally:
        slot.release()


async def _run_yjs(
    websocket: WebSocket,
    tandem: Context,
    doc: str,
    principal: Principal,
    ip: str,
    permission: str,
) -> None:
    connection = YjsConnection(websocket, principal.user, principal.name, tandem)
    connection.principal = principal
    tandem.metrics.connection_opened("yjs")
    writer = asyncio.create_task(connection.writer(), name="tandem-yjs-writer")

    def end(error: TandemError) -> None:
        tandem.metrics.error(error.code)
        connection.send_bytes(yproto.auth_denied(f"{error.code}: {error.message}"))
        connection.outbox.close(error.close_code or 4403, error.code, flush=True)

    live = LiveSession("yjs", principal, ip, time.time(), OneDocument(doc, end))
    tandem.sessions.add(live)
    # The token's expiry holds while connected, as on /collab: close 4401 when it lapses.
    expired = TokenExpired("your token has expired; reconnect with a fresh one")
    left = principal.seconds_left(time.time())
    expiry = deadlines.add(left, lambda: end(expired)) if left < 1e9 else None
    bucket = tandem.admission.bucket(time.monotonic(), ip)
    try:
        await connection.join(tandem, doc, permission)
        async for frame in binary_frames(websocket, writer):
            if not bucket.take(time.monotonic()):
                rate_limited(tandem, connection.outbox)
                tandem.admission.bucket_closed(ip, bucket, time.monotonic())
                break
            if principal.seconds_left(time.time()) <= 0:
                end(expired)
                break
            if frame is None:
                continue
            await connection.handle(frame)
            owed, connection.owed = connection.owed, 0.0
            if owed:
                await settle(bucket, owed)
    except (WebSocketDisconnect, RuntimeError):
        pass
    except yproto.ProtocolError as exc:
        connection.close(4400, f"malformed frame: {exc}"[:120])
    except Forbidden as error:
        log.info("yjs connection to %s refused a frame: %s", doc, error)
        tandem.metrics.error(error.code)
        connection.send_bytes(yproto.auth_denied(f"{error.code}: {error.message}"))
        connection.outbox.close(4403, error.code, flush=True)
    except TandemError as error:  # StaleIncarnation closes 4409, the rest 1011
        log.info("yjs connection to %s closed: %s", doc, error)
        tandem.metrics.error(error.code)
        connection.close(4409 if error.code == "ERR_STALE_INCARNATION" else 1011, error.code)
    finally:
        if expiry is not None:
            expiry.cancel()
        tandem.sessions.remove(live)
        connection.leave()
        tandem.metrics.connection_closed("yjs")
        connection.close(1000, "bye")
        await connection.outbox.finish(writer)
