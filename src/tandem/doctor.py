"""``tandem doctor``: check a deployment before (or instead of) finding out in production.

Each check prints one line — ``ok``, ``warn`` or ``FAIL`` — and the command
exits 1 if any check failed (warnings alone exit 0). What is checked:

* **settings**: the signing key's strength (HS secrets of at least 32 bytes),
  token settings (``exp`` required, leeway, audience/issuer), development mode,
  allowed origins, and limits switched off (``0`` = no limit);
* **storage**: reachable, migrations current (read from ``schema_migrations``
  without applying anything), and a write read back: a version-0 snapshot of
  the document ``__tandem_doctor__``, replaced on every run;
* **Redis** (when configured): PING, and a key written, read back and deleted;
* **clock skew** between this node and PostgreSQL (token expiry is checked
  against this node's clock): warn above 0.25 s, fail above 1 s;
* **demo assets** (``tandem.assets``) present;
* **port** ``host:port`` free to bind (run it before starting the server).

Settings that cannot work at all are refused before any check, as
``tandem serve`` refuses them (``tandem: invalid settings: …``, exit 2).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

from tandem.assets import find_assets
from tandem.backup import sqlite_path
from tandem.ot.delta import Delta
from tandem.settings import NO_LIMIT_AT_ZERO, Settings
from tandem.storage import open_store
from tandem.storage.base import Snapshot
from tandem.storage.schema import load_migrations, pending

__all__ = ["Check", "diagnose", "run_doctor"]

#: The document the storage check writes (a version-0 snapshot, replaced each run).
DOCTOR_DOC = "__tandem_doctor__"
MIN_SECRET_BYTES = 32
SKEW_WARN, SKEW_FAIL = 0.25, 1.0

Status = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Check:
    status: Status
    area: str
    message: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.area}: {self.message}"


# -- settings -------------------------------------------------------------------------


def check_settings(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    hs = [("jwt_secret", settings.jwt_secret)] if settings.jwt_secret else []
    hs += [
        (f"jwt_secrets[{e.partition(':')[0]}]", e.partition(":")[2]) for e in settings.jwt_secrets
    ]
    keyed = settings.jwt_public_key_file or settings.jwt_jwks_file or settings.jwt_jwks_url
    if not hs and not keyed:
        checks.append(
            Check(
                "warn",
                "settings",
                "no signing key: development mode, with a "
                "generated secret (set TANDEM_JWT_SECRET or a public key for production)",
            )
        )
    for name, secret in hs:
        size = len(secret.encode())
        if size < MIN_SECRET_BYTES:
            checks.append(
                Check(
                    "FAIL",
                    "settings",
                    f"{name} is {size} bytes; use at least "
                    f"{MIN_SECRET_BYTES} random bytes (e.g. openssl rand -hex 32)",
                )
            )
        else:
            checks.append(Check("ok", "settings", f"{name} is {size} bytes"))
    if keyed:
        checks.append(Check("ok", "settings", "tokens verified with a public key / JWKS"))
    if settings.dev_mode and (hs or keyed):
        checks.append(
            Check(
                "warn",
                "settings",
                "dev_mode is on: the demo page hands out "
                "tokens to anyone (turn it off in production)",
            )
        )
    if settings.jwt_allow_no_exp:
        checks.append(
            Check("warn", "settings", "jwt_allow_no_exp: tokens without exp never expire")
        )
    if settings.jwt_leeway > 60:
        checks.append(
            Check(
                "warn",
                "settings",
                f"jwt_leeway is {settings.jwt_leeway:g} s; expired tokens stay valid that long",
            )
        )
    if (hs or keyed) and not (settings.jwt_audience and settings.jwt_issuer):
        checks.append(
            Check(
                "warn",
                "settings",
                "jwt_audience / jwt_issuer not both set: "
                "tokens minted for other services are accepted",
            )
        )
    if (hs or keyed) and not settings.allowed_origins:
        checks.append(
            Check(
                "warn",
                "settings",
                "allowed_origins is empty: any web page may open WebSockets with a user's token",
            )
        )
    # A limit at 0 is "no limit"; warn where that is not the default (max_version_lag is).
    defaults = {f.name: f.default for f in fields(Settings)}
    unlimited = sorted(
        name
        for name in NO_LIMIT_AT_ZERO
        if getattr(settings, name) == 0 and defaults.get(name) != 0
    )
    if unlimited:
        checks.append(Check("warn", "limits", "no limit (0): " + ", ".join(unlimited)))
    else:
        checks.append(Check("ok", "limits", "every limit is on"))
    return checks


# -- storage, redis, clock ----------------------------------------------------------------


async def check_storage(settings: Settings) -> list[Check]:
    url, data = settings.database_url, settings.data_dir
    kind: Literal["sqlite", "postgres"] = (
        "postgres" if url.startswith(("postgresql://", "postgres://")) else "sqlite"
    )
    if url.startswith("memory:"):
        return [Check("warn", "storage", "memory:// keeps nothing across a restart")]
    try:
        applied = await _applied_migrations(settings, kind)
    except Exception as exc:  # noqa: BLE001 - every failure is the finding
        return [Check("FAIL", "storage", f"{kind} unreachable: {_reason(exc)}")]
    checks = [Check("ok", "storage", f"{kind} reachable")]
    todo = pending(load_migrations(kind), applied or ())
    if applied is None:
        checks.append(
            Check(
                "warn", "storage", "no schema yet: created by tandem migrate or on the first start"
            )
        )
    elif todo:
        names = ", ".join(m.name for m in todo)
        checks.append(Check("FAIL", "storage", f"migrations pending: {names} (run tandem migrate)"))
    else:
        checks.append(Check("ok", "storage", f"migrations current ({len(applied)} applied)"))
    if applied is None or todo:
        return checks
    store = open_store(url, data)
    try:
        await store.open()
        marker = f"doctor {secrets.token_hex(8)}\n"
        await store.save_snapshot(Snapshot(DOCTOR_DOC, 0, Delta().insert(marker)))
        loaded = await store.load(DOCTOR_DOC)
        read = loaded.snapshot.content if loaded.snapshot else None
        if read != Delta().insert(marker):
            checks.append(Check("FAIL", "storage", f"wrote a snapshot, read back {read}"))
        else:
            checks.append(Check("ok", "storage", f"write and read-back ({DOCTOR_DOC})"))
    except Exception as exc:  # noqa: BLE001
        checks.append(Check("FAIL", "storage", f"write and read-back failed: {_reason(exc)}"))
    finally:
        await store.close()
    return checks


async def _applied_migrations(settings: Settings, kind: str) -> set[int] | None:
    """Versions in ``schema_migrations`` (None: no schema yet), changing nothing."""
    if kind == "sqlite":
        path = sqlite_path(settings.database_url, settings.data_dir)
        assert path is not None
        if not path.exists():
            return None
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name='schema_migrations'"
            ).fetchone():
                return None
            return {int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    conn = await _pg_connect(settings)
    try:
        table = await conn.fetchval("SELECT to_regclass('schema_migrations')")
        if table is None:
            return None
        return {
            int(r["version"]) for r in await conn.fetch("SELECT version FROM schema_migrations")
        }
    finally:
        await conn.close()


async def _pg_connect(settings: Settings) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    from tandem.storage import _split_schema

    dsn, schema = _split_schema(settings.database_url)
    conn = await asyncpg.connect(dsn, timeout=5)
    if schema is not None:
        await conn.execute(f'SET search_path TO "{schema}"')
    return conn


async def check_clock(settings: Settings) -> list[Check]:
    if not settings.database_url.startswith(("postgresql://", "postgres://")):
        return []
    try:
        conn = await _pg_connect(settings)
        try:
            before = time.time()
            server = float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
            after = time.time()
        finally:
            await conn.close()
    except Exception as exc:  # noqa: BLE001
        return [Check("FAIL", "clock", f"cannot read PostgreSQL's clock: {_reason(exc)}")]
    skew = server - (before + after) / 2
    status: Status = "FAIL" if abs(skew) > SKEW_FAIL else "warn" if abs(skew) > SKEW_WARN else "ok"
    return [
        Check(
            status,
            "clock",
            f"this node vs PostgreSQL: {skew * 1000:+.0f} ms (± {(after - before) * 500:.0f} ms)",
        )
    ]


async def check_redis(settings: Settings) -> list[Check]:
    if not settings.redis_url:
        return [Check("ok", "redis", "not configured (one node, in-process bus)")]
    import redis.asyncio as redis

    client = redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
        key = f"tandem:doctor:{secrets.token_hex(6)}"
        await client.set(key, "1", ex=60)
        value = await client.get(key)
        await client.delete(key)
        if value != b"1":
            return [Check("FAIL", "redis", f"wrote a key, read back {value!r}")]
        return [Check("ok", "redis", "PING, write and read-back")]
    except Exception as exc:  # noqa: BLE001
        return [Check("FAIL", "redis", f"unreachable: {_reason(exc)}")]
    finally:
        await client.aclose()


# -- assets, port -----------------------------------------------------------------------


def check_assets(settings: Settings) -> list[Check]:
    assets = find_assets()
    missing = assets.missing()
    if not missing:
        return [Check("ok", "demo", f"assets present ({assets.layout})")]
    status: Status = "FAIL" if settings.dev_mode else "warn"
    return [
        Check(
            status,
            "demo",
            f"{len(missing)} asset(s) missing, e.g. {missing[0]}: the "
            "demo page would answer 404 (npm install in client/, or a wheel built with them)",
        )
    ]


def check_port(settings: Settings) -> list[Check]:
    with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as sock:
        try:
            sock.bind((settings.host, settings.port))
        except OSError as exc:
            return [
                Check(
                    "FAIL",
                    "port",
                    f"{settings.host}:{settings.port} cannot be bound: "
                    f"{exc.strerror or exc} (another server running?)",
                )
            ]
    return [Check("ok", "port", f"{settings.host}:{settings.port} is free")]


# -- running ------------------------------------------------------------------------------


async def diagnose(settings: Settings) -> list[Check]:
    """Every check, in the order printed."""
    checks = check_settings(settings)
    async_checks: list[Callable[[Settings], Awaitable[list[Check]]]] = [
        check_storage,
        check_clock,
        check_redis,
    ]
    for check in async_checks:
        checks += await check(settings)
    return checks + check_assets(settings) + check_port(settings)


def run_doctor(settings: Settings) -> int:
    """``tandem doctor``: print every check; 1 if any failed, else 0."""
    checks = asyncio.run(diagnose(settings))
    for check in checks:
        print(check.line())
    failed = sum(check.status == "FAIL" for check in checks)
    warned = sum(check.status == "warn" for check in checks)
    print(f"doctor: {failed} failed, {warned} warnings, {len(checks) - failed - warned} ok")
    return 1 if failed else 0


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
