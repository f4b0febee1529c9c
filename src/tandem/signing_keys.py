"""Signing keys: the algorithms Tandem verifies, which key fits which, reading them, refetching.

The key material side of ``tandem.auth``: the supported JWT algorithms and the
shortest HS secret each accepts, whether a public key fits an algorithm
(RSA → RS/PS, EC → ES on its curve), a PEM public key and a JWKS document
parsed from bytes already read (``tandem.auth_keys`` reads the files and
fetches the URL), and ``JwksRefresh``, the schedule of those fetches.

Pure: bytes and times in, keys and decisions out. Must not import asyncio,
the network, ``os``, ``pathlib`` or ``time``.
"""

from __future__ import annotations

import logging
from typing import TypeAlias

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

__all__ = [
    "HMAC_MIN_BYTES",
    "SUPPORTED_ALGORITHMS",
    "JwksEntry",
    "JwksRefresh",
    "PublicKey",
    "key_fits",
    "parse_jwks",
    "parse_pem",
]

logger = logging.getLogger(__name__)

PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
#: A JWKS key and the ``alg`` its JWK names, if any.
JwksEntry: TypeAlias = tuple[PublicKey, str | None]

#: HS algorithm → the shortest secret it accepts, in bytes (RFC 7518 section 3.2).
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_RSA = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
_EC_CURVE = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
SUPPORTED_ALGORITHMS = frozenset(HMAC_MIN_BYTES) | _RSA | frozenset(_EC_CURVE)


def key_fits(key: PublicKey, alg: str) -> bool:
    """Is ``key`` of the type (and, for EC, the curve) algorithm ``alg`` signs with?"""
    if alg in _RSA:
        return isinstance(key, rsa.RSAPublicKey)
    if alg in _EC_CURVE:
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _EC_CURVE[alg]
    return False


def parse_pem(data: bytes) -> PublicKey:
    """The RSA or EC public key in PEM ``data``; ``ValueError`` for anything else."""
    try:
        key = load_pem_public_key(data)
    except ValueError:
        raise ValueError("jwt_public_key_file does not hold a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("jwt_public_key_file must hold an RSA or EC public key")
    return key


def parse_jwks(data: object, source: str = "jwt_jwks_file") -> dict[str | None, JwksEntry]:
    """``kid`` → (key, the JWK's ``alg`` if it names one), from a decoded JWKS document.

    Unusable keys are skipped, and so is every symmetric (``oct``) key: a JWKS
    is public, so an HMAC key in it would let anyone sign. ``ValueError`` when
    no usable key is left; ``source`` names the setting in the message.
    """
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'{source} must be a JSON object with a "keys" list')
    keys: dict[str | None, JwksEntry] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in ("RSA", "EC"):  # never an "oct" (HMAC) key from a JWKS
            continue
        kid, alg = entry.get("kid"), entry.get("alg")
        if (kid is not None and not isinstance(kid, str)) or (
            alg is not None and alg not in SUPPORTED_ALGORITHMS
        ):
            continue
        try:
            key = jwt.PyJWK(entry).key
        except (jwt.PyJWTError, ValueError, TypeError):
            logger.warning("%s: skipping unusable key %r", source, kid)
            continue
        if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            keys[kid] = (key, alg)
    if not keys:
        raise ValueError(f"{source} holds no usable RSA or EC signing key")
    return keys


class JwksRefresh:
    """When to fetch a JWKS from its URL: a pure schedule, time passed in.

    A fetch is due when none succeeded yet or the last one is ``max_age`` old;
    an unknown ``kid`` forces one, but fetches are never started less than
    ``min_interval`` apart, so a flood of tokens with made-up ``kid`` values
    costs the identity provider one request per interval.
    """

    def __init__(self, max_age: float, min_interval: float) -> None:
        self.max_age = max_age
        self.min_interval = min_interval
        self.fetched_at: float | None = None
        self.attempted_at: float | None = None

    def _may_start(self, now: float) -> bool:
        return self.attempted_at is None or now - self.attempted_at >= self.min_interval

    def due(self, now: float, *, unknown_kid: bool = False) -> bool:
        """True when a fetch should start now."""
        stale = self.fetched_at is None or now - self.fetched_at >= self.max_age
        return (stale or unknown_kid) and self._may_start(now)

    def started(self, now: float) -> None:
        self.attempted_at = now

    def succeeded(self, now: float) -> None:
        self.fetched_at = now
