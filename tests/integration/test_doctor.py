"""``tandem doctor`` on a healthy deployment (SQLite; PostgreSQL + Redis) and a broken one."""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import POSTGRES_URL, REDIS_URL, drop_schema, free_port, require_services

pytestmark = pytest.mark.integration

PRODUCTION = {
    "TANDEM_JWT_SECRET": secrets.token_hex(32),
    "TANDEM_JWT_AUDIENCE": "tandem",
    "TANDEM_JWT_ISSUER": "https://id.example.com",
    "TANDEM_ALLOWED_ORIGINS": "https://app.example.com",
}


def doctor(*args: str | Path, **env: str) -> tuple[int, list[str]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    done = subprocess.run(
        [sys.executable, "-m", "tandem", "doctor", *map(str, args)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout.splitlines()


def migrate(*args: str | Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tandem", "migrate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def pg_schema() -> Iterator[str]:
    require_services("postgres", "redis")
    tag = f"doc{secrets.token_hex(4)}"
    yield f"{POSTGRES_URL}?schema=t_{tag}"
    drop_schema(tag)


def test_a_healthy_sqlite_deployment_passes(tmp_path: Path) -> None:
    migrate("--data", tmp_path)
    status, lines = doctor("--data", tmp_path, "--port", str(free_port()), **PRODUCTION)
    assert status == 0, "\n".join(lines)
    assert not [line for line in lines if line.startswith("FAIL")]
    for expected in (
        "ok    settings: jwt_secret is 64 bytes",
        "ok    limits: every limit is on",
        "ok    storage: sqlite reachable",
        "ok    storage: migrations current",
        "ok    storage: write and read-back (__tandem_doctor__)",
        "ok    demo: assets present",
        "ok    port: 127.0.0.1:",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    assert lines[-1].startswith("doctor: 0 failed, 0 warnings")
    # run twice: the read-back document is replaced, never grows
    assert doctor("--data", tmp_path, "--port", str(free_port()), **PRODUCTION)[0] == 0
    with sqlite3.connect(tmp_path / "tandem.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM snapshots").fetchone() == (1,)


def test_a_healthy_postgres_and_redis_deployment_passes(pg_schema: str) -> None:
    migrate("--database", pg_schema)
    status, lines = doctor(
        "--database", pg_schema, "--redis", REDIS_URL, "--port", str(free_port()), **PRODUCTION
    )
    assert status == 0, "\n".join(lines)
    for expected in (
        "ok    storage: postgres reachable",
        "ok    storage: migrations current",
        "ok    storage: write and read-back",
        "ok    clock: this node vs PostgreSQL:",
        "ok    redis: PING, write and read-back",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)


def test_a_broken_deployment_fails_with_a_line_per_problem(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status, lines = doctor(
            "--database",
            "postgresql://postgres@127.0.0.1:1/test",
            "--redis",
            "redis://127.0.0.1:1/0",
            "--port",
            str(port),
            TANDEM_JWT_SECRET="secret",
            TANDEM_JWT_ALLOW_NO_EXP="true",
            TANDEM_MESSAGES_PER_SECOND="0",
        )
    assert status == 1
    failures = [line for line in lines if line.startswith("FAIL")]
    for expected in (
        "FAIL  settings: jwt_secret is 6 bytes",
        "FAIL  storage: postgres unreachable",
        "FAIL  clock: cannot read PostgreSQL's clock",
        "FAIL  redis: unreachable",
        f"FAIL  port: 127.0.0.1:{port} cannot be bound",
    ):
        assert any(line.startswith(expected) for line in failures), (expected, lines)
    assert any("jwt_allow_no_exp" in line for line in lines if line.startswith("warn"))
    assert any("messages_per_second" in line for line in lines if line.startswith("warn"))
    assert lines[-1].startswith("doctor: 5 failed")


def test_pending_migrations_fail_and_nothing_is_written(tmp_path: Path) -> None:
    migrate("--data", tmp_path)
    with sqlite3.connect(tmp_path / "tandem.db") as conn:
        conn.execute(
            "DELETE FROM schema_migrations"
            " WHERE version = (SELECT MAX(version) FROM schema_migrations)"
        )
    status, lines = doctor("--data", tmp_path, "--port", str(free_port()), **PRODUCTION)
    assert status == 1
    assert any(line.startswith("FAIL  storage: migrations pending:") for line in lines), lines
    with sqlite3.connect(tmp_path / "tandem.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM snapshots").fetchone() == (0,)


def test_invalid_settings_are_refused_before_any_check(tmp_path: Path) -> None:
    status, lines = doctor("--data", tmp_path, TANDEM_MAX_FRAME_BYTES="0")
    assert status == 2 and lines == []
