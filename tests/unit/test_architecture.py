"""The import arrows point inward: the pure core never imports I/O.

Walks the AST of every module of the pure core (``tandem.ot``, ``tandem.merge``,
``protocol``, ``sequencer``, ``presence``, ``limits``, ``auth``,
``client.state``) and fails if one of them imports asyncio, FastAPI, Starlette,
uvicorn, storage, bus, the server or the network.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tandem

SRC = Path(tandem.__file__).parent
PURE = [
    *sorted((SRC / "ot").glob("*.py")),
    *sorted((SRC / "merge").glob("*.py")),
    SRC / "protocol.py",
    SRC / "sequencer.py",
    SRC / "presence.py",
    SRC / "limits.py",
    SRC / "auth.py",
    SRC / "webhooks" / "rules.py",
    SRC / "client" / "state.py",
]
FORBIDDEN = (
    "asyncio",
    "fastapi",
    "starlette",
    "uvicorn",
    "websockets",
    "httpx",
    "socket",
    "asyncpg",
    "aiosqlite",
    "sqlite3",
    "redis",
    "tandem.storage",
    "tandem.bus",
    "tandem.server",
    "tandem.documents",
)


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", [p for p in PURE if p.exists()], ids=lambda p: p.name)
def test_pure_modules_import_no_io(path: Path) -> None:
    bad = {
        name
        for name in imports(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_storage_and_bus_do_not_import_the_server() -> None:
    for folder in ("storage", "bus"):
        for path in (SRC / folder).glob("*.py"):
            bad = {n for n in imports(path) if n.startswith(("tandem.server", "tandem.documents"))}
            assert not bad, f"{folder}/{path.name} imports {sorted(bad)}"


def test_public_api_is_complete() -> None:
    for name in tandem.__all__:
        assert hasattr(tandem, name), name
    import tandem.ot as ot

    for name in ot.__all__:
        assert hasattr(ot, name), name
