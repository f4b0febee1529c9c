"""The servers ``python -m bench`` measures, each started fresh on free 127.0.0.1 ports.

=============== ================================================================
name            what runs
=============== ================================================================
``tandem``        ``tandem serve``, its default durable SQLite store
``tandem-memory`` ``tandem serve`` on ``memory://`` (nothing persists)
``tandem-pg``     ``tandem serve`` on PostgreSQL (its own schema per run)
``tandem-pg3``    three ``tandem serve`` on one PostgreSQL schema and Redis
``relay``         ``peers/relay.mjs``: forwards each frame (the floor)
``sharedb``       ``peers/sharedb.mjs``: ShareDB 7, in-memory db and pub/sub
``sharedb-pg``    the same on ``sharedb-postgres`` (its own schema per run)
``sharedb-pg3``   three of those on one schema, over ``sharedb-redis-pubsub``
``hocuspocus``    ``peers/hocuspocus.mjs``
``y-websocket``   ``peers/y-websocket.mjs``
``pycrdt``        ``peers/pycrdt_server.py`` under uvicorn
=============== ================================================================

PostgreSQL and Redis come from ``TANDEM_TEST_POSTGRES_URL`` and
``TANDEM_TEST_REDIS_URL`` (default 127.0.0.1:5432 db ``test`` and
127.0.0.1:6379, as the tests use); each run gets a throwaway schema and Redis
prefix, dropped when it ends. A several-node server's clients are spread over
its nodes round-robin by the generator; its CPU and RSS are the nodes' sums.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
POSTGRES = os.environ.get("TANDEM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("TANDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "bench-secret-0123456789abcdef0123456789"

SERVERS = [
    "tandem",
    "tandem-memory",
    "tandem-pg",
    "tandem-pg3",
    "relay",
    "sharedb",
    "sharedb-pg",
    "sharedb-pg3",
    "hocuspocus",
    "y-websocket",
    "pycrdt",
]
#: The npm package each Node peer needs (under bench/peers/node_modules).
NODE_PEERS = {
    "relay": "ws",
    "sharedb": "sharedb",
    "sharedb-pg": "sharedb-postgres",
    "sharedb-pg3": "sharedb-redis-pubsub",
    "hocuspocus": "@hocuspocus/server",
    "y-websocket": "@y/websocket-server",
}
#: Servers that keep what they acknowledge (on disk, committed before the ack).
DURABLE = {"tandem", "tandem-pg", "tandem-pg3", "sharedb-pg", "sharedb-pg3"}
#: The Tandem each peer is compared with: durable with durable, in memory with in memory.
COUNTERPART = {
    "sharedb-pg": "tandem-pg",
    "sharedb-pg3": "tandem-pg3",
    **{name: "tandem-memory" for name in ("relay", "sharedb", "hocuspocus", "y-websocket")},
    "pycrdt": "tandem-memory",
}


def nodes(name: str) -> int:
    return 3 if name.endswith("3") else 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def installed(name: str) -> bool:
    if name.startswith("tandem"):
        return True
    if name == "pycrdt":
        try:
            return importlib.util.find_spec("pycrdt.websocket") is not None
        except ModuleNotFoundError:
            return False
    return (PEERS / "node_modules" / NODE_PEERS[name] / "package.json").is_file()


def tandem_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "TANDEM_JWT_SECRET": SECRET,
        "TANDEM_MESSAGE_BURST": "1000000",
        "TANDEM_MAX_CONNECTIONS_PER_USER": "0",
        "TANDEM_MAX_CONNECTIONS_PER_IP": "0",
        **(extra or {}),
    }


@dataclass
class Server:
    """One server under test: one process per node, on loopback ports."""

    name: str
    processes: list[subprocess.Popen[bytes]]
    ports: list[int]
    token: str = ""

    @property
    def url(self) -> str:
        return ",".join(f"ws://127.0.0.1:{port}" for port in self.ports)

    @property
    def pids(self) -> str:
        return ",".join(str(p.pid) for p in self.processes)

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.processes[0]


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def postgres(statements: list[str]) -> None:
    import asyncpg  # type: ignore[import-untyped]

    async def execute() -> None:
        conn = await asyncpg.connect(POSTGRES)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(execute())


#: sharedb-postgres's two tables (as its structure.sql leaves them at 5.0).
SHAREDB_TABLES = [
    """CREATE TABLE {schema}.ops (
         collection varchar(255) NOT NULL, doc_id varchar(255) NOT NULL,
         version integer NOT NULL, operation jsonb NOT NULL,
         PRIMARY KEY (collection, doc_id, version))""",
    """CREATE TABLE {schema}.snapshots (
         collection varchar(255) NOT NULL, doc_id varchar(255) NOT NULL,
         doc_type varchar(255), version integer NOT NULL, data jsonb, metadata jsonb,
         PRIMARY KEY (collection, doc_id))""",
]


@contextlib.contextmanager
def schema(make_tables: bool) -> Iterator[str]:
    """A throwaway PostgreSQL schema, dropped afterwards (Tandem makes its own tables)."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    if make_tables:
        postgres([f"CREATE SCHEMA {name}"] + [t.format(schema=name) for t in SHAREDB_TABLES])
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            postgres([f"DROP SCHEMA IF EXISTS {name} CASCADE"])


def launch(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def token(env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "tandem", "token", "--user", "bench", "--ttl", "7200"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@contextlib.contextmanager
def start(name: str, docs: int) -> Iterator[Server]:
    """Start ``name`` with ``docs`` documents ready (where a server needs them made)."""
    with contextlib.ExitStack() as stack:
        server = Server(name, [], [])

        def node(cmd: list[str], env: dict[str, str] | None, port: int) -> None:
            process = launch(cmd, env)
            stack.callback(stop, process)
            server.processes.append(process)
            server.ports.append(port)
            # One at a time: a ShareDB node creates the documents the next one finds.
            wait_listening(port, process)

        tag = uuid.uuid4().hex[:8]
        if name.startswith("tandem"):
            extra: dict[str, str] = {}
            if name == "tandem-memory":
                extra["TANDEM_DATABASE_URL"] = "memory://"
            elif name.startswith("tandem-pg"):
                pg_schema = stack.enter_context(schema(make_tables=False))
                extra["TANDEM_DATABASE_URL"] = f"{POSTGRES}?schema={pg_schema}"
                if nodes(name) > 1:
                    extra["TANDEM_REDIS_URL"] = f"{REDIS}?prefix=bench{tag}:"
            env = tandem_env(extra)
            for i in range(nodes(name)):
                workdir = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
                stack.callback(shutil.rmtree, workdir, ignore_errors=True)
                port = free_port()
                cmd = [sys.executable, "-m", "tandem", "serve", "--port", str(port)]
                cmd += ["--data", str(workdir), "--log-level", "warning"]
                if nodes(name) > 1:
                    cmd += ["--node-id", f"n{i}"]
                node(cmd, env, port)
            server.token = token(env)
        elif name == "pycrdt":
            port = free_port()
            node([sys.executable, str(PEERS / "pycrdt_server.py"), str(port)], None, port)
        elif name.startswith("sharedb"):
            env = dict(os.environ)
            if name != "sharedb":
                env["SHAREDB_PG_URL"] = POSTGRES
                env["SHAREDB_PG_SCHEMA"] = stack.enter_context(schema(make_tables=True))
            if nodes(name) > 1:
                env["SHAREDB_REDIS_URL"] = REDIS
                env["SHAREDB_REDIS_PREFIX"] = f"bench{tag}"
            for _ in range(nodes(name)):
                port = free_port()
                node(["node", str(PEERS / "sharedb.mjs"), str(port), str(docs)], env, port)
        else:
            port = free_port()
            node(["node", str(PEERS / f"{name}.mjs"), str(port), str(docs)], None, port)
        yield server
