"""JWT verification: a token in, a ``Principal`` with per-document permissions out.

Owns the verification keys (an HS secret, a PEM public key, a JWKS file;
``tandem.signing_keys`` parses them and says which algorithm each fits), the
claim checks, the permission rules and the three places a token may travel
(``Authorization`` header, WebSocket subprotocol, ``token`` query parameter).
Pure: never awaits, never reads the clock (``now`` is passed in), never reads
a file (``tandem.auth_keys`` reads the key files and the development secret and
hands over a ``KeyRing``), and must not import asyncio, FastAPI, storage, the
bus, ``os``, ``pathlib`` or ``time``.

Security rules, each one tested in ``tests/unit/test_auth.py``:

* Algorithms are pinned by ``Settings.jwt_algorithms`` and never taken from
  the token: ``alg: none`` is always refused, an HS token is refused unless an
  HS algorithm is pinned, and an HS token is only ever checked against the HS
  secret, never against a public key (no algorithm confusion). Each key is
  used only with the algorithm family of its type (RSA → RS/PS, EC → ES with
  the matching curve); symmetric (``oct``) keys in a JWKS are ignored.
* ``exp``, ``nbf`` and ``iat`` are checked against ``now`` with
  ``Settings.jwt_leeway``; each must be a finite number when present. A token
  without ``exp`` is refused, unless ``Settings.jwt_allow_no_exp`` or
  ``Settings.dev_mode`` is set: then it never expires (``Principal.expires is None``).
* Keys are picked by the token's ``kid``: an HS token with a ``kid`` is checked
  only against the ``jwt_secrets`` entry of that ``kid`` (several secrets at once,
  so one can be rotated without logging anyone out), one without against
  ``jwt_secret``. An unknown ``kid`` raises ``UnknownSigningKey``, on which the
  edge re-fetches a JWKS URL (``signing_keys.JwksRefresh`` decides when) and tries once more.
* ``aud``/``iss`` are required and checked when configured. When no audience is
  configured a token that carries an ``aud`` is refused (PyJWT's behaviour: it
  was minted for some other service).
* ``sub`` is required: a non-empty string of at most 256 characters.
* Error messages never contain the token, the secret or a key.

Permissions live in one claim (``Settings.jwt_permissions_claim``, default
``docs``), an object mapping a glob pattern to ``"read"`` or ``"write"``::

    {"sub": "ada", "docs": {"*": "read", "notes/*": "write", "notes/secret": "read"}}

A token without that claim grants **no** document access (secure default).
When several patterns match a document, the most specific one wins:

1. an exact name (no ``*``, ``?`` or ``[``) beats every glob;
2. otherwise the pattern with more literal (non-wildcard) characters wins;
3. ties go to the pattern listed later.

So in the example ``notes/a`` is writable, ``notes/secret`` and ``todo`` are
read-only. Globs use ``fnmatch.fnmatchcase``: case-sensitive, and ``*``
crosses ``/``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import jwt

from tandem.errors import AuthError, Forbidden, ReadOnly, TokenExpired, UnknownSigningKey
from tandem.signing_keys import HMAC_MIN_BYTES, SUPPORTED_ALGORITHMS, JwksEntry, PublicKey, key_fits

if TYPE_CHECKING:  # reading the environment and paths is not the pure part's business
    from tandem.settings import Settings

__all__ = [
    "SUBPROTOCOL",
    "Authenticator",
    "KeyRing",
    "Permission",
    "Principal",
    "extract_token",
]

Permission: TypeAlias = Literal["read", "write"]

#: The WebSocket subprotocol the server accepts; the token rides next to it as ``bearer.<JWT>``.
SUBPROTOCOL = "tandem.v1"
BEARER_SUBPROTOCOL_PREFIX = "bearer."

#: Longest token accepted, in characters (a JWT with a large ``docs`` claim fits easily).
MAX_TOKEN_CHARS = 16_384
MAX_USER_CHARS = 256
MAX_NAME_CHARS = 256
#: Most patterns one token may carry; bounds the cost of every permission check.
MAX_PERMISSION_RULES = 1_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for, and what it may do.

    ``permissions`` keeps the claim's order, which breaks ties (see the module
    docstring). ``expires`` is the ``exp`` claim, or None when the token has none;
    ``token_id`` the ``jti`` and ``issued`` the ``iat``, when present. ``admin`` is
    the ``Settings.jwt_admin_claim`` claim (the admin API). ``revoked`` lists
    document globs an administrator revoked for this user (``tandem.revocation``):
    they grant nothing, whatever the claim says.
    """

    user: str
    name: str
    permissions: tuple[tuple[str, Permission], ...] = ()
    expires: float | None = None
    token_id: str | None = None
    issued: float | None = None
    admin: bool = False
    revoked: tuple[str, ...] = ()

    def permission(self, doc: str) -> Permission | None:
        """The access this principal has to ``doc``: the most specific matching rule wins."""
        if self.revoked and any(fnmatch.fnmatchcase(doc, p) for p in self.revoked):
            return None
        best: tuple[bool, int, int] | None = None
        granted: Permission | None = None
        for index, (pattern, access) in enumerate(self.permissions):
            if not fnmatch.fnmatchcase(doc, pattern):
                continue
            rank = (_is_exact(pattern), _literal_chars(pattern), index)
            if best is None or rank > best:
                best, granted = rank, access
        return granted

    def can_read(self, doc: str) -> bool:
        """True when the principal may open ``doc`` (write access implies read)."""
        return self.permission(doc) is not None

    def can_write(self, doc: str) -> bool:
        """True when the principal may edit ``doc``."""
        return self.permission(doc) == "write"

    def require_read(self, doc: str) -> None:
        """Raise ``Forbidden`` unless the principal may open ``doc``."""
        if not self.can_read(doc):
            raise Forbidden(f"user {self.user!r} has no access to document {doc!r}")

    def require_write(self, doc: str) -> None:
        """Raise ``ReadOnly`` if ``doc`` is only readable, ``Forbidden`` if not even that."""
        access = self.permission(doc)
        if access == "write":
            return
        if access == "read":
            raise ReadOnly(f"user {self.user!r} may read but not edit document {doc!r}")
        raise Forbidden(f"user {self.user!r} has no access to document {doc!r}")

    def seconds_left(self, now: float) -> float:
        """Seconds until the token expires (negative once it has); ``math.inf`` without ``exp``."""
        return math.inf if self.expires is None else self.expires - now


def _is_exact(pattern: str) -> bool:
    return not any(c in pattern for c in "*?[")


def _literal_chars(pattern: str) -> int:
    """Characters of ``pattern`` that must match themselves (``[...]`` classes count zero)."""
    count, i = 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            end = pattern.find("]", i + 2)  # fnmatch: a "]" right after "[" or "[!" is literal
            if end != -1:
                i = end + 1
                continue
            count += 1  # an unclosed "[" matches itself
        elif c not in "*?":
            count += 1
        i += 1
    return count


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The keys an ``Authenticator`` checks signatures with, already read and parsed.

    ``secrets`` maps a ``kid`` to an HS secret (``None`` is the secret for tokens
    without a ``kid``); ``public_key`` is a PEM key; ``jwks`` maps a ``kid`` to a
    JWKS key and the ``alg`` its JWK names. ``tandem.auth_keys`` builds one from
    the settings (files, the development secret); tests build them directly.
    """

    secrets: Mapping[str | None, bytes] = field(default_factory=dict)
    public_key: PublicKey | None = None
    jwks: Mapping[str | None, tuple[PublicKey, str | None]] = field(default_factory=dict)


class Authenticator:
    """Verifies tokens against a ``KeyRing``; build it once at start-up.

    Use ``tandem.auth_keys.load_authenticator(settings)`` to build one from the
    settings' key files. A token's ``kid`` picks the JWKS key; a token without
    ``kid`` uses the only key of a one-key JWKS, else the PEM key. Raises
    ``ValueError`` for a configuration that could never verify a token.
    """

    def __init__(self, settings: Settings, keys: KeyRing) -> None:
        self._settings = settings
        algorithms = tuple(settings.jwt_algorithms)
        unknown = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(
                f"jwt_algorithms must be a non-empty subset of {sorted(SUPPORTED_ALGORITHMS)}; "
                f"got {list(algorithms)!r}"
            )
        self._algorithms = frozenset(algorithms)
        self._hmac_algorithms = [a for a in algorithms if a in HMAC_MIN_BYTES]
        self._secrets = self._check_secrets(keys)
        self._public_key = keys.public_key
        self._jwks = dict(keys.jwks)
        self._allow_no_exp = settings.jwt_allow_no_exp or settings.dev_mode
        remote = bool(settings.jwt_jwks_url)
        has_asymmetric = any(a not in HMAC_MIN_BYTES for a in algorithms)
        if (self._public_key is not None or self._jwks or remote) and not has_asymmetric:
            raise ValueError(
                "a public key or JWKS is configured but jwt_algorithms pins no RS/PS/ES algorithm"
            )
        if has_asymmetric and self._public_key is None and not self._jwks and not remote:
            raise ValueError(
                "jwt_algorithms pins an RS/PS/ES algorithm but none of jwt_public_key_file, "
                "jwt_jwks_file or jwt_jwks_url is set"
            )

    # -- keys --------------------------------------------------------------------------

    def _check_secrets(self, keys: KeyRing) -> dict[str | None, bytes]:
        if not self._hmac_algorithms:
            return {}
        if not keys.secrets:
            raise ValueError(
                f"jwt_algorithms pins {self._hmac_algorithms[0]} but jwt_secret is empty "
                "and no data directory was given for a development secret"
            )
        needed = max(HMAC_MIN_BYTES[a] for a in self._hmac_algorithms)
        for kid, secret in keys.secrets.items():
            if len(secret) < needed:
                which = "jwt_secret" if kid is None else f"jwt_secrets entry {kid!r}"
                raise ValueError(
                    f"{which} is {len(secret)} bytes; {'/'.join(self._hmac_algorithms)} "
                    f"needs at least {needed} (RFC 7518 section 3.2)"
                )
        return dict(keys.secrets)

    def replace_jwks(self, jwks: Mapping[str | None, JwksEntry]) -> None:
        """Swap in a freshly fetched JWKS (the keys of ``KeyRing.jwks``)."""
        self._jwks = dict(jwks)

    def _key_for(self, alg: str, header: Mapping[str, Any]) -> bytes | PublicKey:
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed token header: kid must be a string")
        if alg in HMAC_MIN_BYTES:
            secret = self._secrets.get(kid)
            if secret is None and (kid is None or set(self._secrets) == {None}):
                # no kid, or only ``jwt_secret`` configured (which ignores kids)
                secret = self._secrets.get(None)
                if secret is None and len(self._secrets) == 1:
                    secret = next(iter(self._secrets.values()))
            if secret is None:
                raise AuthError(f"unknown signing key {kid!r}" if kid else "token has no kid")
            return secret
        key: PublicKey | None = None
        if self._jwks:
            entry = self._jwks.get(kid)
            if entry is None and kid is None and len(self._jwks) == 1:
                entry = next(iter(self._jwks.values()))
            if entry is not None:
                key, key_alg = entry
                if key_alg is not None and key_alg != alg:
                    raise AuthError(f"key {kid!r} is not for algorithm {alg}")
        if key is None:
            key = self._public_key
        if key is None:
            if kid:
                raise UnknownSigningKey(f"unknown signing key {kid!r}", kid)
            raise AuthError("token has no kid")
        if not key_fits(key, alg):
            raise AuthError(f"the signing key does not fit algorithm {alg}")
        return key

    # -- verification ------------------------------------------------------------------

    def verify(self, token: str, *, now: float) -> Principal:
        """Check ``token`` at time ``now`` and return its ``Principal``; raise ``AuthError``.

        ``TokenExpired`` (an ``AuthError``) when ``exp`` has passed, by more than
        the leeway.
        """
        if not isinstance(token, str) or not token:
            raise AuthError("missing token")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError(f"token longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            shown = alg if isinstance(alg, str) and len(alg) <= 16 else "?"
            raise AuthError(f"token algorithm {shown!r} is not accepted")
        key = self._key_for(alg, header)
        settings = self._settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],  # only the pinned one we chose the key for
                audience=settings.jwt_audience or None,
                issuer=settings.jwt_issuer or None,
                options={
                    # time claims are checked below against ``now``
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["sub"],
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthError("bad token signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token is from another issuer") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthError("malformed token") from None
        return self._principal(claims, now)

    def _principal(self, claims: Mapping[str, Any], now: float) -> Principal:
        leeway = self._settings.jwt_leeway
        exp = _numeric_date(claims, "exp")
        nbf = _numeric_date(claims, "nbf")
        iat = _numeric_date(claims, "iat")
        if exp is None and not self._allow_no_exp:
            raise AuthError("token has no exp claim (set jwt_allow_no_exp to accept such tokens)")
        if exp is not None and now >= exp + leeway:
            raise TokenExpired("token expired")
        if nbf is not None and now + leeway < nbf:
            raise AuthError("token not valid yet (nbf)")
        if iat is not None and now + leeway < iat:
            raise AuthError("token issued in the future (iat)")
        if iat is not None and exp is not None and iat > exp:
            raise AuthError("token expires before it was issued")
        user = claims.get("sub")
        if not isinstance(user, str) or not user or len(user) > MAX_USER_CHARS:
            raise AuthError(f"sub must be a non-empty string of at most {MAX_USER_CHARS} chars")
        name = claims.get("name", user)
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise AuthError(f"name must be a non-empty string of at most {MAX_NAME_CHARS} chars")
        rules = _parse_permissions(claims.get(self._settings.jwt_permissions_claim))
        token_id = claims.get("jti")
        if token_id is not None and (not isinstance(token_id, str) or len(token_id) > 256):
            raise AuthError("jti must be a string of at most 256 characters")
        limit = self._settings.jwt_max_token_lifetime
        if exp is not None and limit > 0 and exp - (now if iat is None else iat) > limit + leeway:
            raise AuthError(f"token lives longer than jwt_max_token_lifetime ({limit:g} s)")
        return Principal(
            user=user,
            name=name,
            permissions=rules,
            expires=exp,
            token_id=token_id,
            issued=iat,
            admin=claims.get(self._settings.jwt_admin_claim) is True,
        )

    # -- issuing -----------------------------------------------------------------------

    def issue(
        self,
        user: str,
        *,
        name: str | None = None,
        docs: Mapping[str, Permission] | None = None,
        ttl: float = 3600,
        now: float,
        admin: bool = False,
        token_id: str | None = None,
    ) -> str:
        """Mint an HS token for the CLI and the development demo.

        Sets ``aud``/``iss`` when configured so the token verifies here. Raises
        ``RuntimeError`` when no HS algorithm and secret are configured (only a
        public key: tokens must come from the identity provider).
        """
        if not self._secrets or not self._hmac_algorithms:
            raise RuntimeError(
                "cannot issue tokens: only public keys are configured; "
                "set jwt_secret and pin an HS algorithm"
            )
        if not isinstance(user, str) or not user or len(user) > MAX_USER_CHARS:
            raise ValueError(f"user must be a non-empty string of at most {MAX_USER_CHARS} chars")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        issued = now
        claims: dict[str, Any] = {
            "sub": user,
            "iat": math.floor(issued),
            "exp": math.floor(issued + ttl),
        }
        if name is not None:
            claims["name"] = name
        if admin:
            claims[self._settings.jwt_admin_claim] = True
        if token_id is not None:
            claims["jti"] = token_id
        if docs is not None:
            try:
                _parse_permissions(dict(docs))
            except AuthError as exc:
                raise ValueError(exc.message) from None
            claims[self._settings.jwt_permissions_claim] = dict(docs)
        if self._settings.jwt_audience:
            claims["aud"] = self._settings.jwt_audience
        if self._settings.jwt_issuer:
            claims["iss"] = self._settings.jwt_issuer
        kid, secret = next(iter(self._secrets.items()))
        headers = None if kid is None else {"kid": kid}
        return jwt.encode(claims, secret, algorithm=self._hmac_algorithms[0], headers=headers)


def _numeric_date(claims: Mapping[str, Any], claim: str) -> float | None:
    value = claims.get(claim)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError(f"{claim} must be a finite number")
    return float(value)


def _parse_permissions(raw: object) -> tuple[tuple[str, Permission], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise AuthError("permissions claim must be an object of pattern → 'read' | 'write'")
    if len(raw) > MAX_PERMISSION_RULES:
        raise AuthError(f"permissions claim has more than {MAX_PERMISSION_RULES} patterns")
    rules: list[tuple[str, Permission]] = []
    for pattern, access in raw.items():
        if not isinstance(pattern, str) or not pattern:
            raise AuthError("permission patterns must be non-empty strings")
        if access == "read" or access == "write":
            rules.append((pattern, access))
        else:
            raise AuthError(f"permission for {pattern!r} must be 'read' or 'write'")
    return tuple(rules)


def extract_token(
    query_token: str | None,
    authorization_header: str | None,
    subprotocols: Sequence[str] | None,
) -> tuple[str | None, str | None]:
    """Find the token a client sent and the subprotocol to accept: ``(token, subprotocol)``.

    Looks, in order, at ``Authorization: Bearer <JWT>``, a ``bearer.<JWT>``
    WebSocket subprotocol (browsers cannot set headers on a WebSocket, so the
    JS client offers ``["tandem.v1", "bearer.<JWT>"]``), then the ``token`` query
    parameter. The subprotocol to accept is ``"tandem.v1"`` whenever the client
    offered it, and None otherwise; the ``bearer.`` entry is never echoed back.
    Empty values count as absent. Verification is ``Authenticator.verify``'s job.
    """
    offered = list(subprotocols or ())
    accept = SUBPROTOCOL if SUBPROTOCOL in offered else None
    if authorization_header:
        scheme, _, credentials = authorization_header.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            return credentials, accept
    for protocol in offered:
        if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX) and len(protocol) > len(
            BEARER_SUBPROTOCOL_PREFIX
        ):
            return protocol[len(BEARER_SUBPROTOCOL_PREFIX) :], accept
    if query_token:
        return query_token, accept
    return None, accept
