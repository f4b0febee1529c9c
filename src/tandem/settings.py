"""One ``Settings`` object: every limit and default in one table.

Each field can be set by keyword, or from the environment as ``TANDEM_<FIELD>``
(upper case) through ``Settings.from_env()``; the CLI maps its flags onto the
same fields. ``docs/operations.md`` lists them all. Pure: no I/O besides
reading ``os.environ`` in ``from_env``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["LEASE_MARGIN", "NO_LIMIT_AT_ZERO", "Settings", "SettingsError"]


class SettingsError(ValueError):
    """Settings that cannot work; ``problems`` holds one sentence per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  {p}" for p in problems))


#: Limits for which 0 means "no limit". Every other limit refuses 0 at start-up
#: (``Settings`` raises ``SettingsError``): each of them is what bounds a
#: connection's memory, CPU or time, or a value for which 0 could not work.
NO_LIMIT_AT_ZERO = frozenset(
    {
        "max_document_chars",
        "messages_per_second",
        "max_connections_per_user",
        "max_connections_per_ip",
        "max_version_lag",
    }
)

#: The smallest value each limit that refuses 0 accepts, and why.
_MINIMUM: dict[str, tuple[float, str]] = {
    "max_frame_bytes": (1024, "every frame of every client would be refused"),
    "max_op_components": (1, "every op would be refused"),
    "max_merge_ops": (1, "every offline merge would be refused"),
    "max_joins_per_connection": (1, "no connection could join a document"),
    "send_queue_frames": (1, "every client would be dropped at its first message"),
    "commit_max_batch": (1, "no op could be committed"),
    "snapshot_every": (1, "a snapshot is written every this many versions"),
    "history_checkpoint_every": (1, "a history checkpoint is written every this many versions"),
    "history_compact_interval": (1, "retention would run without pause"),
    "history_max_changes": (1, "no changes could be read"),
    "history_window": (1, "a session keeps at least the newest op to transform against"),
    "merge_checkpoint_every": (1, "a checkpoint is kept every this many versions"),
    "merge_checkpoints_kept": (1, "an offline merge would rebuild every base from storage"),
    "ping_interval": (0.001, "a connection that stops answering must be dropped"),
    "ping_timeout": (0.001, "every connection would time out at its first ping"),
    "presence_timeout": (0.001, "every presence would expire at once"),
    "max_connection_bytes": (65536, "a client's ordinary backlog would drop it"),
    "max_held_bytes": (65536, "every slow client would be dropped at once"),
    "slow_consumer_grace": (0.001, "a client that stops reading must be cut off"),
    "handshake_timeout": (0.001, "a connection that never sends its request must be cut"),
    "close_timeout": (0.001, "a client that never answers a close must be cut off"),
    "auth_deadline": (0.001, "a socket that never authenticates must be closed"),
    "yjs_keepalive": (0.001, "Yjs clients drop a silent socket after 30 s"),
    "lease_ttl": (1, "a document lease must outlast a renew round trip"),
    "lease_renew_interval": (0.05, "an owner renews each lease this often"),
}

#: The share of ``lease_ttl`` an owner keeps back from its local deadline
#: (clock-rate drift and scheduling; ``session/ownership.py``).
LEASE_MARGIN = 0.1


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Settings:
    # -- where -----------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8080
    #: Data directory for the embedded SQLite database and the generated dev secret.
    data_dir: Path = Path("tandem-data")
    #: ``sqlite:///path`` or ``postgresql://…``; empty means SQLite in ``data_dir``.
    database_url: str = ""
    #: ``redis://…`` for several nodes; empty means the in-process bus.
    redis_url: str = ""
    #: Names this node in metrics, leases and logs.
    node_id: str = field(default_factory=_default_node_id)
    #: Public base URL printed at start-up (defaults to http://host:port).
    public_url: str = ""

    # -- auth ------------------------------------------------------------------
    #: HS256 secret. Empty: generated once into ``data_dir/dev-secret`` (development).
    jwt_secret: str = ""
    #: More HS secrets, each ``kid:secret``, picked by the token's ``kid`` (rotation).
    #: The first one signs the tokens Tandem issues.
    jwt_secrets: tuple[str, ...] = ()
    #: PEM public key file, or a JWKS file, for RS256/ES256 tokens.
    jwt_public_key_file: str = ""
    jwt_jwks_file: str = ""
    #: JWKS fetched from this URL (an identity provider's ``jwks_uri``), cached
    #: ``jwt_jwks_max_age`` seconds, re-fetched on an unknown ``kid`` at most once
    #: per ``jwt_jwks_refetch_interval`` seconds.
    jwt_jwks_url: str = ""
    jwt_jwks_max_age: float = 300.0
    jwt_jwks_refetch_interval: float = 10.0
    #: Accept tokens without ``exp`` (they never expire). Development mode always does.
    jwt_allow_no_exp: bool = False
    #: Accepted algorithms, pinned here and never taken from the token.
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str = ""
    jwt_issuer: str = ""
    #: Clock skew allowed on exp/nbf, seconds.
    jwt_leeway: float = 5.0
    #: Claim holding per-document permissions: {"glob": "read"|"write"}.
    jwt_permissions_claim: str = "docs"
    #: Claim that makes a token an administrator's (``true``): the admin API and CLI.
    jwt_admin_claim: str = "admin"
    #: Longest a token may live (``exp`` minus ``iat``, or minus now without ``iat``);
    #: a revocation is kept this long, so it outlives every token it covers. 0: no limit.
    jwt_max_token_lifetime: float = 30 * 86400.0
    #: Each node re-reads the revocations this often (they also travel on the bus).
    revocation_poll_interval: float = 5.0
    #: Seconds before expiry at which a connected client is warned.
    token_expiry_warning: float = 60.0
    #: Serve a development token to the demo page (never in production).
    dev_mode: bool = False
    #: Allowed ``Origin`` values for browser connections; empty allows any.
    allowed_origins: tuple[str, ...] = ()
    #: Reverse proxies (addresses or networks, e.g. ``127.0.0.1,10.0.0.0/8``) whose
    #: ``X-Forwarded-For``/``Forwarded`` headers name the client for the per-address cap.
    #: Empty: no header is believed; every socket counts under its peer's address.
    trusted_proxies: tuple[str, ...] = ()

    # -- limits ------------------------------------------------------------------
    max_frame_bytes: int = 1 << 20
    max_document_chars: int = 10_000_000
    max_op_components: int = 10_000
    #: Most ops in one offline ``merge`` message (each also within max_op_components).
    max_merge_ops: int = 20_000
    #: Token bucket per connection: sustained messages per second, and burst.
    messages_per_second: float = 200.0
    message_burst: int = 400
    max_connections_per_user: int = 50
    max_connections_per_ip: int = 500
    max_joins_per_connection: int = 100
    #: Frames queued for one client before it is dropped as a slow consumer.
    send_queue_frames: int = 2000
    #: Output one connection may hold for a client that is not reading (queued
    #: frames and its socket's buffer), beyond the single largest message; past it
    #: the client gets ERR_SLOW_CONSUMER and is closed (4408).
    max_connection_bytes: int = 8 << 20
    #: Output the whole server may hold for clients that are behind; past it the
    #: heaviest are dropped as slow consumers first.
    max_held_bytes: int = 256 << 20
    #: Longest a closing connection's last frames (a slow consumer's error, a goodbye)
    #: may take to go out before the connection is cut.
    slow_consumer_grace: float = 2.0
    #: Versions behind head a submit may be based on; 0 keeps all history usable.
    max_version_lag: int = 0

    # -- timing ------------------------------------------------------------------
    #: Presence broadcast at most once per client per this many seconds.
    presence_interval: float = 0.05
    #: Presence entries expire after this much silence.
    presence_timeout: float = 30.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    #: A connection whose HTTP request (or WebSocket handshake) is not complete this
    #: long after it was accepted is cut (``tandem serve``).
    handshake_timeout: float = 10.0
    #: Longest we wait for the client's reply to our close frame before cutting the socket.
    close_timeout: float = 10.0
    #: A ``/hocuspocus`` socket with no authenticated document is closed (4408) after this.
    auth_deadline: float = 60.0
    #: ``/yjs`` and ``/hocuspocus`` send a keep-alive after this much silence (their
    #: clients drop a socket after 30 s without a message).
    yjs_keepalive: float = 15.0
    #: Longest a Yjs SyncStep2 waits for a moment with no commit in flight (it then
    #: answers anyway, and logs it).
    yjs_stored_wait: float = 5.0
    #: Unload a document this many seconds after its last client left.
    document_idle_unload: float = 30.0
    #: Longest a commit waits to gather more ops into one transaction.
    commit_max_delay: float = 0.0
    commit_max_batch: int = 512
    #: SQLite: longest a commit waits for the fsync that makes it durable (and lets
    #: its author's ack go out); the commits of every document within it share one.
    sync_delay: float = 0.005
    #: Write a snapshot every this many versions.
    snapshot_every: int = 100
    #: PostgreSQL with several nodes: how long a document lease lasts on the
    #: database's clock (``storage/leases.py``): only its holder sequences the document.
    lease_ttl: float = 10.0
    #: How often the owner renews each lease; twice must fit in 90 % of ``lease_ttl``.
    lease_renew_interval: float = 3.0
    #: Longest a graceful shutdown (SIGTERM, SIGINT, the lifespan ending) waits for
    #: the ops in flight to be committed and acknowledged before closing clients.
    shutdown_timeout: float = 10.0

    # -- history (tandem.history) ------------------------------------------------------
    #: Retention: compact ops more than this many versions behind the head
    #: (0: keep every version).
    history_keep_versions: int = 0
    #: Retention: compact ops older than this many days (0: keep them all).
    history_keep_days: float = 0.0
    #: How often (seconds) each node applies retention to every document.
    history_compact_interval: float = 3600.0
    #: Reading history saves a checkpoint (content and authorship) every this many versions.
    history_checkpoint_every: int = 1000
    #: Most versions one ``/changes`` request may span.
    history_max_changes: int = 10_000

    # -- Python hooks (docs/extending.md) ----------------------------------------------
    #: ``package.module:object``: the hooks object (or class) ``tandem serve`` uses.
    hooks: str = ""
    #: Longest one hook call may take; then it counts as failed (``tandem_hook_calls_total``).
    hook_timeout: float = 5.0
    #: ``store`` runs this long after a document's last change (at most 10× after its first).
    hook_store_debounce: float = 2.0
    #: Longest one ``authorize`` call may take; the document's sequencing waits for it.
    authorize_timeout: float = 1.0
    #: What a failed ``authorize`` call (raised, timed out) does to the op: ``"reject"``
    #: it (fail closed, ``ERR_AUTHORIZE_FAILED``) or ``"allow"`` it (fail open).
    authorize_failure: str = "reject"

    # -- webhooks ------------------------------------------------------------------
    #: Subscriptions, each ``"GLOB URL"`` (or just ``"URL"`` for every document).
    webhooks: tuple[str, ...] = ()
    #: HMAC-SHA256 key that signs every delivery; required when ``webhooks`` is set.
    webhook_secret: str = ""
    #: A document's call goes out this long after its last change, and never later
    #: than ``webhook_max_debounce`` after its first one.
    webhook_debounce: float = 2.0
    webhook_max_debounce: float = 10.0
    #: Longest a receiver may take to answer one POST.
    webhook_timeout: float = 10.0
    #: Retries wait base, 2·base, 4·base … seconds, at most ``webhook_retry_max``.
    webhook_retry_base: float = 1.0
    webhook_retry_max: float = 600.0
    #: Attempts before a delivery is dropped (counted in metrics, logged).
    webhook_max_attempts: int = 12
    #: Every this many seconds each node also compares document heads with what
    #: was queued (catches what a crash or another node left behind).
    webhook_scan_interval: float = 30.0
    #: Ops inlined in one delivery; above it ``ops`` is null (read them over REST).
    webhook_max_ops: int = 1000
    # -- document sessions -----------------------------------------------------------
    #: Committed ops a session keeps in memory to transform late submits against (and
    #: to answer catch-ups from); older ones are read from storage when needed.
    history_window: int = 10_000
    #: Every this many committed versions a session keeps the document as an offline
    #: merge checkpoint (where a merge rebuilds its base from) ...
    merge_checkpoint_every: int = 128
    #: ... and it keeps this many of them, the newest (older bases come from storage).
    merge_checkpoints_kept: int = 64

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``TANDEM_*`` variables, then ``overrides`` (ignored when None)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"TANDEM_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _convert(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        problems = settings_problems(self)
        if problems:
            raise SettingsError(problems)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


def _name(field_name: str) -> str:
    return f"{field_name} (TANDEM_{field_name.upper()})"


def settings_problems(settings: Settings) -> list[str]:
    """Every reason ``settings`` cannot work, one sentence each (empty: they can)."""
    problems: list[str] = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            problems.append(f"{_name(f.name)} is {value}: it cannot be negative")
    for name, (least, why) in _MINIMUM.items():
        value = getattr(settings, name)
        if 0 <= value < least:
            problems.append(
                f"{_name(name)} is {value}: it must be at least {least:g} ({why}); "
                "0 does not mean 'no limit' here"
            )
    for proxy in settings.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            problems.append(
                f"{_name('trusted_proxies')} holds {proxy!r}: not an IP address or network"
            )
    if settings.messages_per_second > 0 and settings.message_burst < 1:
        problems.append(
            f"{_name('message_burst')} is {settings.message_burst}: with a rate limit "
            "it must be at least 1 (no message could pass); set messages_per_second "
            "to 0 for no rate limit"
        )
    if 0 < settings.presence_timeout <= settings.presence_interval:
        problems.append(
            f"{_name('presence_timeout')} ({settings.presence_timeout:g} s) must be longer "
            f"than presence_interval ({settings.presence_interval:g} s): presence would "
            "expire between two broadcasts"
        )
    if 2 * settings.lease_renew_interval > (1 - LEASE_MARGIN) * settings.lease_ttl:
        problems.append(
            f"{_name('lease_renew_interval')} ({settings.lease_renew_interval:g} s) must fit "
            f"twice in 90 % of lease_ttl ({settings.lease_ttl:g} s): one failed renew "
            "would lose the lease"
        )
    if settings.authorize_failure not in ("reject", "allow"):
        problems.append(
            f"{_name('authorize_failure')} is {settings.authorize_failure!r}: "
            "use 'reject' (fail closed) or 'allow' (fail open)"
        )
    if not 0 <= settings.port <= 65535:
        problems.append(f"{_name('port')} is {settings.port}: use 0-65535")
    return problems


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind == "bool":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "Path":
        return Path(raw)
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
