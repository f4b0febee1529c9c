"""The one admission every endpoint shares: origin, token, identity, caps and rate.

``/collab`` (under ``tandem serve`` and under any ASGI server), ``/yjs``,
``/hocuspocus`` and the REST routes ask ``Admission``, and nothing else,
whether a client may come in and how fast it may talk:

* **address** — ``client_address``: the socket's peer, or, when the peer is one
  of ``trusted_proxies``, the client a proxy names in ``X-Forwarded-For`` or
  ``Forwarded``; nobody else's headers are believed;
* **origin** — ``origin_allowed``: an allow-list (``allowed_origins``) or any;
* **token** — ``authenticate``: the JWT rules of ``tandem.auth``, timed into
  ``tandem_auth_seconds``; a missing token is ``ERR_AUTH``;
* **caps** — ``enter(ip)`` takes a slot in the per-address cap the moment a
  socket is accepted, before any credential is read, so unauthenticated sockets
  count too; ``Slot.identify(user)`` adds the per-user cap once the token is
  verified; ``Slot.release`` gives both back (idempotent);
* **rate** — ``bucket()``: the per-connection token bucket every endpoint meters
  its messages with (``messages_per_second``, ``message_burst``); after a
  connection is closed for exceeding it, the next from its address starts with
  what it left (``bucket_closed``): reconnecting buys no fresh burst, and is
  refused (``enter``) while that is less than one message; an answer that costs
  the document's size is charged by ``settle``, which makes its connection wait;
* **memory** — ``budget``: what every connection holds for its client that the
  client has not read yet (queued frames, and the socket's send buffer), in
  bytes, against ``max_connection_bytes`` each and ``max_held_bytes`` for the
  whole server (``Budget``);
* **refusal** — ``close_code``: the one mapping from a refusal to a close code.

``/collab`` also reads its client id and document from the query (``admit``).
The ASGI helpers at the end (``enter_socket``, ``enter_with_token``,
``peer_address``) do the same for a Starlette ``WebSocket``; the fast
``/collab`` server (``tandem.server.collab_transport``) calls the same methods on
its own handshake.

Must not import ``tandem.server.app`` (the composition root builds this) or any
endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol, TypeAlias

from tandem.auth import Principal, extract_token
from tandem.errors import AuthError, Forbidden, LimitExceeded, TandemError
from tandem.limits import ConnectionCounter, TokenBucket
from tandem.protocol import validate_client_id, validate_doc_id

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from tandem.metrics import Metrics
    from tandem.settings import Settings

__all__ = [
    "Admission",
    "cut",
    "Budget",
    "Holder",
    "Slot",
    "enter_socket",
    "enter_with_token",
    "forwarded_client",
    "peer_address",
    "settle",
]

log = logging.getLogger("tandem.admission")

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


class Abortable(Protocol):
    def abort(self) -> None: ...

    def get_extra_info(self, name: str, default: object = None) -> object: ...


#: SO_LINGER on, 0 s: closing the socket resets the connection and drops what it holds.
_RESET = struct.pack("ii", 1, 0)


def cut(transport: Abortable) -> None:
    """Abort ``transport`` with a reset, so the kernel does not keep its unsent bytes.

    A plain abort closes the descriptor, but the kernel still holds what the
    client never read (megabytes, for a slow consumer) and keeps trying to
    deliver it and the FIN behind it (``FIN-WAIT-1``) for minutes. With
    ``SO_LINGER`` at 0 the close sends a reset and frees it at once.
    """
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)  # type: ignore[attr-defined]
    transport.abort()


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forwarded_for(values: Iterable[str]) -> list[str]:
    """The ``for=`` nodes of ``Forwarded`` headers (RFC 7239), nearest hop last."""
    nodes = []
    for value in values:
        for element in value.split(","):
            for pair in element.split(";"):
                name, _, node = pair.strip().partition("=")
                if name.strip().lower() == "for":
                    node = node.strip().strip('"')
                    if node.startswith("["):  # "[2001:db8::1]:4711"
                        node = node[1 : node.find("]")]
                    elif node.count(":") == 1:  # "192.0.2.1:4711"
                        node = node.partition(":")[0]
                    nodes.append(node)
    return nodes


def forwarded_client(
    peer: str,
    x_forwarded_for: Iterable[str],
    forwarded: Iterable[str],
    trusted: Iterable[Network],
) -> str:
    """The client's address: ``peer``, unless ``peer`` is a trusted proxy.

    From a trusted proxy, the hops its headers list are read from the nearest
    (the last) back, skipping those that are trusted proxies too; the first one
    that is not is the client. ``X-Forwarded-For`` is read if present, else
    ``Forwarded``. A hop that is not an IP address (``unknown``, an obfuscated
    node) ends the walk at the last trusted hop: it proves nothing.
    """
    networks = tuple(trusted)

    def is_trusted(host: str) -> bool:
        address = _address(host)
        return address is not None and any(address in network for network in networks)

    if not networks or not is_trusted(peer):
        return peer
    hops = [hop.strip() for value in x_forwarded_for for hop in value.split(",") if hop.strip()]
    if not hops:
        hops = _forwarded_for(forwarded)
    client = peer
    for hop in reversed(hops):
        if _address(hop) is None:
            break
        client = hop
        if not is_trusted(hop):
            break
    return client


class Slot:
    """One connection's place in the caps: its address from accept, its user once known."""

    __slots__ = ("_counter", "ip", "user")

    def __init__(self, counter: ConnectionCounter, ip: str) -> None:
        self._counter = counter
        self.ip: str | None = ip
        self.user: str | None = None

    def identify(self, user: str) -> None:
        """Count this connection for ``user`` too; ``LimitExceeded`` if that cap is full.

        A connection is counted for one user: later calls (a Hocuspocus socket
        authenticating more documents) change nothing.
        """
        if self.user is None and self.ip is not None:
            self._counter.acquire_user(user)
            self.user = user

    def release(self) -> None:
        """Give back both places (again: nothing)."""
        if self.user is not None:
            self._counter.release_user(self.user)
            self.user = None
        if self.ip is not None:
            self._counter.release_ip(self.ip)
            self.ip = None


class Holder(Protocol):
    """A connection that holds output for its client (``Budget``)."""

    def shed(self) -> None:
        """Drop the client as a slow consumer (the server is over its budget)."""


#: Addresses whose last connection's rate bucket is remembered (``Admission.bucket``).
LEFT_ADDRESSES = 10_000

#: Below this, a connection's backlog is not a slow client's: not tracked at all.
TRACKED_BYTES = 64 << 10


class Budget:
    """Bytes held for clients that are behind, per connection and for the server.

    A connection reports what it holds (``hold``) whenever it queues behind a
    client that is not reading, and is over its own budget when that passes
    ``max_connection_bytes`` plus the largest single message it holds (one
    message, however large, always goes out). The server's total is the sum of
    the last reports above ``TRACKED_BYTES``; past ``max_held_bytes`` the
    heaviest holders are shed until it is back under (``tandem_slow_client_bytes``).
    """

    def __init__(self, per_connection: int, total: int, metrics: Metrics) -> None:
        self.per_connection = per_connection
        self.total_limit = total
        self.metrics = metrics
        self._held: dict[Holder, int] = {}
        self.total = 0

    def over(self, held: int, largest: int) -> bool:
        """Is ``held`` bytes (its largest message ``largest``) over one connection's budget?"""
        return held > self.per_connection + largest

    def hold(self, holder: Holder, held: int) -> None:
        """``holder`` now holds ``held`` bytes; shed the heaviest if the server is over."""
        before = self._held.get(holder, 0)
        if held < TRACKED_BYTES:
            if before:
                del self._held[holder]
                self.total -= before
                self.metrics.held_bytes(self.total)
            return
        self._held[holder] = held
        self.total += held - before
        self.metrics.held_bytes(self.total)
        while self.total > self.total_limit and self._held:
            heaviest = max(self._held, key=self._held.__getitem__)
            self.release(heaviest)
            heaviest.shed()

    def release(self, holder: Holder) -> None:
        """``holder`` is gone, or holds nothing any more."""
        held = self._held.pop(holder, 0)
        if held:
            self.total -= held
            self.metrics.held_bytes(self.total)


class Admission:
    """Who may connect, as whom, how many at once, how fast (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        verify: Callable[[str], Awaitable[Principal]],
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        #: Token → principal, with revocations applied (``Tandem.authenticate``).
        self._verify = verify
        self.metrics = metrics
        self.connections = ConnectionCounter(
            settings.max_connections_per_user, settings.max_connections_per_ip
        )
        self.trusted_proxies: tuple[Network, ...] = tuple(
            ipaddress.ip_network(proxy, strict=False) for proxy in settings.trusted_proxies
        )
        #: Without trusted proxies, this many sockets from one address earn one warning.
        self.budget = Budget(settings.max_connection_bytes, settings.max_held_bytes, metrics)
        #: Transports of sockets uvicorn serves for the ASGI endpoints, by peer
        #: address (``collab_transport`` fills it): a slow consumer's socket is cut
        #: here instead of waiting for a send that never completes.
        self.transports: dict[tuple[str, int], Abortable] = {}
        self._crowd = (
            max(settings.max_connections_per_ip // 2, 1) if settings.max_connections_per_ip else 0
        )
        self._warned = False
        #: Buckets of closed connections not yet refilled: address -> (tokens, when).
        self._left: dict[str, tuple[float, float]] = {}

    def abort(self, peer: tuple[str, int] | None) -> bool:
        """Cut the socket of ``peer`` (an ASGI scope's ``client``) now; False: not known."""
        transport = self.transports.get(peer) if peer is not None else None
        if transport is None:
            return False
        cut(transport)
        return True

    def client_address(
        self, peer: str, x_forwarded_for: Iterable[str] = (), forwarded: Iterable[str] = ()
    ) -> str:
        """The address a socket is counted under (see ``forwarded_client``)."""
        return forwarded_client(peer, x_forwarded_for, forwarded, self.trusted_proxies)

    def origin_allowed(self, origin: str | None) -> bool:
        """False when an allow-list is configured and ``origin`` is not on it."""
        allowed = self.settings.allowed_origins
        return not allowed or origin is None or origin in allowed

    async def authenticate(self, token: str | None) -> Principal:
        """The principal ``token`` proves; ``AuthError`` (``TokenExpired``, ``Revoked``) if none."""
        started = time.perf_counter()
        try:
            if not token:
                raise AuthError(
                    "a token is required (query 'token', Authorization header or subprotocol)"
                )
            return await self._verify(token)
        finally:
            self.metrics.auth_time(time.perf_counter() - started)

    def enter(self, ip: str) -> Slot:
        """A slot in the per-address cap for a socket just accepted; ``LimitExceeded`` if full,
        or if a connection from the address was just closed for exceeding the message
        rate and not one message has refilled since (a tight reconnect loop costs a
        refusal, not a token check and a join per round; 1/``messages_per_second``
        at most, so neighbours behind one address are hardly affected)."""
        left = self._left.get(ip)
        rate = self.settings.messages_per_second
        if left is not None and rate and left[0] + (time.monotonic() - left[1]) * rate < 1:
            raise LimitExceeded(
                "this address reconnects faster than its message rate allows; wait and retry"
            )
        self.connections.acquire_ip(ip)
        crowded = self._crowd and self.connections.ips[ip] >= self._crowd
        if crowded and not self.trusted_proxies and not self._warned:
            self._warned = True
            log.warning(
                "%d connections from %s, half the per-address cap (max_connections_per_ip"
                " = %d). If Tandem runs behind a reverse proxy, every client has the"
                " proxy's address: set trusted_proxies (TANDEM_TRUSTED_PROXIES) to the"
                " proxy's address so the cap counts the clients it forwards.",
                self.connections.ips[ip],
                ip,
                self.settings.max_connections_per_ip,
            )
        return Slot(self.connections, ip)

    async def admit(
        self, token: str | None, query: Mapping[str, str], slot: Slot
    ) -> tuple[Principal, str, str | None]:
        """A ``/collab`` socket's credentials and query: ``(principal, client, doc)``.

        Also counts ``slot`` for the principal's user. Raises ``TandemError``; the
        caller replies with it and closes with ``close_code``.
        """
        principal = await self.authenticate(token)
        raw_client = query.get("client")
        client = validate_client_id(raw_client) if raw_client else "c" + secrets.token_hex(6)
        raw_doc = query.get("doc")
        doc = None if raw_doc is None else validate_doc_id(raw_doc)
        slot.identify(principal.user)
        return principal, client, doc

    def bucket(self, now: float, ip: str | None = None) -> TokenBucket:
        """The message-rate bucket of one connection (every endpoint's).

        With ``ip``: a connection from an address whose last connection was closed
        for exceeding the rate (``bucket_closed``) starts where that one left off,
        not with a full burst, so a reconnect loop gets no more messages than the
        rate. Otherwise it starts full.
        """
        bucket = TokenBucket(self.settings.messages_per_second, self.settings.message_burst, now)
        left = self._left.pop(ip, None) if ip is not None else None
        if left is not None:
            bucket.tokens, bucket.stamp = left
        return bucket

    def bucket_closed(self, ip: str, bucket: TokenBucket, now: float) -> None:
        """A connection from ``ip`` was closed for exceeding the message rate: remember
        its bucket (no debt: at least empty) until it would have refilled."""
        if not bucket.rate:
            return
        bucket.take(now, 0.0)  # refilled up to now
        tokens = max(bucket.tokens, 0.0)
        if tokens >= bucket.burst:
            return
        left = self._left
        known = left.get(ip)
        if known is None or known[0] > tokens:
            left[ip] = (tokens, now)
        if len(left) > LEFT_ADDRESSES:  # forget those refilled by now, oldest first
            for address, (tokens, stamp) in list(left.items()):
                if tokens + (now - stamp) * bucket.rate >= bucket.burst:
                    del left[address]
            while len(left) > LEFT_ADDRESSES:
                del left[next(iter(left))]

    def close_code(self, error: TandemError) -> int:
        """The close code for a refused socket (and the refusal counted in the metrics)."""
        self.metrics.error(error.code)
        if error.close_code is not None:
            return error.close_code
        if isinstance(error, Forbidden):
            return 4403
        return 4401 if isinstance(error, AuthError) else 4400


# -- the same, for a Starlette WebSocket -----------------------------------------------------


def peer_address(websocket: WebSocket, admission: Admission) -> str:
    """The client's address: the ASGI server's peer, or what a trusted proxy forwarded."""
    peer = websocket.client.host if websocket.client else "unknown"
    headers = websocket.headers
    return admission.client_address(
        peer, headers.getlist("x-forwarded-for"), headers.getlist("forwarded")
    )


async def enter_socket(websocket: WebSocket, admission: Admission) -> Slot | None:
    """The first step of every WebSocket endpoint: origin, then the per-address cap.

    Returns the socket's slot, or None once the socket has been closed: an origin not
    allowed (before accept: HTTP 403) or an address over its cap.
    """
    if not admission.origin_allowed(websocket.headers.get("origin")):
        admission.metrics.error("ERR_FORBIDDEN")
        await websocket.close(4403, "origin not allowed")
        return None
    try:
        return admission.enter(peer_address(websocket, admission))
    except TandemError as error:
        await websocket.close(admission.close_code(error), error.code)
        return None


async def enter_with_token(
    websocket: WebSocket, admission: Admission
) -> tuple[Slot, str | None] | None:
    """``enter_socket``, then accept the socket (echoing a token subprotocol): its slot and
    its token, if any. None once the socket has been closed; the slot is released if the
    accept fails. The endpoints that read a token (``/collab`` over ASGI, ``/yjs``) start so.
    """
    slot = await enter_socket(websocket, admission)
    if slot is None:
        return None
    token, subprotocol = extract_token(
        websocket.query_params.get("token"),
        websocket.headers.get("authorization"),
        websocket.scope.get("subprotocols") or [],
    )
    try:
        await websocket.accept(subprotocol=subprotocol)
    except BaseException:
        slot.release()
        raise
    return slot, token


#: An answer whose cost grows with the document (a ``/yjs`` SyncStep2, a ``/collab``
#: join's snapshot or catch-up) costs one message of the rate limit per this many
#: bytes: a connection is slowed to ``messages_per_second`` × 16 KiB of them a second.
ANSWER_BYTES_PER_MESSAGE = 16 << 10


async def settle(bucket: TokenBucket, owed: float) -> None:
    """Charge ``owed`` messages (what the last frame's answers cost beyond one) to
    ``bucket`` and wait, reading nothing, until it holds a whole message again:
    the client is slowed, not refused (``TokenBucket.spend``)."""
    pause = bucket.spend(time.monotonic(), owed)
    while pause:
        await asyncio.sleep(pause)
        pause = bucket.wait(time.monotonic())
