"""Reading and fetching the verification keys: the I/O edge of ``tandem.auth``.

Owns every file ``auth`` needs: the PEM public key, the JWKS file and the
generated development secret (``data_dir/dev-secret``). It reads them once and
hands ``auth.Authenticator`` a ``KeyRing``, so ``auth`` itself stays pure.

``Identity`` is what the endpoints call: it verifies a token at the wall
clock's time and, when ``jwt_jwks_url`` is set, fetches the JWKS from the
identity provider (httpx), keeps it for ``jwt_jwks_max_age`` seconds and
fetches it again when a token names a ``kid`` it does not know (a key rotation),
at most once per ``jwt_jwks_refetch_interval`` (``signing_keys.JwksRefresh`` decides).
A failed fetch keeps the keys it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from pathlib import Path

import httpx

from tandem.auth import Authenticator, KeyRing, Principal
from tandem.errors import UnknownSigningKey
from tandem.settings import Settings
from tandem.signing_keys import JwksEntry, JwksRefresh, parse_jwks, parse_pem

__all__ = ["DEV_SECRET_FILE", "Identity", "load_authenticator", "load_keys"]

logger = logging.getLogger(__name__)

DEV_SECRET_FILE = "dev-secret"
_HMAC_PREFIX = "HS"


def load_authenticator(settings: Settings, *, data_dir: Path | str | None = None) -> Authenticator:
    """An ``Authenticator`` with the keys ``settings`` names (see ``load_keys``)."""
    return Authenticator(settings, load_keys(settings, data_dir=data_dir))


def load_keys(settings: Settings, *, data_dir: Path | str | None = None) -> KeyRing:
    """Read the keys ``settings`` names.

    The HS secret is ``jwt_secret``; when it is empty, an HS algorithm is pinned
    and ``data_dir`` is given, a random secret is read from or created in
    ``data_dir/dev-secret`` (mode 0600): the zero-configuration development mode.
    Raises ``ValueError`` for a file that cannot be read or parsed.
    """
    secrets_by_kid: dict[str | None, bytes] = {}
    if any(a.startswith(_HMAC_PREFIX) for a in settings.jwt_algorithms):
        for entry in settings.jwt_secrets:  # first: the first one signs issued tokens
            kid, sep, secret = entry.partition(":")
            if not sep or not kid or not secret or kid in secrets_by_kid:
                raise ValueError(
                    "each jwt_secrets entry must be 'kid:secret' with a distinct, non-empty kid"
                )
            secrets_by_kid[kid] = secret.encode()
        if settings.jwt_secret:
            secrets_by_kid[None] = settings.jwt_secret.encode()
        elif data_dir is not None and not secrets_by_kid:
            secrets_by_kid[None] = _dev_secret(Path(data_dir))
    public_key = None
    if settings.jwt_public_key_file:
        try:
            data = Path(settings.jwt_public_key_file).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read jwt_public_key_file: {exc.strerror}") from None
        public_key = parse_pem(data)
    jwks = {}
    if settings.jwt_jwks_file:
        try:
            text = Path(settings.jwt_jwks_file).read_text()
        except OSError as exc:
            raise ValueError(f"cannot read jwt_jwks_file: {exc.strerror}") from None
        try:
            document = json.loads(text)
        except ValueError:
            raise ValueError("jwt_jwks_file is not JSON") from None
        jwks = parse_jwks(document)
    return KeyRing(secrets=secrets_by_kid, public_key=public_key, jwks=jwks)


#: Longest JWKS document accepted from ``jwt_jwks_url``, in bytes.
MAX_JWKS_BYTES = 1 << 20
JWKS_FETCH_TIMEOUT = 5.0


class Identity:
    """Verifies tokens for the endpoints, fetching a remote JWKS when one is configured.

    ``start()`` makes the first fetch (a failure is logged; verification then
    retries it), ``close()`` ends the HTTP client.
    """

    def __init__(self, settings: Settings, *, data_dir: Path | str | None = None) -> None:
        self._settings = settings
        self._keys = load_keys(settings, data_dir=data_dir)
        self.authenticator = Authenticator(settings, self._keys)
        self._url = settings.jwt_jwks_url
        self._schedule = JwksRefresh(settings.jwt_jwks_max_age, settings.jwt_jwks_refetch_interval)
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        #: Fetches that succeeded and failed, for metrics and tests.
        self.fetches = 0
        self.fetch_failures = 0

    async def start(self) -> None:
        if self._url:
            self._client = httpx.AsyncClient(timeout=JWKS_FETCH_TIMEOUT, follow_redirects=False)
            await self.refresh()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def verify(self, token: str) -> Principal:
        """The token's ``Principal``, or ``AuthError``; re-fetches the JWKS on an unknown kid."""
        if self._url and self._schedule.due(time.time()):
            await self.refresh()
        try:
            return self.authenticator.verify(token, now=time.time())
        except UnknownSigningKey:
            if not self._url or not await self.refresh(unknown_kid=True):
                raise
        return self.authenticator.verify(token, now=time.time())

    async def refresh(self, *, unknown_kid: bool = False) -> bool:
        """Fetch the JWKS if the schedule allows; True when keys newer than this call are in.

        The fetch runs in a task of its own: the fast ``/collab`` path starts
        admission outside any task, and httpx needs one.
        """
        return await asyncio.get_running_loop().create_task(self._refresh(unknown_kid, time.time()))

    async def _refresh(self, unknown_kid: bool, asked: float) -> bool:
        async with self._lock:  # one fetch at a time; waiters see its result
            now = time.time()
            if not self._schedule.due(now, unknown_kid=unknown_kid):
                fetched = self._schedule.fetched_at
                return fetched is not None and fetched >= asked
            self._schedule.started(now)
            try:
                fetched_keys = await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                self.fetch_failures += 1
                logger.warning("cannot fetch jwt_jwks_url: %s", _describe(exc))
                return False
            self.authenticator.replace_jwks({**fetched_keys, **self._keys.jwks})
            self._schedule.succeeded(time.time())
            self.fetches += 1
            return True

    async def _fetch(self) -> dict[str | None, JwksEntry]:
        if self._client is None:
            raise ValueError("Identity.start() was not called")
        async with self._client.stream("GET", self._url) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        try:
            document = json.loads(body)
        except ValueError:
            raise ValueError("the JWKS is not JSON") from None
        return parse_jwks(document, source="jwt_jwks_url")


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return str(exc) or type(exc).__name__


def _dev_secret(data_dir: Path) -> bytes:
    """Read ``data_dir/dev-secret``, creating it (mode 0600) with a random secret if absent.

    The file appears atomically (written aside, then hard-linked into place), so
    two processes starting together agree on one secret.
    """
    path = data_dir / DEV_SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        temp = data_dir / f".{DEV_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        logger.warning("generated a development JWT secret in %s (not for production)", path)
    if path.stat().st_mode & 0o077:
        logger.warning("%s is readable by other users; chmod 600 it", path)
    secret = path.read_text().strip().encode()
    if not secret:
        raise ValueError(f"{path} is empty; delete it to generate a new development secret")
    return secret
