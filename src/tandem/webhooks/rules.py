"""Webhook decisions, pure: who is subscribed, what a delivery says, how it is signed,
when it is retried.

Must not import asyncio, httpx, storage or the bus; time is passed in.

Signature (the scheme GitHub and Stripe use): the sender puts the Unix time in
``Tandem-Webhook-Timestamp`` and ``v1=`` + hex HMAC-SHA256(secret,
``f"{timestamp}."`` + raw body) in ``Tandem-Webhook-Signature``. A receiver
recomputes it over the raw bytes it received, compares in constant time, and
refuses a timestamp more than a few minutes off (a replayed request);
``verify_signature`` does exactly that, and docs/extending.md shows it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Debounce",
    "Subscription",
    "backoff",
    "parse_subscriptions",
    "payload",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "Tandem-Webhook-Signature"
TIMESTAMP_HEADER = "Tandem-Webhook-Timestamp"
ID_HEADER = "Tandem-Webhook-Id"
ATTEMPT_HEADER = "Tandem-Webhook-Attempt"
#: Longest a receiver should accept between the timestamp and its own clock, seconds.
TOLERANCE = 300


@dataclass(frozen=True, slots=True)
class Subscription:
    """``url`` is told about changes to the documents ``pattern`` (an fnmatch glob) matches."""

    pattern: str
    url: str

    def matches(self, doc: str) -> bool:
        return fnmatch.fnmatchcase(doc, self.pattern)


def parse_subscriptions(entries: Sequence[str]) -> tuple[Subscription, ...]:
    """``Settings.webhooks`` entries, each ``"GLOB URL"`` or just ``"URL"`` (every document).

    Raises ``ValueError`` for an entry that is not that, or a URL that is not http(s).
    """
    subscriptions = []
    for entry in entries:
        parts = entry.split()
        if len(parts) == 1:
            pattern, url = "*", parts[0]
        elif len(parts) == 2:
            pattern, url = parts
        else:
            raise ValueError(f"webhooks entry {entry!r} must be 'GLOB URL' or 'URL'")
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.netloc:
            raise ValueError(f"webhooks entry {entry!r}: the URL must be http(s)://host/...")
        subscriptions.append(Subscription(pattern, url))
    return tuple(subscriptions)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Tandem-Webhook-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(
    secret: bytes, timestamp: str, signature: str, body: bytes, *, now: float
) -> bool:
    """What a receiver checks: the signature over the raw ``body``, and a fresh timestamp."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > TOLERANCE:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: base, 2·base, 4·base… ≤ cap."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


def payload(
    id: str,
    doc: str,
    from_version: int,
    to_version: int,
    created: float,
    ops: Sequence[dict[str, Any]] | None,
) -> bytes:
    """The JSON body of one delivery (``ops`` is None when the range was too long to inline)."""
    return orjson.dumps(
        {
            "id": id,
            "type": "document.changed",
            "doc": doc,
            "from_version": from_version,
            "to_version": to_version,
            "created": created,
            "ops": None if ops is None else list(ops),
        }
    )


@dataclass(slots=True)
class Debounce:
    """One document's pending change: fire ``quiet`` seconds after the last change, and
    never later than ``longest`` after the first (so steady typing still gets a call).
    """

    first_version: int
    last_version: int
    first_at: float
    last_at: float

    def changed(self, version: int, now: float) -> None:
        self.first_version = min(self.first_version, version)
        self.last_version = max(self.last_version, version)
        self.last_at = now

    def due_at(self, quiet: float, longest: float) -> float:
        return min(self.last_at + quiet, self.first_at + longest)
