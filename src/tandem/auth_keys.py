"""Reading the verification keys: the I/O edge of ``tandem.auth``.

Owns every file ``auth`` needs: the PEM public key, the JWKS file and the
generated development secret (``data_dir/dev-secret``). It reads them once and
hands ``auth.Authenticator`` a ``KeyRing``, so ``auth`` itself stays pure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path

from tandem.auth import Authenticator, KeyRing, parse_jwks, parse_pem
from tandem.settings import Settings

__all__ = ["DEV_SECRET_FILE", "load_authenticator", "load_keys"]

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
        if settings.jwt_secret:
            secrets_by_kid[None] = settings.jwt_secret.encode()
        elif data_dir is not None:
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
